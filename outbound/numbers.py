"""The business numbers this service serves (WHATSAPP_PHONE_NUMBER_ID): every number of the business account,
served with the one system-user token. A conversation is (business number, customer); its replies leave from
the number the customer wrote to."""

from __future__ import annotations

from collections.abc import Iterable

from django.conf import settings

# The business number of Meta's own webhook examples: `simulate_inbound`, the envelopes of `webhooks.envelopes`
# and a first run without credentials (DEBUG) use it when no number is configured.
EXAMPLE_PHONE_NUMBER_ID = "106540352242922"
# Column size of a business number id (Meta's ids are 15-16 digits today).
PHONE_NUMBER_ID_MAX_LENGTH = 64


def split_phone_number_ids(setting: str | Iterable[str]) -> tuple[str, ...]:
    """The business numbers a setting names: one id or a comma-separated list (or a list of either), in order."""
    parts = (
        setting.split(",") if isinstance(setting, str) else [p for item in setting for p in item.split(",")]
    )
    return tuple(dict.fromkeys(part.strip() for part in parts if part.strip()))


def served_phone_number_ids() -> tuple[str, ...]:
    """The business numbers whose messages this service stores and answers (WHATSAPP_PHONE_NUMBER_ID), in order.

    With DEBUG on and none set (the first run, no Meta credentials), the example number `simulate_inbound`
    sends to stands in.
    """
    served = split_phone_number_ids(settings.WHATSAPP_PHONE_NUMBER_ID)
    if not served and settings.DEBUG:
        return (EXAMPLE_PHONE_NUMBER_ID,)
    return served


def default_phone_number_id() -> str:
    """The first served number: what rows from before several numbers belong to, and `simulate_inbound`'s
    default. Empty when none is configured (DEBUG off: the system check reports it)."""
    served = served_phone_number_ids()
    return served[0] if served else ""
