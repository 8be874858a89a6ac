"""Storing a webhook POST: contacts, messages, their jobs and status updates, in one transaction.

The webhook view parses (webhooks.payloads) and calls `webhook_ingest`; nothing here knows about HTTP.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime

from django.db import (
    IntegrityError,
    InterfaceError,
    OperationalError,
    ProgrammingError,
    connection,
    transaction,
)
from django.db.models import Case, F, Q, Value, When
from django.db.models.functions import Coalesce, Greatest
from django.utils import timezone

from outbound.inbound import ParsedMessage, ParsedWebhook
from outbound.models import Contact, InboundMessage, OutboundJob
from outbound.services import ingest_sql
from outbound.services.contacts import ContactIdentity, contacts_change_user_id, contacts_find_or_create
from outbound.services.echoes import echoes_record
from outbound.services.optout import contacts_opt_apply, keyword_messages
from outbound.services.preferences import contacts_record_preferences
from outbound.services.statuses import StatusCounts, outbound_jobs_record_statuses
from outbound.services.templates import whatsapp_templates_record
from outbound.wakeup import outbound_jobs_notify

logger = logging.getLogger(__name__)


@dataclass
class IngestResult:
    messages: int = 0
    new_messages: int = 0
    jobs: int = 0
    statuses: StatusCounts | None = None
    # Messages and statuses the one-at-a-time fallback could not store (logged with their wamid).
    failed: int = 0
    # New messages the owner sent from the WhatsApp Business app (each pauses the bot for its customer).
    echoes: int = 0
    # Marketing preferences recorded on contacts (`user_preferences`) and template events recorded.
    preferences: int = 0
    templates: int = 0


def webhook_ingest(*, parsed: ParsedWebhook) -> IngestResult:
    """Store one POST atomically with a fixed handful of bulk statements, whatever its size.

    On PostgreSQL, messages from senders known by number (nearly every POST) take one statement
    (`ingest_sql`); the rest take the ORM's bulk statements here.

    A redelivered message (same wamid) creates nothing: the UNIQUE wamid and the UNIQUE job-per-message
    make the inserts no-ops, even for two deliveries racing each other.
    """
    result = IngestResult(messages=len(parsed.messages))
    messages = list({m.wamid: m for m in parsed.messages}.values())
    # STOP / START change the contact and their job in the same transaction (rare: the ORM path below).
    keywords = keyword_messages(messages)
    others = parsed.statuses or parsed.echoes or parsed.preferences or parsed.templates
    if messages and not others and not keywords and ingest_sql.fits(messages):
        # The common POST (a customer's message) on PostgreSQL: one statement, itself one transaction; a
        # savepoint only when a caller's transaction is open, so that a refused batch leaves it usable.
        try:
            with transaction.atomic() if connection.in_atomic_block else contextlib.nullcontext():
                result.new_messages, result.jobs = ingest_sql.store_messages(messages)
        except IntegrityError:
            # Nothing was stored (one statement). A contact known by its user id alone now comes with its
            # number (a UNIQUE clash the statement does not resolve), or the batch is refused: the ORM path
            # below sorts out the first and raises the second for the view's one-at-a-time fallback.
            logger.debug("webhook_ingest_statement_refused; taking the ORM path")
        else:
            result.statuses = StatusCounts()
            return result
    with transaction.atomic():
        if messages:
            messages = _settled_user_id_changes(messages)
            contacts = _upsert_contacts(messages)
            result.new_messages, result.jobs = _store_messages(messages, contacts)
            if keywords:
                # Before the re-keys: a BSUID change can merge a keyword's contact away (the merge carries the
                # opt state and the jobs over to the contact that remains).
                contacts_opt_apply(keywords=[(m, kind, contacts[_contact_key(m)]) for m, kind in keywords])
            _change_user_ids(messages, contacts)
        result.statuses = outbound_jobs_record_statuses(statuses=parsed.statuses)
        if parsed.echoes:
            result.echoes = echoes_record(echoes=parsed.echoes)
        if parsed.preferences:
            result.preferences = contacts_record_preferences(preferences=parsed.preferences)
        if parsed.templates:
            result.templates = whatsapp_templates_record(events=parsed.templates)
        if result.jobs:
            # Delivered on commit: an idle worker wakes and answers within milliseconds, not at its next poll.
            outbound_jobs_notify()
    return result


# Failures that are not the payload's fault, so Meta's redelivery (after a 503) will be stored: the database is
# down or the connection broke, or it refuses the SQL itself (a migration not applied yet, on PostgreSQL).
RETRY_LATER: tuple[type[Exception], ...] = (OperationalError, InterfaceError, ProgrammingError)


def webhook_ingest_each(*, parsed: ParsedWebhook) -> IngestResult:
    """The fallback when `webhook_ingest` failed for the whole POST: each message and each status on its own.

    One message the database refuses (or that meets a bug) must not keep the rest of the batch out, and must not
    make Meta redeliver the POST for 7 days: each is stored in its own transaction, and one that fails is logged
    at ERROR by its wamid (never its text) and counted in `failed`. A `RETRY_LATER` failure (the database is
    unavailable) is raised: the caller answers 503 and Meta's redelivery stores the rest, the stored ones once.
    """
    result = IngestResult(messages=len(parsed.messages))
    counts = result.statuses = StatusCounts()
    for message in {m.wamid: m for m in parsed.messages}.values():
        one = _ingest_one(ParsedWebhook(messages=[message]), "message", message.wamid)
        if one is None:
            result.failed += 1
        else:
            result.new_messages += one.new_messages
            result.jobs += one.jobs
    for status in sorted(parsed.statuses, key=lambda s: s.timestamp):
        one = _ingest_one(ParsedWebhook(statuses=[status]), "status", status.wamid)
        if one is None:
            result.failed += 1
        elif one.statuses is not None:
            counts.applied += one.statuses.applied
            counts.settled += one.statuses.settled
            counts.unknown += one.statuses.unknown
    for echo in {e.wamid: e for e in parsed.echoes}.values():
        one = _ingest_one(ParsedWebhook(echoes=[echo]), "echo", echo.wamid)
        if one is None:
            result.failed += 1
        else:
            result.echoes += one.echoes
    for preference in parsed.preferences:
        one = _ingest_one(
            ParsedWebhook(preferences=[preference]),
            "preference",
            preference.wa_id or preference.user_id or "?",
        )
        if one is None:
            result.failed += 1
        else:
            result.preferences += one.preferences
    for event in parsed.templates:
        one = _ingest_one(ParsedWebhook(templates=[event]), "template", event.name)
        if one is None:
            result.failed += 1
        else:
            result.templates += one.templates
    return result


def _ingest_one(parsed: ParsedWebhook, kind: str, wamid: str) -> IngestResult | None:
    try:
        return webhook_ingest(parsed=parsed)
    except RETRY_LATER:
        raise
    except Exception as exc:
        # The class only: a database error's message can quote the customer's text.
        logger.error("webhook_item_failed kind=%s wamid=%s error=%s", kind, wamid[:256], type(exc).__name__)
        return None


def _contact_key(message: ParsedMessage) -> ContactIdentity:
    return ContactIdentity(message.phone_number_id, message.wa_id, message.user_id)


def _upsert_contacts(messages: list[ParsedMessage]) -> dict[ContactIdentity, Contact]:
    """Create missing contacts and move `last_inbound_at` forward only (never back), in three statements
    (more only when a contact learns a BSUID change or two contacts turn out to be one customer)."""
    newest: dict[ContactIdentity, ParsedMessage] = {}
    for message in messages:
        key = _contact_key(message)
        if key not in newest or message.timestamp >= newest[key].timestamp:
            newest[key] = message
    now = timezone.now()
    contacts, _ = contacts_find_or_create(
        identities=newest,
        initial={
            key: {"profile_name": m.profile_name, "last_inbound_at": m.timestamp} for key, m in newest.items()
        },
    )
    # One person can arrive under two keys in one POST (by number, and by user id alone): one update each.
    groups: dict[int, list[ParsedMessage]] = {}
    by_pk: dict[int, Contact] = {}
    for key, message in newest.items():
        contact = contacts[key]
        by_pk[contact.pk] = contact
        groups.setdefault(contact.pk, []).append(message)
    updates: list[Contact] = []
    for pk, group in sorted(groups.items()):
        contact = by_pk[pk]
        latest = max(group, key=lambda m: m.timestamp)
        update = Contact(pk=pk, updated_at=now, wa_id=contact.wa_id, user_id=contact.user_id)
        update.profile_name = _newer_name(latest)
        update.last_inbound_at = _latest(latest.timestamp)
        updates.append(update)
    Contact.objects.bulk_update(
        updates, ["profile_name", "last_inbound_at", "wa_id", "user_id", "updated_at"]
    )
    return contacts


def _settled_user_id_changes(messages: list[ParsedMessage]) -> list[ParsedMessage]:
    """A `user_changed_user_id` message whose contact already carries the new BSUID (a redelivery) belongs to
    that contact: without this, its old BSUID would create a new contact."""
    changes = [m for m in messages if m.new_user_id and m.user_id]
    if not changes:
        return messages
    held = set(
        Contact.objects.filter(
            phone_number_id__in={m.phone_number_id for m in changes},
            user_id__in={u for m in changes for u in (m.user_id, m.new_user_id)},
        ).values_list("phone_number_id", "user_id")
    )
    return [
        replace(m, user_id=m.new_user_id, new_user_id=None)
        if m.new_user_id
        and (m.phone_number_id, m.user_id) not in held
        and (m.phone_number_id, m.new_user_id) in held
        else m
        for m in messages
    ]


def _change_user_ids(messages: list[ParsedMessage], contacts: dict[ContactIdentity, Contact]) -> None:
    """Apply `user_changed_user_id` system messages, oldest first, once their messages are stored (a contact
    the re-key merges away takes its new messages along)."""
    changes = [
        (contacts[_contact_key(m)], m.new_user_id)
        for m in sorted(messages, key=lambda m: m.timestamp)
        if m.new_user_id
    ]
    if changes:
        contacts_change_user_id(changes=changes)


def _newer_name(message: ParsedMessage) -> Case | F:
    """The message's profile name, unless the row already holds a newer message's (or this one has none).

    Decided in the database on the row's current `last_inbound_at`, like `_latest`: an older message redelivered
    later, or a POST racing a newer one, cannot move the name back.
    """
    if not message.profile_name:
        return F("profile_name")
    return Case(
        When(
            Q(last_inbound_at__isnull=True) | Q(last_inbound_at__lte=message.timestamp),
            then=Value(message.profile_name),
        ),
        default=F("profile_name"),
    )


def _latest(timestamp: datetime) -> Greatest:
    # Computed in the database so that two POSTs racing for one contact cannot move it backwards.
    return Greatest(Coalesce(F("last_inbound_at"), Value(timestamp)), Value(timestamp))


def _store_messages(
    messages: list[ParsedMessage], contacts: dict[ContactIdentity, Contact]
) -> tuple[int, int]:
    existing = set(
        InboundMessage.objects.filter(wamid__in=[m.wamid for m in messages]).values_list("wamid", flat=True)
    )
    InboundMessage.objects.bulk_create(
        [
            InboundMessage(
                wamid=m.wamid,
                contact=contacts[_contact_key(m)],
                type=m.type,
                text=m.text,
                needs_reply=m.needs_reply,
                timestamp=m.timestamp,
                raw=m.raw,
                **ingest_sql.media_fields(m),
            )
            for m in messages
            if m.wamid not in existing
        ],
        ignore_conflicts=True,
    )
    stored = InboundMessage.objects.filter(wamid__in=[m.wamid for m in messages if m.wamid not in existing])
    jobs = outbound_jobs_enqueue(messages=stored.only("pk", "contact_id", "needs_reply"))
    return len(messages) - len(existing), jobs


def outbound_jobs_enqueue(*, messages: Iterable[InboundMessage]) -> int:
    """Create one PENDING job per message that needs a reply; a message that already has one gets nothing."""
    now = timezone.now()
    jobs = [
        OutboundJob(contact_id=m.contact_id, inbound_message_id=m.pk, next_attempt_at=now)
        for m in messages
        if m.needs_reply
    ]
    # The UNIQUE inbound_message makes concurrent redeliveries of the same POST create one job, not two.
    created = OutboundJob.objects.bulk_create(jobs, ignore_conflicts=True)
    return len(created)
