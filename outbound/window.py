"""WhatsApp's 24-hour customer service window: when a free-form reply is allowed, and what goes otherwise."""

from __future__ import annotations

from datetime import datetime, timedelta

from outbound.models import Contact

WINDOW = timedelta(hours=24)


def is_window_open(*, last_inbound_at: datetime | None, now: datetime, margin_seconds: int = 0) -> bool:
    """Whether a free-form reply is still allowed: less than 24 h (minus a safety margin) since the customer wrote."""
    if last_inbound_at is None:
        return False
    return now - last_inbound_at < WINDOW - timedelta(seconds=margin_seconds)


def template_parameters(names: list[str], *, contact: Contact) -> list[str]:
    """Fill the template's body placeholders, in order, from what we know of the contact."""
    values = {"contact_name": contact.profile_name or "there"}
    return [values.get(name, name) for name in names]
