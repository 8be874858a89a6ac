"""The one way tests build rows: contacts, their inbound messages, jobs in any status, knowledge entries.

Jobs are created directly in the status a test needs (set-up, not a transition under test). Without a
`contact`, a job belongs to the default customer (created once, then reused).
"""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from outbound.models import Contact, InboundMessage, KnowledgeEntry, OutboundJob

DEFAULT_WA_ID = "16505551234"
# The business number of tests/settings.py (WHATSAPP_PHONE_NUMBER_ID) and of every payload in tests/data.
DEFAULT_PHONE_NUMBER_ID = "106540352242922"
DEFAULT_NAME = "Sheena Nelson"
_seq = itertools.count(1)


def make_contact(
    *,
    wa_id: str | None = DEFAULT_WA_ID,
    name: str = DEFAULT_NAME,
    last_inbound_at: datetime | None = None,
    phone_number_id: str = DEFAULT_PHONE_NUMBER_ID,
    user_id: str | None = None,
) -> Contact:
    return Contact.objects.create(
        phone_number_id=phone_number_id,
        wa_id=wa_id,
        user_id=user_id,
        profile_name=name,
        last_inbound_at=last_inbound_at or timezone.now() - timedelta(minutes=5),
    )


def default_contact(*, wa_id: str = DEFAULT_WA_ID) -> Contact:
    """The customer of every job built without a contact: found, or created like `make_contact`."""
    contact = Contact.objects.filter(wa_id=wa_id).first()
    return contact or make_contact(wa_id=wa_id)


def make_message(
    *,
    contact: Contact,
    text: str = "Does it come in another color?",
    at: datetime | None = None,
    **fields: Any,
) -> InboundMessage:
    n = next(_seq)
    fields.setdefault("wamid", f"wamid.IN{n}")
    fields.setdefault("type", InboundMessage.Type.TEXT)
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
    wamid: str | None = None,
    **fields: Any,
) -> OutboundJob:
    """A job answering a new inbound message (`text`, sent `at`, Meta id `wamid`) of `contact`."""
    contact = contact or default_contact()
    message = make_message(contact=contact, text=text, at=at, **({"wamid": wamid} if wamid else {}))
    return OutboundJob.objects.create(contact=contact, inbound_message=message, status=status, **fields)


def make_sent_job(
    *,
    status: str = OutboundJob.Status.SENT,
    wa_message_id: str = "wamid.OUT",
    send_as: str = OutboundJob.SendAs.TEXT,
    send_started_at: datetime | None = None,
    delivery_status: str = OutboundJob.Delivery.NONE,
    wa_id: str = DEFAULT_WA_ID,
    inbound_wamid: str = "wamid.IN",
) -> OutboundJob:
    """A job as the worker leaves it: by default SENT as text, with Meta's message id, no status webhook yet."""
    return make_job(
        contact=default_contact(wa_id=wa_id),
        status=status,
        wamid=inbound_wamid,
        send_as=send_as,
        content="Hi there",
        wa_message_id=wa_message_id,
        send_started_at=send_started_at,
        sent_at=timezone.now() if status == OutboundJob.Status.SENT else None,
        delivery_status=delivery_status,
        attempts=1,
    )


def make_knowledge(
    *,
    title: str = "Opening hours",
    body: str = "We open on Sunday from 10:00 to 14:00.",
    is_active: bool = True,
) -> KnowledgeEntry:
    return KnowledgeEntry.objects.create(title=title, body=body, is_active=is_active)


def make_timed_job(
    *,
    received_at: datetime,
    claimed_after: float | None = None,
    generated_after: float | None = None,
    sent_after: float | None = None,
    status: str | None = None,
    **fields: Any,
) -> OutboundJob:
    """A bot job whose timeline is set: the message received at `received_at`, then claimed, generated and
    sent that many seconds after it (None: not yet). SENT when `sent_after` is given, else `status`."""
    job = make_job(
        status=status or (OutboundJob.Status.SENT if sent_after is not None else "PENDING"), **fields
    )
    InboundMessage.objects.filter(outbound_job=job).update(received_at=received_at)

    def after(seconds: float | None) -> datetime | None:
        return None if seconds is None else received_at + timedelta(seconds=seconds)

    OutboundJob.objects.filter(pk=job.pk).update(
        created_at=received_at,
        first_claimed_at=after(claimed_after),
        generated_at=after(generated_after),
        sent_at=after(sent_after),
    )
    job.refresh_from_db()
    return job
