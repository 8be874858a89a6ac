"""Webhook test helpers: batches of messages and an outbound job waiting for Meta's status webhooks."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.utils import timezone

from outbound.models import OutboundJob
from tests.conftest import text_payload
from webhooks.models import Contact, InboundMessage


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


def make_job(
    *,
    status: str = OutboundJob.Status.SENT,
    wa_message_id: str = "wamid.OUT",
    send_as: str = OutboundJob.SendAs.TEXT,
    send_started_at: datetime | None = None,
    delivery_status: str = OutboundJob.Delivery.NONE,
    wa_id: str = "16505551234",
    inbound_wamid: str = "wamid.IN",
) -> OutboundJob:
    """A job as the worker leaves it: by default SENT as text, with Meta's message id, no status webhook yet."""
    contact, _ = Contact.objects.get_or_create(wa_id=wa_id, defaults={"last_inbound_at": timezone.now()})
    message = InboundMessage.objects.create(
        wamid=inbound_wamid,
        contact=contact,
        type=InboundMessage.Type.TEXT,
        text="Hello",
        needs_reply=True,
        timestamp=timezone.now(),
        raw={},
    )
    return OutboundJob.objects.create(
        contact=contact,
        inbound_message=message,
        status=status,
        send_as=send_as,
        content="Hi there",
        wa_message_id=wa_message_id,
        send_started_at=send_started_at,
        sent_at=timezone.now() if status == OutboundJob.Status.SENT else None,
        delivery_status=delivery_status,
        attempts=1,
    )
