"""The words the webhook and the domain share, each defined once (pure: no Django).

Message types, delivery statuses, the column sizes the parser must respect, and Meta's window-closed code.
The models build their choices from these; the payload parser checks against them.
"""

from __future__ import annotations

import enum


class MessageType(enum.StrEnum):
    """The `type` of an inbound message in Meta's webhook payload; UNKNOWN for types Meta adds later."""

    TEXT = "text"
    IMAGE = "image"
    AUDIO = "audio"
    VIDEO = "video"
    DOCUMENT = "document"
    STICKER = "sticker"
    INTERACTIVE = "interactive"
    BUTTON = "button"
    REACTION = "reaction"
    LOCATION = "location"
    CONTACTS = "contacts"
    ORDER = "order"
    SYSTEM = "system"
    REVOKE = "revoke"
    UNSUPPORTED = "unsupported"
    UNKNOWN = "unknown"


# Type → does it deserve an answer? Reactions, deletions and system notices do not; media does (the reply
# says what the service can handle); unknown future types (absent here) are stored but not answered.
NEEDS_REPLY: dict[str, bool] = {
    MessageType.TEXT: True,
    MessageType.IMAGE: True,
    MessageType.AUDIO: True,
    MessageType.VIDEO: True,
    MessageType.DOCUMENT: True,
    MessageType.STICKER: True,
    MessageType.INTERACTIVE: True,
    MessageType.BUTTON: True,
    MessageType.LOCATION: True,
    MessageType.CONTACTS: True,
    MessageType.ORDER: True,
    MessageType.UNSUPPORTED: True,
    MessageType.REACTION: False,
    MessageType.SYSTEM: False,
    MessageType.REVOKE: False,
}
# Known types that never get an answer: they carry no words of the customer's for the model either.
NO_REPLY_TYPES: frozenset[str] = frozenset(t for t, needs in NEEDS_REPLY.items() if not needs)


class DeliveryStatus(enum.StrEnum):
    """Where Meta's status webhooks say our message is (`sent < delivered < read`, or `failed`)."""

    NONE = ""
    """No status webhook yet."""
    SENT = "sent"
    """Left Meta's servers."""
    DELIVERED = "delivered"
    """On the customer's device."""
    READ = "read"
    """Read (or, for a voice note, played)."""
    FAILED = "failed"
    """Meta could not deliver it; the code is in `delivery_error_code`."""


# Ranks for "never move a delivery status backwards"; FAILED is handled on its own (only over NONE and SENT).
DELIVERY_RANK: dict[str, int] = {
    DeliveryStatus.NONE: 0,
    DeliveryStatus.SENT: 1,
    DeliveryStatus.DELIVERED: 2,
    DeliveryStatus.READ: 3,
}
# The statuses a webhook may report; `played` (a voice note was played) counts as read.
REPORTED_DELIVERY_STATUSES: tuple[str, ...] = tuple(s for s in DeliveryStatus if s is not DeliveryStatus.NONE)
DELIVERY_STATUS_ALIASES: dict[str, str] = {"played": DeliveryStatus.READ}

# Column sizes (outbound.models): a longer value would fail the whole POST's insert, so the parser checks them.
WA_ID_MAX_LENGTH = 32
USER_ID_MAX_LENGTH = 160
PROFILE_NAME_MAX_LENGTH = 256
# Meta's ids (wamid): the inbound message's and the one Meta gives our reply.
ID_MAX_LENGTH = 256
# Error codes are stored in an IntegerField (32-bit on PostgreSQL).
ERROR_CODE_RANGE = range(-(2**31), 2**31)

# Meta's error code for "the 24-hour customer service window is closed": the template goes instead.
WINDOW_CLOSED_CODE = 131047

# The reply button offered in bot replies (OUTBOUND_HANDOFF_BUTTON): a tap arrives as an interactive
# `button_reply` with this id and hands the conversation to a person without asking the model.
HANDOFF_BUTTON_ID = "handoff"
# Meta's limits for interactive reply buttons: the body text and the button title.
BUTTON_BODY_LIMIT = 1024
BUTTON_TITLE_LIMIT = 20


def is_handoff_tap(raw: object) -> bool:
    """Whether an inbound message (as Meta sent it) is a tap on the "Talk to a person" button."""
    if not isinstance(raw, dict) or raw.get("type") != MessageType.INTERACTIVE:
        return False
    interactive = raw.get("interactive")
    if not isinstance(interactive, dict) or interactive.get("type") != "button_reply":
        return False
    reply = interactive.get("button_reply")
    return isinstance(reply, dict) and reply.get("id") == HANDOFF_BUTTON_ID
