"""A person takes a conversation over from the bot, and gives it back: pause, resume, staff replies, handoffs.

The contact's bot state lives on `Contact` (`bot_paused_at`, `bot_paused_by`, `bot_pause_reason`,
`bot_human_at`, `handoff_requested_at`). While it is paused, the contact's bot replies are held: no claim takes
them (`OutboundJobQuerySet.claimable`), a worker that claimed one just before gives it back before asking the
model (`mark_held`), and one already generated is refused in the very UPDATE that starts its send
(`mark_send_started`), ending HANDED_OFF. Staff replies and the one handoff message are never held.

A pause ends by a staff action, or by itself OUTBOUND_HANDOFF_HOURS after the last human activity (0: never).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from outbound.hot_reads import folded_interactive_payloads
from outbound.models import BotPauseReason, Contact, JobChanged, OutboundJob, bot_paused_q
from outbound.replies import WHATSAPP_TEXT_LIMIT
from outbound.usage import TokenUsage
from outbound.vocabulary import is_handoff_tap
from outbound.window import is_window_open

logger = logging.getLogger(__name__)


class StaffReplyRefused(Exception):
    """A staff reply that cannot be queued; the message says why, in words for the admin."""


@dataclass(frozen=True)
class PauseResult:
    changed: bool
    # Bot replies already generated when the person took over: never sent (HANDED_OFF).
    handed_off: int = 0


def contact_bot_pause(
    *,
    contact: Contact,
    reason: str,
    by: Any = None,
    now: datetime | None = None,
    waiting_since: datetime | None = None,
) -> PauseResult:
    """Pause the bot for a contact whose bot is active; a paused one is left as it is (`changed` False).

    The check and the write are one conditional UPDATE, so two handoffs racing pause once: exactly one of
    them sends the handoff message. Bot replies already generated and not yet sent are handed off.
    """
    now = now or timezone.now()
    with transaction.atomic():
        changed = (
            Contact.objects.filter(pk=contact.pk)
            .exclude(bot_paused_q(now=now))
            .update(
                bot_paused_at=now,
                bot_paused_by=by,
                bot_pause_reason=reason,
                bot_human_at=now,
                handoff_requested_at=waiting_since,
                updated_at=now,
            )
        )
        if not changed:
            return PauseResult(changed=False)
        handed_off = _settle_open_bot_replies(
            contact_id=contact.pk,
            statuses=(OutboundJob.Status.READY_TO_SEND,),
            why=f"the bot was paused ({BotPauseReason(reason).label}) before this reply went out",
            waiting=True,
        )
    contact.refresh_from_db()
    logger.info("bot_paused contact_id=%s reason=%s by=%s", contact.pk, reason, getattr(by, "pk", None))
    return PauseResult(changed=True, handed_off=handed_off)


def contact_bot_resume(*, contact: Contact, by: Any = None, now: datetime | None = None) -> bool:
    """Give the conversation back to the bot; False when it was not paused.

    Customer messages that arrived during the pause and that nobody answered are held jobs: from now on the
    worker answers them (in one reply).
    """
    now = now or timezone.now()
    changed = (
        Contact.objects.filter(pk=contact.pk, bot_paused_at__isnull=False).update(**_ACTIVE, updated_at=now)
        == 1
    )
    if changed:
        contact.refresh_from_db()
        logger.info("bot_resumed contact_id=%s by=%s", contact.pk, getattr(by, "pk", None))
    return changed


def contacts_bot_resume_expired(*, now: datetime | None = None, hours: int | None = None) -> int:
    """Clear the pauses OUTBOUND_HANDOFF_HOURS past their last human activity (0 hours: none ever expire).

    The pause already stopped holding jobs back when it expired (`bot_paused_q` reads the clock); this makes
    the contact's page and the waiting list say so too.
    """
    now = now or timezone.now()
    hours = settings.OUTBOUND_HANDOFF_HOURS if hours is None else hours
    if hours <= 0:
        return 0
    expired = Contact.objects.filter(
        bot_paused_at__isnull=False, bot_human_at__lte=now - timedelta(hours=hours)
    )
    ids = list(expired.values_list("pk", flat=True)[:1000])
    if not ids:
        return 0
    count = expired.filter(pk__in=ids).update(**_ACTIVE, updated_at=now)
    logger.info("bot_resumed_after_quiet count=%s hours=%s contact_ids=%s", count, hours, ids[:20])
    return count


def contact_staff_reply(
    *,
    contact: Contact,
    author: Any,
    text: str = "",
    template: bool = False,
    now: datetime | None = None,
) -> OutboundJob:
    """Queue a staff member's reply (or, outside the 24-hour window, the approved template) and pause the bot.

    The job is READY_TO_SEND with the staff text as its content: the worker claims, fences, rate-limits,
    window-checks and sends it like any reply. The contact's held bot replies are settled HANDED_OFF (a person
    answered them). Raises StaffReplyRefused with the reason when it cannot be queued.
    """
    now = now or timezone.now()
    text = text.strip()
    in_window = is_window_open(
        last_inbound_at=contact.last_inbound_at,
        now=now,
        margin_seconds=settings.WHATSAPP_WINDOW_MARGIN_SECONDS,
    )
    if contact.opted_out_at is not None:
        raise StaffReplyRefused(
            "the customer opted out (STOP): opt them back in first, only if they asked you to"
        )
    if template:
        if not settings.WHATSAPP_TEMPLATE_NAME:
            raise StaffReplyRefused("no template is configured (WHATSAPP_TEMPLATE_NAME)")
        text = ""
    elif not text:
        raise StaffReplyRefused("the reply is empty")
    elif len(text) > WHATSAPP_TEXT_LIMIT:
        raise StaffReplyRefused(
            f"the reply is {len(text)} characters; WhatsApp takes at most {WHATSAPP_TEXT_LIMIT}"
        )
    elif not in_window:
        raise StaffReplyRefused(
            "the customer's 24-hour window has closed: free text cannot be sent, only the approved template"
        )
    with transaction.atomic():
        # The contact row is locked first, as a claim does, so a concurrent pause or resume waits for us.
        locked = Contact.objects.select_for_update().get(pk=contact.pk)
        job = OutboundJob.objects.create(
            contact=locked,
            kind=OutboundJob.Kind.STAFF,
            author=author,
            status=OutboundJob.Status.READY_TO_SEND,
            content=text,
            send_as=OutboundJob.SendAs.TEMPLATE if template else OutboundJob.SendAs.TEXT,
            next_attempt_at=now,
        )
        if locked.bot_paused(now=now):
            Contact.objects.filter(pk=locked.pk).update(
                bot_human_at=now, handoff_requested_at=None, updated_at=now
            )
        else:
            Contact.objects.filter(pk=locked.pk).update(
                bot_paused_at=now,
                bot_paused_by=author,
                bot_pause_reason=BotPauseReason.STAFF_REPLY,
                bot_human_at=now,
                handoff_requested_at=None,
                updated_at=now,
            )
        _settle_open_bot_replies(
            contact_id=locked.pk,
            statuses=OutboundJob.CLAIMABLE_STATUSES,
            why=f"answered by staff (job {job.pk})",
        )
    contact.refresh_from_db()
    logger.info(
        "staff_reply_queued job_id=%s contact_id=%s author_id=%s send_as=%s",
        job.pk,
        contact.pk,
        getattr(author, "pk", None),
        job.send_as,
    )
    return job


def contact_answered_by_person(*, contact_id: int, at: datetime, why: str) -> None:
    """A person answered outside the admin (the WhatsApp Business app): pause the bot and settle held replies."""
    now = timezone.now()
    paused = Contact.objects.filter(pk=contact_id).filter(bot_paused_q(now=now))
    if not paused.update(bot_human_at=now, handoff_requested_at=None, updated_at=now):
        Contact.objects.filter(pk=contact_id).update(
            bot_paused_at=now,
            bot_paused_by=None,
            bot_pause_reason=BotPauseReason.BUSINESS_APP,
            bot_human_at=now,
            handoff_requested_at=None,
            updated_at=now,
        )
    _settle_open_bot_replies(contact_id=contact_id, statuses=OutboundJob.CLAIMABLE_STATUSES, why=why)
    logger.info("bot_paused contact_id=%s reason=%s at=%s", contact_id, BotPauseReason.BUSINESS_APP, at)


def outbound_job_step_back(*, job: OutboundJob, token: uuid.UUID, why: str) -> None:
    """A worker found the bot paused after claiming `job`: hold it (not generated yet) or hand it off."""
    if job.status == OutboundJob.Status.GENERATING and not job.content:
        job.mark_held(token=token)
        return
    job.mark_handed_off(token=token, why=why)
    _note_waiting(job)


def outbound_job_asks_for_a_person(*, job: OutboundJob, folded_taps: list[Any] | None = None) -> bool:
    """Whether the customer tapped "Talk to a person" in the messages this job answers (its own, or one
    folded into it), so that the tap hands off even when the customer kept typing after it.

    `folded_taps`: the folded interactive messages' payloads when the caller has read them already
    (`hot_reads.bot_job_facts`); else they are read here."""
    if job.inbound_message is not None and is_handoff_tap(job.inbound_message.raw):
        return True
    if folded_taps is None:
        folded_taps = folded_interactive_payloads(job.pk)
    return any(is_handoff_tap(raw) for raw in folded_taps)


def outbound_job_hand_off(
    *,
    job: OutboundJob,
    token: uuid.UUID,
    reason: str,
    message: str,
    error: str | None = None,
    now: datetime | None = None,
    usage: TokenUsage | None = None,
) -> bool:
    """Hand the conversation to a person from a claimed bot job (the model asked, the customer tapped the
    button, or the model kept failing). True: the job now carries the handoff message, to be sent.

    The pause is a conditional UPDATE: when the bot was already paused (someone else handed off first),
    this job ends HANDED_OFF and sends nothing, so the customer gets the handoff message once.
    """
    now = now or timezone.now()
    answered = job.inbound_message.timestamp if job.inbound_message is not None else now
    contact = Contact(pk=job.contact_id)
    if not contact_bot_pause(contact=contact, reason=reason, now=now, waiting_since=answered).changed:
        job.mark_handed_off(token=token, why="the conversation was already handed to a person", usage=usage)
        return False
    if not message:
        job.mark_handed_off(
            token=token,
            why=f"{error or ''} handed to a person; OUTBOUND_HANDOFF_MESSAGE is empty",
            usage=usage,
        )
        return False
    job.mark_generated(
        token=token,
        content=message,
        send_as=OutboundJob.SendAs.TEXT,
        kind=OutboundJob.Kind.HANDOFF,
        error=error,
        log={"handoff": reason},
        usage=usage,
    )
    return True


def _settle_open_bot_replies(*, contact_id: int, statuses: Any, why: str, waiting: bool = False) -> int:
    """Hand off the contact's open bot replies that no worker holds (a claimed one is stopped before its send).

    `waiting`: nobody answered those messages; the oldest marks how long the customer has been waiting.
    """
    settled = 0
    jobs = (
        OutboundJob.objects.filter(
            contact_id=contact_id, kind=OutboundJob.Kind.BOT, status__in=statuses, claim_token__isnull=True
        )
        .select_related("inbound_message")
        .order_by("pk")
    )
    for job in jobs:
        try:
            job.mark_handed_off(token=None, why=why)
        except JobChanged:
            continue
        settled += 1
        if waiting:
            _note_waiting(job)
    return settled


def _note_waiting(job: OutboundJob) -> None:
    """The customer's message of a handed-off job is waiting for a person: remember since when (the oldest)."""
    if job.inbound_message_id is None:
        return
    at = OutboundJob.objects.filter(pk=job.pk).values_list("inbound_message__timestamp", flat=True).get()
    Contact.objects.filter(pk=job.contact_id, bot_paused_at__isnull=False).filter(
        Q(handoff_requested_at__isnull=True) | Q(handoff_requested_at__gt=at)
    ).update(handoff_requested_at=at)


_ACTIVE: dict[str, Any] = {
    "bot_paused_at": None,
    "bot_paused_by": None,
    "bot_pause_reason": "",
    "bot_human_at": None,
    "handoff_requested_at": None,
}
