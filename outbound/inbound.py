"""What the webhook parser produces and the ingest consumes: small frozen dataclasses (pure: no Django)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class MediaRef:
    """The media object of an image, audio, video, document or sticker message: what the worker fetches later."""

    id: str
    mime_type: str = ""
    sha256: str = ""
    caption: str = ""


@dataclass(frozen=True)
class ParsedMessage:
    wamid: str
    wa_id: str | None
    user_id: str | None
    profile_name: str
    type: str
    text: str
    needs_reply: bool
    timestamp: datetime
    raw: dict[str, Any]
    # The business number it was sent to (`value.metadata.phone_number_id`), always one this service serves.
    phone_number_id: str
    # A `user_changed_user_id` system message: the customer's new BSUID (`user_id` is the old one).
    new_user_id: str | None = None
    media: MediaRef | None = None


@dataclass(frozen=True)
class ParsedEcho:
    """A message the business sent from the WhatsApp Business app (`smb_message_echoes`), to `wa_id`."""

    wamid: str
    wa_id: str | None
    user_id: str | None
    type: str
    text: str
    timestamp: datetime
    raw: dict[str, Any]
    phone_number_id: str


@dataclass(frozen=True)
class StatusError:
    code: int | None
    title: str
    details: str


@dataclass(frozen=True)
class ParsedStatus:
    wamid: str
    status: str
    timestamp: datetime
    callback_data: str
    # The business number that sent the message this status is about, always one this service serves.
    phone_number_id: str
    errors: tuple[StatusError, ...] = ()


@dataclass(frozen=True)
class ParsedPreference:
    """A `user_preferences` webhook item: the customer stopped or resumed marketing messages (§12.4)."""

    wa_id: str | None
    user_id: str | None
    category: str
    value: str
    timestamp: datetime
    # The business number the customer set it for (`value.metadata.phone_number_id`), always one this service
    # serves: a preference belongs to one conversation, like a message.
    phone_number_id: str
    detail: str = ""


@dataclass(frozen=True)
class ParsedTemplateEvent:
    """A `message_template_status_update` (`status` set) or `template_category_update` (`category` set)."""

    name: str
    language: str
    template_id: str
    status: str = ""
    category: str = ""
    reason: str = ""
    # The WhatsApp Business Account the entry is for (`entry[].id`).
    account_id: str = ""


@dataclass
class ParsedWebhook:
    messages: list[ParsedMessage] = field(default_factory=list)
    statuses: list[ParsedStatus] = field(default_factory=list)
    echoes: list[ParsedEcho] = field(default_factory=list)
    preferences: list[ParsedPreference] = field(default_factory=list)
    templates: list[ParsedTemplateEvent] = field(default_factory=list)
    # Human-readable reasons for everything well-signed that we did not turn into a message or status.
    skipped: list[str] = field(default_factory=list)
