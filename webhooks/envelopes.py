"""Meta's webhook envelopes built from parts: the inverse of the parser, for `simulate_inbound`, the tests and
the benchmarks (never used to read what Meta sends)."""

from __future__ import annotations

from typing import Any

from webhooks.payloads import EXAMPLE_PHONE_NUMBER_ID


def messages_webhook(
    *,
    messages: list[dict[str, Any]] | None = None,
    contacts: list[dict[str, Any]] | None = None,
    statuses: list[dict[str, Any]] | None = None,
    phone_number_id: str = EXAMPLE_PHONE_NUMBER_ID,
) -> dict[str, Any]:
    """Wrap messages, their senders and statuses in Meta's `messages` webhook envelope (§3.1-§3.4).

    The inverse of `parse_webhook`, for `simulate_inbound`, the tests and the benchmarks.
    """
    value: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": phone_number_id},
    }
    for key, items in (("contacts", contacts), ("messages", messages), ("statuses", statuses)):
        if items is not None:
            value[key] = items
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": "102290129340398", "changes": [{"field": "messages", "value": value}]}],
    }


def text_message(*, wa_id: str, wamid: str, text: str, timestamp: int) -> dict[str, Any]:
    """One inbound text message object (§3.2)."""
    return {"from": wa_id, "id": wamid, "timestamp": str(timestamp), "type": "text", "text": {"body": text}}


def media_message(
    *,
    wa_id: str,
    wamid: str,
    kind: str,
    media_id: str,
    mime_type: str,
    timestamp: int,
    sha256: str = "",
    caption: str = "",
    voice: bool = False,
) -> dict[str, Any]:
    """One inbound image, audio, video, document or sticker message object (§3.3, §12.1)."""
    media: dict[str, Any] = {"id": media_id, "mime_type": mime_type}
    if sha256:
        media["sha256"] = sha256
    if caption:
        media["caption"] = caption
    if kind == "audio":
        media["voice"] = voice
    return {"from": wa_id, "id": wamid, "timestamp": str(timestamp), "type": kind, kind: media}


def text_message_webhook(
    *,
    wa_id: str,
    name: str,
    text: str,
    wamid: str,
    timestamp: int,
    phone_number_id: str = EXAMPLE_PHONE_NUMBER_ID,
) -> dict[str, Any]:
    """One inbound text message from one customer, in Meta's webhook envelope."""
    return messages_webhook(
        messages=[text_message(wa_id=wa_id, wamid=wamid, text=text, timestamp=timestamp)],
        contacts=[{"profile": {"name": name}, "wa_id": wa_id}],
        phone_number_id=phone_number_id,
    )


def echoes_webhook(
    *, echoes: list[dict[str, Any]], phone_number_id: str = EXAMPLE_PHONE_NUMBER_ID
) -> dict[str, Any]:
    """Wrap messages the owner sent from the WhatsApp Business app in Meta's `smb_message_echoes` envelope."""
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": phone_number_id},
        "message_echoes": echoes,
    }
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": "102290129340398", "changes": [{"field": "smb_message_echoes", "value": value}]}],
    }


def text_echo(*, to: str, wamid: str, text: str, timestamp: int) -> dict[str, Any]:
    """One echo of a text the owner sent from the WhatsApp Business app (§12.3)."""
    return {
        "from": "15550783881",
        "to": to,
        "id": wamid,
        "timestamp": str(timestamp),
        "type": "text",
        "text": {"body": text},
    }
