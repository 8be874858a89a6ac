"""Webhook test helpers: batches of messages."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tests.conftest import text_payload


def batch_payload(
    messages: list[dict[str, Any]], *, contacts: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """One change carrying `messages`; `contacts` defaults to one profile per distinct sender."""
    payload = text_payload(wamid="wamid.unused", timestamp=1)
    value = payload["entry"][0]["changes"][0]["value"]
    senders = dict.fromkeys(m.get("from") for m in messages if isinstance(m, dict) and m.get("from"))
    value["contacts"] = (
        contacts
        if contacts is not None
        else [{"profile": {"name": f"Name {s}"}, "wa_id": s} for s in senders]
    )
    value["messages"] = messages
    return payload


def text_message(
    *, wamid: str, wa_id: str = "16505551234", body: str = "Hello", timestamp: int | datetime
) -> dict[str, Any]:
    ts = int(timestamp.timestamp()) if isinstance(timestamp, datetime) else timestamp
    return {"from": wa_id, "id": wamid, "timestamp": str(ts), "type": "text", "text": {"body": body}}
