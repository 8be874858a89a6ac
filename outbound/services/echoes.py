"""The owner answering from the WhatsApp Business app on the same number (`smb_message_echoes` webhooks).

Each echo is stored (it shows in the conversation) and pauses the bot for that customer, the same way a staff
reply from the admin does: a person is talking, so the bot steps back.
"""

from __future__ import annotations

import logging

from django.db.models import Q

from outbound.inbound import ParsedEcho
from outbound.models import Contact, EchoMessage
from outbound.services.handoff import contact_answered_by_person

logger = logging.getLogger(__name__)


def echoes_record(*, echoes: list[ParsedEcho]) -> int:
    """Store new echoes and pause the bot for their customers; return how many were new.

    Runs inside the ingest's transaction. A redelivered echo (same wamid) changes nothing.
    """
    unique = list({e.wamid: e for e in echoes}.values())
    existing = set(
        EchoMessage.objects.filter(wamid__in=[e.wamid for e in unique]).values_list("wamid", flat=True)
    )
    new = [e for e in unique if e.wamid not in existing]
    if not new:
        return 0
    contacts = _contacts_for(new)
    EchoMessage.objects.bulk_create(
        [
            EchoMessage(
                wamid=e.wamid,
                contact=contacts[_key(e)],
                type=e.type,
                text=e.text,
                timestamp=e.timestamp,
                raw=e.raw,
            )
            for e in new
        ],
        ignore_conflicts=True,
    )
    for contact in sorted({c.pk: c for c in contacts.values()}.values(), key=lambda c: c.pk):
        latest = max(e.timestamp for e in new if contacts[_key(e)].pk == contact.pk)
        contact_answered_by_person(
            contact_id=contact.pk, at=latest, why="answered from the WhatsApp Business app"
        )
    logger.info("echoes_stored new=%s contacts=%s", len(new), len(set(c.pk for c in contacts.values())))
    return len(new)


def _key(echo: ParsedEcho) -> str:
    return echo.wa_id or f"user:{echo.user_id}"


def _contacts_for(echoes: list[ParsedEcho]) -> dict[str, Contact]:
    """The customers the owner wrote to, created when the owner wrote first (no inbound message yet)."""
    first = {_key(e): e for e in echoes}
    Contact.objects.bulk_create(
        [Contact(wa_id=e.wa_id, user_id=e.user_id) for _, e in sorted(first.items())], ignore_conflicts=True
    )
    wa_ids = {e.wa_id for e in first.values() if e.wa_id}
    user_ids = {e.user_id for e in first.values() if e.user_id}
    found = list(Contact.objects.filter(Q(wa_id__in=wa_ids) | Q(user_id__in=user_ids)))
    by_wa_id = {c.wa_id: c for c in found if c.wa_id}
    by_user_id = {c.user_id: c for c in found if c.user_id}
    contacts: dict[str, Contact] = {}
    for key, echo in first.items():
        contact = by_wa_id.get(echo.wa_id or "") or by_user_id.get(echo.user_id or "")
        if contact is None:  # cannot happen after the insert above; never lose the POST over it
            raise LookupError(f"contact {key} missing after insert")
        contacts[key] = contact
    return contacts
