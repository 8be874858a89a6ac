"""Rows for admin and operations tests: a contact, its inbound messages, and jobs in any status.

Jobs are created directly in the status a test needs (set-up, not a transition under test).
"""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from outbound.models import OutboundJob
from webhooks.models import Contact, InboundMessage

_seq = itertools.count(1)


def make_contact(
    *, wa_id: str = "16505551234", name: str = "Sheena Nelson", last_inbound_at: datetime | None = None
) -> Contact:
    return Contact.objects.create(
        wa_id=wa_id,
        profile_name=name,
        last_inbound_at=last_inbound_at or timezone.now() - timedelta(minutes=5),
    )


def make_message(
    *,
    contact: Contact,
    text: str = "Does it come in another color?",
    at: datetime | None = None,
    **fields: Any,
) -> InboundMessage:
    n = next(_seq)
    fields.setdefault("wamid", f"wamid.IN{n}")
    fields.setdefault("type", "text")
    fields.setdefault("needs_reply", True)
    return InboundMessage.objects.create(
        contact=contact,
        text=text,
        timestamp=at or timezone.now() - timedelta(minutes=5),
        raw={"id": fields["wamid"], "type": fields["type"], "text": {"body": text}},
        **fields,
    )


def make_job(
    *,
    contact: Contact | None = None,
    status: str = OutboundJob.Status.PENDING,
    text: str = "Does it come in another color?",
    at: datetime | None = None,
    **fields: Any,
) -> OutboundJob:
    contact = contact or make_contact()
    message = make_message(contact=contact, text=text, at=at)
    return OutboundJob.objects.create(contact=contact, inbound_message=message, status=status, **fields)
