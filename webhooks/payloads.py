"""Meta webhook payloads → small frozen dataclasses (pure: no Django, no database).

Nothing here raises on a malformed payload: anything that is not a well-formed message or status is
reported in `ParsedWebhook.skipped` for the log and otherwise ignored (Meta would retry a non-200 for 7 days).
Shapes: Meta's webhook payload reference (Cloud API, "Webhooks"). The dataclasses are
`outbound.inbound`'s; the vocabulary (types, statuses, column sizes) is `outbound.vocabulary`'s.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable, Collection, Iterator
from datetime import UTC, datetime
from functools import partial
from typing import Any

from outbound.inbound import (
    MediaRef,
    ParsedEcho,
    ParsedMessage,
    ParsedPreference,
    ParsedStatus,
    ParsedTemplateEvent,
    ParsedWebhook,
    StatusError,
)
from outbound.numbers import EXAMPLE_PHONE_NUMBER_ID as EXAMPLE_PHONE_NUMBER_ID
from outbound.numbers import split_phone_number_ids as split_phone_number_ids
from outbound.vocabulary import (
    DELIVERY_STATUS_ALIASES,
    ERROR_CODE_RANGE,
    ID_MAX_LENGTH,
    NEEDS_REPLY,
    PROFILE_NAME_MAX_LENGTH,
    REPORTED_DELIVERY_STATUSES,
    USER_ID_MAX_LENGTH,
    WA_ID_MAX_LENGTH,
    MessageType,
)

logger = logging.getLogger(__name__)


def load_payload(body: bytes) -> Any:
    """Decode a webhook body; raise ValueError when it is not JSON.

    Values that no database column can hold become storable ones, so that a well-signed body is never refused
    on every redelivery for 7 days: U+0000 and lone UTF-16 surrogates (in keys and values) become U+FFFD,
    NaN, Infinity, -Infinity and numbers beyond a float's range (1e999) become null.
    """
    try:
        payload = json.loads(body, parse_constant=_non_finite, parse_float=_finite_float)
        # Walking the whole structure costs time; only a body that can hold such a character pays it.
        # A NUL byte means a UTF-16/32 body, where these characters cannot be found in the raw bytes.
        if _UNSTORABLE_ESCAPE.search(body) or b"\x00" in body:
            return _clean_strings(payload)
        return payload
    except RecursionError as exc:
        raise ValueError("JSON nested too deeply") from exc


# `\u0000`, an escaped surrogate `\ud800`-`\udfff` (a valid pair is joined by json.loads, so it is left as it was),
# and a surrogate encoded in UTF-8 bytes (json.loads decodes with `surrogatepass`).
_UNSTORABLE_ESCAPE = re.compile(rb"\\u0000|\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")
_UNSTORABLE_CHARACTERS = re.compile("[\x00\ud800-\udfff]")


def _non_finite(_constant: str) -> None:
    # NaN, Infinity, -Infinity: PostgreSQL's jsonb refuses them, and SQLite's JSON check fails the insert.
    return None


def _finite_float(text: str) -> float | None:
    number = float(text)
    return number if math.isfinite(number) else None


def _clean_strings(value: Any) -> Any:
    if isinstance(value, str):
        return _UNSTORABLE_CHARACTERS.sub("\ufffd", value)
    if isinstance(value, list):
        return [_clean_strings(item) for item in value]
    if isinstance(value, dict):
        return {_clean_strings(key): _clean_strings(item) for key, item in value.items()}
    return value


def parse_webhook(payload: Any, *, phone_number_ids: Collection[str]) -> ParsedWebhook:
    """Walk every entry, change, message and status of a webhook payload.

    Only values addressed to one of `phone_number_ids` (`value.metadata.phone_number_id`) count: an app can be
    subscribed for several numbers, and a message to another one must not be answered from ours.
    """
    result = ParsedWebhook()
    if not isinstance(payload, dict):
        result.skipped.append(f"payload is {type(payload).__name__}, not an object")
        return result
    if payload.get("object") != "whatsapp_business_account":
        # Another product's webhook (page, instagram, ...): not ours to store.
        result.skipped.append(f"object={payload.get('object')!r}")
        return result
    for entry in _dicts(payload.get("entry"), "entry", result):
        for change in _dicts(entry.get("changes"), "changes", result):
            value = change.get("value")
            kind = change.get("field")
            if isinstance(kind, str) and kind in TEMPLATE_FIELDS and isinstance(value, dict):
                # Templates belong to the business account (`entry.id`), not to a business number.
                account = str(entry.get("id") or "")[:64]
                _collect(
                    result.templates,
                    result.skipped,
                    "template",
                    value,
                    partial(_parse_template, account=account),
                )
                continue
            if kind not in ("messages", ECHOES_FIELD, PREFERENCES_FIELD) or not isinstance(value, dict):
                result.skipped.append(f"field={kind!r}")
                continue
            _parse_value(value, result, phone_number_ids)
    return result


# The owner answering from the WhatsApp Business app on the same number (coexistence, §12.3).
ECHOES_FIELD = "smb_message_echoes"
# Marketing messages stopped or resumed (§12.4):
# https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/user_preferences
PREFERENCES_FIELD = "user_preferences"
# Template health (§12.5; shapes as in pywa's fixtures tests/data/updates/template_*_update.json).
TEMPLATE_FIELDS = frozenset({"message_template_status_update", "template_category_update"})


def _parse_value(value: dict[str, Any], result: ParsedWebhook, phone_number_ids: Collection[str]) -> None:
    metadata = value.get("metadata")
    number = metadata.get("phone_number_id") if isinstance(metadata, dict) else None
    if not isinstance(number, str) or number not in phone_number_ids:
        messages, statuses = value.get("messages"), value.get("statuses")
        preferences = value.get("user_preferences")
        result.skipped.append(
            f"phone_number_id={str(number)[:80]!r} is not a number this service serves:"
            f" {len(messages) if isinstance(messages, list) else 0} messages"
            f" and {len(statuses) if isinstance(statuses, list) else 0} statuses"
            + (f" and {len(preferences)} preferences" if isinstance(preferences, list) else "")
            + " ignored"
        )
        return
    for error in _dicts(value.get("errors"), "errors", result):
        result.skipped.append(f"value error code={error.get('code')!r} title={error.get('title')!r}")
    profiles = _contact_profiles(value.get("contacts"))
    for raw in _dicts(value.get("messages"), "messages", result):
        _collect(
            result.messages, result.skipped, "message", raw, lambda m: _parse_message(m, profiles, number)
        )
    for raw in _dicts(value.get("statuses"), "statuses", result):
        _collect(result.statuses, result.skipped, "status", raw, lambda s: _parse_status(s, number))
    for raw in _dicts(value.get("message_echoes"), "message_echoes", result):
        _collect(result.echoes, result.skipped, "echo", raw, lambda e: _parse_echo(e, number))
    for raw in _dicts(value.get("user_preferences"), "user_preferences", result):
        _collect(
            result.preferences, result.skipped, "preference", raw, lambda p: _parse_preference(p, number)
        )


def _collect(
    into: list[Any],
    skipped: list[str],
    kind: str,
    raw: dict[str, Any],
    parse: Callable[[dict[str, Any]], Any],
) -> None:
    try:
        into.append(parse(raw))
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        skipped.append(f"malformed {kind} id={str(raw.get('id'))[:80]!r}: {type(exc).__name__}: {exc}")


def _dicts(value: Any, name: str, result: ParsedWebhook) -> Iterator[dict[str, Any]]:
    if value is None:
        return
    if not isinstance(value, list):
        result.skipped.append(f"{name} is {type(value).__name__}, not a list")
        return
    for item in value:
        if isinstance(item, dict):
            yield item
        else:
            result.skipped.append(f"{name} item is {type(item).__name__}, not an object")


def _contact_profiles(contacts: Any) -> dict[str, tuple[str | None, str]]:
    """Map wa_id and user_id → (user_id, profile name) from `value.contacts`."""
    profiles: dict[str, tuple[str | None, str]] = {}
    if not isinstance(contacts, list):
        return profiles
    for contact in contacts:
        if not isinstance(contact, dict):
            continue
        profile = contact.get("profile")
        name = profile.get("name") if isinstance(profile, dict) else None
        user_id = _optional_str(contact.get("user_id"), USER_ID_MAX_LENGTH)
        info = (user_id, name if isinstance(name, str) else "")
        for key in (_optional_str(contact.get("wa_id"), WA_ID_MAX_LENGTH), user_id):
            if key:
                profiles[key] = info
    return profiles


def _parse_message(
    raw: dict[str, Any], profiles: dict[str, tuple[str | None, str]], phone_number_id: str
) -> ParsedMessage:
    wamid = _required_str(raw, "id")
    sender = raw.get("from")
    wa_id = _optional_str(sender, WA_ID_MAX_LENGTH)
    if isinstance(sender, str) and len(sender) > WA_ID_MAX_LENGTH:
        raise ValueError(f"'from' is not a WhatsApp number of at most {WA_ID_MAX_LENGTH} characters")
    user_id = _optional_str(raw.get("from_user_id"), USER_ID_MAX_LENGTH)
    new_user_id = None
    if raw.get("type") == MessageType.SYSTEM and _field(raw, "system", "type") == USER_CHANGED_USER_ID:
        wa_id, user_id, new_user_id = _user_id_change(raw, wa_id, user_id)
    if not wa_id and not user_id:
        raise ValueError("no sender: neither 'from' nor 'from_user_id'")
    profile_user_id, profile_name = profiles.get(wa_id or "", profiles.get(user_id or "", (None, "")))
    raw_type = raw.get("type")
    message_type = raw_type if isinstance(raw_type, str) else MessageType.UNKNOWN
    known = message_type in NEEDS_REPLY
    return ParsedMessage(
        wamid=wamid,
        wa_id=wa_id,
        user_id=user_id or profile_user_id,
        profile_name=profile_name[:PROFILE_NAME_MAX_LENGTH],
        type=message_type if known else MessageType.UNKNOWN,
        text=describe_message(message_type, raw),
        needs_reply=NEEDS_REPLY.get(message_type, False),
        timestamp=parse_timestamp(raw.get("timestamp")),
        raw=raw,
        phone_number_id=phone_number_id,
        new_user_id=new_user_id,
        media=media_ref(message_type, raw),
    )


# The message types whose object carries a Meta media id.
MEDIA_TYPES = frozenset({"image", "audio", "video", "document", "sticker"})


def media_ref(message_type: str, raw: dict[str, Any]) -> MediaRef | None:
    """The media id, mime type, sha256 and caption of a media message (None for other types, or no id)."""
    if message_type not in MEDIA_TYPES:
        return None
    media_id = _field(raw, message_type, "id")
    if not media_id or len(media_id) > ID_MAX_LENGTH:
        return None
    return MediaRef(
        id=media_id,
        mime_type=_field(raw, message_type, "mime_type")[:255],
        sha256=_field(raw, message_type, "sha256")[:128],
        caption=_field(raw, message_type, "caption"),
    )


# The system message Meta sends when a customer's BSUID changes (meta-whatsapp-api.md §3.3, §9): the contact
# is re-keyed, its history kept. Shapes seen: the old BSUID as `from_user_id` (or `system.previous_user_id`,
# or only in the body, "User A changed from US.OLD to US.NEW"), the new one as `system.user_id`; the phone
# number, when Meta has it, as `from` or `system.wa_id` (it does not change with the BSUID).
USER_CHANGED_USER_ID = "user_changed_user_id"
_CHANGED_FROM_TO = re.compile(r"changed from (\S+) to (\S+?)\.?$")


def _user_id_change(
    raw: dict[str, Any], wa_id: str | None, user_id: str | None
) -> tuple[str | None, str | None, str | None]:
    """(phone number, old BSUID, new BSUID) of a `user_changed_user_id` message; the new one None if unknown."""
    match = _CHANGED_FROM_TO.search(_field(raw, "system", "body").strip())
    old = user_id or _optional_str(_field(raw, "system", "previous_user_id"), USER_ID_MAX_LENGTH)
    new = _optional_str(_field(raw, "system", "user_id"), USER_ID_MAX_LENGTH)
    if match:
        old = old or _optional_str(match.group(1), USER_ID_MAX_LENGTH)
        new = new or _optional_str(match.group(2), USER_ID_MAX_LENGTH)
    wa_id = wa_id or _optional_str(_field(raw, "system", "wa_id"), WA_ID_MAX_LENGTH)
    return wa_id, old, new if new != old else None


def _parse_status(raw: dict[str, Any], phone_number_id: str) -> ParsedStatus:
    status = _required_str(raw, "status")
    status = DELIVERY_STATUS_ALIASES.get(status, status)
    if status not in REPORTED_DELIVERY_STATUSES:
        raise ValueError(f"unknown status {status!r}")
    raw_errors = raw.get("errors")
    errors = tuple(
        StatusError(
            code=_error_code(error.get("code")),
            title=str(error.get("title") or error.get("message") or "")[:500],
            details=str(_error_details(error))[:1000],
        )
        for error in (raw_errors if isinstance(raw_errors, list) else [])
        if isinstance(error, dict)
    )
    return ParsedStatus(
        wamid=_required_str(raw, "id"),
        status=status,
        timestamp=parse_timestamp(raw.get("timestamp")),
        callback_data=str(raw.get("biz_opaque_callback_data") or ""),
        phone_number_id=phone_number_id,
        errors=errors,
    )


def _parse_echo(raw: dict[str, Any], phone_number_id: str) -> ParsedEcho:
    """`{"from": <business number>, "to": <customer>, "id", "timestamp", "type", ...}`: we sent it, by hand."""
    wamid = _required_str(raw, "id")
    to = raw.get("to")
    wa_id = _optional_str(to, WA_ID_MAX_LENGTH)
    if isinstance(to, str) and len(to) > WA_ID_MAX_LENGTH:
        raise ValueError(f"'to' is not a WhatsApp number of at most {WA_ID_MAX_LENGTH} characters")
    user_id = _optional_str(raw.get("to_user_id"), USER_ID_MAX_LENGTH)
    if not wa_id and not user_id:
        raise ValueError("no recipient: neither 'to' nor 'to_user_id'")
    raw_type = raw.get("type")
    message_type = raw_type[:32] if isinstance(raw_type, str) and raw_type else MessageType.UNKNOWN
    text = _field(raw, "text", "body") if message_type == MessageType.TEXT else ""
    return ParsedEcho(
        wamid=wamid,
        wa_id=wa_id,
        user_id=user_id,
        type=message_type,
        text=text or f"[{message_type} sent from the WhatsApp Business app]",
        timestamp=parse_timestamp(raw.get("timestamp")),
        raw=raw,
        phone_number_id=phone_number_id,
    )


def _parse_preference(raw: dict[str, Any], phone_number_id: str) -> ParsedPreference:
    """`{"wa_id", "detail", "category": "marketing_messages", "value": "stop" | "resume", "timestamp"}`, for
    the business number of its value."""
    wa_id = _optional_str(raw.get("wa_id"), WA_ID_MAX_LENGTH)
    user_id = _optional_str(raw.get("user_id"), USER_ID_MAX_LENGTH)
    if not wa_id and not user_id:
        raise ValueError("no customer: neither 'wa_id' nor 'user_id'")
    value = raw.get("value")
    if value not in ("stop", "resume"):
        raise ValueError(f"unknown preference value {str(value)[:40]!r}")
    return ParsedPreference(
        wa_id=wa_id,
        user_id=user_id,
        category=str(raw.get("category") or "")[:64],
        value=value,
        timestamp=parse_timestamp(raw.get("timestamp")),
        phone_number_id=phone_number_id,
        detail=str(raw.get("detail") or "")[:500],
    )


def _parse_template(raw: dict[str, Any], *, account: str) -> ParsedTemplateEvent:
    """A template's new status (`event`) or category (`new_category`), by name and language."""
    name = _required_str(raw, "message_template_name")
    language = raw.get("message_template_language")
    template_id = raw.get("message_template_id")
    event = raw.get("event")
    category = raw.get("new_category")
    if not isinstance(event, str) and not isinstance(category, str):
        raise ValueError("neither 'event' nor 'new_category'")
    reason = raw.get("reason")
    other = raw.get("other_info")
    description = other.get("description") if isinstance(other, dict) else None
    reasons = [str(r) for r in (reason, description) if r and str(r).upper() != "NONE"]
    return ParsedTemplateEvent(
        name=name[:512],
        language=language[:32] if isinstance(language, str) else "",
        template_id=str(template_id)[:64] if isinstance(template_id, int | str) else "",
        status=event[:64] if isinstance(event, str) else "",
        category=category[:64] if isinstance(category, str) else "",
        reason="; ".join(reasons)[:1000],
        account_id=account,
    )


def _error_code(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value in ERROR_CODE_RANGE:
        return value
    return None


def _error_details(error: dict[str, Any]) -> str:
    data = error.get("error_data")
    if isinstance(data, dict):
        return str(data.get("details") or "")
    return str(data or "")


def parse_timestamp(value: Any) -> datetime:
    """Meta sends Unix seconds as a string; anything else is malformed."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"timestamp {value!r} is not Unix seconds")
    seconds = int(value)
    if seconds <= 0:
        raise ValueError(f"timestamp {value!r} is not positive")
    try:
        return datetime.fromtimestamp(seconds, tz=UTC)
    except (OverflowError, OSError) as exc:  # OSError: beyond the platform's time_t
        raise ValueError(f"timestamp {value!r} is out of range") from exc


def _required_str(raw: dict[str, Any], key: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{key!r} missing or not a string")
    if len(value) > ID_MAX_LENGTH:
        raise ValueError(f"{key!r} longer than {ID_MAX_LENGTH} characters")
    return value


def _optional_str(value: Any, max_length: int) -> str | None:
    if isinstance(value, str) and value and len(value) <= max_length:
        return value
    return None


def _field(raw: dict[str, Any], *path: str) -> str:
    """Follow `path` through nested objects; a missing or odd value reads as ''."""
    value: Any = raw
    for key in path:
        if not isinstance(value, dict):
            return ""
        value = value.get(key)
    return value if isinstance(value, str) else "" if value is None else str(value)


def describe_message(message_type: str, raw: dict[str, Any]) -> str:
    """Return the text a model can use: the words themselves, or what kind of message this was."""
    describe = _DESCRIBERS.get(message_type)
    if describe is None:
        return f"[a message of a type this service does not know: {message_type}]"
    return describe(raw).strip()


_MEDIA_NAMES = {"image": "an image", "audio": "an audio message", "video": "a video", "sticker": "a sticker"}


def _media(kind: str) -> Callable[[dict[str, Any]], str]:
    def describe(raw: dict[str, Any]) -> str:
        caption = _field(raw, kind, "caption")
        filename = _field(raw, kind, "filename")
        voice = kind == "audio" and _field(raw, "audio", "voice") == "True"
        what = "a voice message" if voice else _MEDIA_NAMES.get(kind, f"a {kind}")
        if filename:
            what = f"{what} ({filename})"
        text = f"[The customer sent {what}, which this service cannot open.]"
        return f"{text} Caption: {caption}" if caption else text

    return describe


def _interactive(raw: dict[str, Any]) -> str:
    kind = _field(raw, "interactive", "type")
    if kind in ("button_reply", "list_reply"):
        title = _field(raw, "interactive", kind, "title")
        description = _field(raw, "interactive", kind, "description")
        return f"{title} ({description})" if description else title
    if kind == "nfm_reply":
        return f"[The customer submitted a form: {_field(raw, 'interactive', 'nfm_reply', 'response_json')}]"
    return f"[The customer answered an interactive message ({kind or 'unknown kind'}).]"


def _location(raw: dict[str, Any]) -> str:
    place = ", ".join(p for p in (_field(raw, "location", "name"), _field(raw, "location", "address")) if p)
    lat, lon = _field(raw, "location", "latitude"), _field(raw, "location", "longitude")
    return f"[The customer shared a location: {place or 'a map pin'} at {lat},{lon}.]"


def _contacts(raw: dict[str, Any]) -> str:
    cards = raw.get("contacts")
    names = [
        _field(card, "name", "formatted_name")
        for card in (cards if isinstance(cards, list) else [])
        if isinstance(card, dict)
    ]
    return f"[The customer shared contact cards: {', '.join(n for n in names if n) or 'unnamed'}.]"


def _unsupported(raw: dict[str, Any]) -> str:
    kind = _field(raw, "unsupported", "type")
    return f"[The customer sent a message WhatsApp does not pass on to this service ({kind or 'unknown'}).]"


_DESCRIBERS: dict[str, Callable[[dict[str, Any]], str]] = {
    "text": lambda raw: _field(raw, "text", "body"),
    "image": _media("image"),
    "audio": _media("audio"),
    "video": _media("video"),
    "document": _media("document"),
    "sticker": _media("sticker"),
    "interactive": _interactive,
    "button": lambda raw: _field(raw, "button", "text") or _field(raw, "button", "payload"),
    "reaction": lambda raw: f"[reaction {_field(raw, 'reaction', 'emoji') or '(removed)'}]",
    "location": _location,
    "contacts": _contacts,
    "order": lambda raw: f"[The customer sent an order: {_field(raw, 'order', 'text') or 'no note'}.]",
    "system": lambda raw: f"[system: {_field(raw, 'system', 'body')}]",
    "revoke": lambda raw: "[The customer deleted a message.]",
    "unsupported": _unsupported,
}
