"""The owner answering from the WhatsApp Business app on the same number (`smb_message_echoes` webhooks).

Each echo is stored (it shows in the conversation) and pauses the bot for that customer, the same way a staff
reply from the admin does: a person is talking, so the bot steps back.
"""

from __future__ import annotations

import logging

from outbound.inbound import ParsedEcho
from outbound.models import Contact, EchoMessage
from outbound.services.contacts import ContactIdentity, contacts_find_or_create
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


def _key(echo: ParsedEcho) -> ContactIdentity:
    return ContactIdentity(echo.phone_number_id, echo.wa_id, echo.user_id)


def _contacts_for(echoes: list[ParsedEcho]) -> dict[ContactIdentity, Contact]:
    """The customers the owner wrote to from that number, created when the owner wrote first (no inbound
    message yet)."""
    contacts, learned = contacts_find_or_create(identities={_key(e) for e in echoes})
    if learned:
        Contact.objects.bulk_update(learned, ["wa_id", "user_id"])
    return contacts
