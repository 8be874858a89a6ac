"""Read-only questions: the jobs overview for the admin's index page, a contact's conversation for staff, and
the conversation and system prompt a reply is generated from.

Selectors only read (HackSoft's split): state changes stay in `outbound/services/`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from django.db.models import OuterRef, Q, Subquery
from django.db.models.functions import Coalesce, Least
from django.utils import timezone

from outbound.hot_reads import conversation_rows, saved_system_prompt
from outbound.models import (
    Contact,
    EchoMessage,
    InboundMessage,
    OutboundJob,
    WorkerHeartbeat,
    bot_paused_q,
)
from outbound.replies import Turn


@dataclass(frozen=True)
class JobsOverview:
    """What staff see first: how many jobs are in each status, and whether the worker keeps up."""

    counts: dict[str, int]
    # SENT's count is PostgreSQL's estimate (a year's jobs: see OutboundJobQuerySet.counts_by_status).
    sent_estimated: bool
    oldest_due_at: datetime | None
    oldest_due_age: timedelta | None
    last_worker_run: WorkerHeartbeat | None
    last_worker_run_age: timedelta | None

    @property
    def failed(self) -> int:
        return self.counts[OutboundJob.Status.FAILED]

    @property
    def oldest_due_age_display(self) -> str:
        return format_age(self.oldest_due_age) if self.oldest_due_age is not None else ""

    @property
    def last_worker_run_age_display(self) -> str:
        return format_age(self.last_worker_run_age) if self.last_worker_run_age is not None else ""

    @property
    def rows(self) -> list[tuple[str, str, int | str]]:
        """(status, its label, count) in the state machine's order; an estimated count reads "≈ 980,000"."""
        return [
            (
                status.value,
                status.label,
                f"\u2248 {self.counts[status.value]:,}"
                if self.sent_estimated and status == OutboundJob.Status.SENT
                else self.counts[status.value],
            )
            for status in OutboundJob.Status
        ]


def outbound_jobs_overview(*, now: datetime | None = None) -> JobsOverview:
    """Count jobs by status (every status present, zeros included) and find the oldest job still due."""
    now = now or timezone.now()
    counts, sent_estimated = OutboundJob.objects.counts_by_status()
    oldest = (
        OutboundJob.objects.due(now)
        .not_held(now)
        .order_by("next_attempt_at")
        .values_list("next_attempt_at", flat=True)
    )
    oldest_due_at = oldest.first()
    heartbeat = WorkerHeartbeat.objects.order_by("-last_finished_at").first()
    return JobsOverview(
        counts=counts,
        sent_estimated=sent_estimated,
        oldest_due_at=oldest_due_at,
        oldest_due_age=now - oldest_due_at if oldest_due_at is not None else None,
        last_worker_run=heartbeat,
        last_worker_run_age=now - heartbeat.last_finished_at if heartbeat is not None else None,
    )


def format_age(age: timedelta) -> str:
    """A short human duration: "45 s", "7 min", "3 h 5 min", "2 days 4 h"."""
    seconds = max(int(age.total_seconds()), 0)
    if seconds < 60:
        return f"{seconds} s"
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if seconds < 3600:
        return f"{minutes} min"
    if seconds < 86400:
        return f"{hours} h {minutes % 60} min"
    return f"{days} day{'' if days == 1 else 's'} {hours % 24} h"


@dataclass(frozen=True)
class ConversationEntry:
    """One message of a conversation as staff read it: the customer's (in), or ours (out): the bot's, a staff
    member's, the handoff message, or one the owner sent from the WhatsApp Business app (an echo)."""

    at: datetime
    direction: Literal["in", "out"]
    text: str
    detail: str
    who: str = ""
    inbound: InboundMessage | None = None
    job: OutboundJob | None = None
    echo: EchoMessage | None = None


def contact_conversation(
    *, contact_id: int, around: datetime | None = None, per_side: int = 15
) -> list[ConversationEntry]:
    """The contact's messages both ways in time order: the newest ones, or those around `around`.

    Each direction is limited separately (`per_side` before and after `around`), so a long history costs a
    fixed number of queries and rows.
    """
    inbound = InboundMessage.objects.filter(contact_id=contact_id)
    jobs = (
        OutboundJob.objects.filter(contact_id=contact_id)
        .select_related("author")
        # Our reply's place in the conversation is when it went out; before that, when the job was made.
        .annotate(at=Coalesce("sent_at", "created_at"))
    )
    echo_rows = EchoMessage.objects.filter(contact_id=contact_id)
    if around is None:
        messages = list(inbound.order_by("-timestamp", "-pk")[:per_side])
        replies = list(jobs.order_by("-at", "-pk")[:per_side])
        echoes = list(echo_rows.order_by("-timestamp", "-pk")[:per_side])
    else:
        messages = [
            *inbound.filter(timestamp__lte=around).order_by("-timestamp", "-pk")[:per_side],
            *inbound.filter(timestamp__gt=around).order_by("timestamp", "pk")[:per_side],
        ]
        replies = [
            *jobs.filter(at__lte=around).order_by("-at", "-pk")[:per_side],
            *jobs.filter(at__gt=around).order_by("at", "pk")[:per_side],
        ]
        echoes = [
            *echo_rows.filter(timestamp__lte=around).order_by("-timestamp", "-pk")[:per_side],
            *echo_rows.filter(timestamp__gt=around).order_by("timestamp", "pk")[:per_side],
        ]
    entries = [
        ConversationEntry(
            at=m.timestamp,
            direction="in",
            text=m.text or f"[{m.type}]",
            detail=m.type,
            who="customer",
            inbound=m,
        )
        for m in messages
    ]
    entries += [
        ConversationEntry(
            at=job.at,
            direction="out",
            text=_reply_text(job),
            detail=_reply_detail(job),
            who=_reply_author(job),
            job=job,
        )
        for job in replies
    ]
    entries += [
        ConversationEntry(
            at=e.timestamp,
            direction="out",
            text=e.text,
            detail="sent from the WhatsApp Business app",
            who="business app",
            echo=e,
        )
        for e in echoes
    ]
    # Inbound first on a tie: a reply never precedes the message it answers.
    entries.sort(key=lambda e: (e.at, e.direction != "in"))
    return entries


def _reply_text(job: OutboundJob) -> str:
    if job.content:
        return job.content
    if job.send_as == OutboundJob.SendAs.TEMPLATE:
        return "[the approved template: the 24-hour window had closed]"
    return "[no reply generated yet]"


def _reply_author(job: OutboundJob) -> str:
    if job.kind == OutboundJob.Kind.STAFF:
        return f"staff: {job.author or 'a deleted user'}"
    if job.kind in (OutboundJob.Kind.HANDOFF, OutboundJob.Kind.OPT_OUT, OutboundJob.Kind.OPT_IN):
        return str(OutboundJob.Kind(job.kind).label)
    return "bot"


def _reply_detail(job: OutboundJob) -> str:
    detail = job.get_status_display()
    if job.delivery_status:
        detail += f", {job.get_delivery_status_display()}"
    return detail


def conversation_for(
    *, job: OutboundJob, limit: int, images: Mapping[int, tuple[str, ...]] | None = None
) -> list[Turn]:
    """The contact's recent messages up to the one this job answers, inbound and outbound, oldest first.

    `images`: inbound message id → the images (data URLs) the media phase downloaded for this call; they go
    with that message's turn. Older images are only their stored description.
    """
    images = images or {}
    answered = job.inbound_message
    if answered is None:
        raise ValueError(f"job {job.pk} answers no inbound message: only bot replies are generated")
    # One hand-written statement (outbound.hot_reads): both sides, already in the conversation's order.
    rows = conversation_rows(contact_id=job.contact_id, until=answered.timestamp, limit=limit)
    turns = [
        Turn("user", text, images=images.get(pk, ()) if pk is not None else ())
        if role == "user"
        else Turn("assistant", text)
        for role, text, pk in rows
    ]
    selected = turns[-limit:]
    # The model must answer the customer, so the conversation ends on their side. A reply of ours sent after
    # the answered message arrived (it answered an earlier one) still belongs in the context: it goes just
    # before the answered message, so the model knows what it already said.
    late_replies: list[Turn] = []
    while selected and selected[-1].role != "user":
        late_replies.insert(0, selected.pop())
    if selected and late_replies:
        selected[-1:-1] = late_replies
    return selected[-limit:]


def reply_system_prompt(*, default: str) -> str:
    """The prompt staff saved in the admin's reply settings, else `default` (from the settings or the file)."""
    saved = saved_system_prompt()
    return saved.strip() if saved and saved.strip() else default


@dataclass(frozen=True)
class WaitingConversation:
    """A conversation handed to a person, with a customer message nobody has answered yet."""

    contact: Contact
    since: datetime
    waited: timedelta
    last_message: str

    @property
    def waited_display(self) -> str:
        return format_age(self.waited)


def contacts_waiting_for_person(*, now: datetime | None = None, limit: int = 20) -> list[WaitingConversation]:
    """Paused conversations whose customer waits for a person, oldest wait first.

    A customer waits since they asked for a person (`handoff_requested_at`, cleared by a staff reply), or
    since their oldest message held during the pause (a held bot reply: nobody answered it).
    """
    now = now or timezone.now()
    held = OutboundJob.objects.held(now).filter(contact=OuterRef("pk"))
    oldest_held = held.order_by("inbound_message__timestamp").values("inbound_message__timestamp")[:1]
    last_text = (
        InboundMessage.objects.filter(contact=OuterRef("pk")).order_by("-timestamp", "-pk").values("text")[:1]
    )
    contacts = (
        Contact.objects.filter(bot_paused_q(now=now))
        .annotate(held_since=Subquery(oldest_held), last_text=Subquery(last_text))
        .filter(Q(handoff_requested_at__isnull=False) | Q(held_since__isnull=False))
        # SQLite's LEAST is NULL when either side is; PostgreSQL's skips NULLs: the Coalesce makes both agree.
        .annotate(
            since=Coalesce(Least("handoff_requested_at", "held_since"), "handoff_requested_at", "held_since")
        )
        .order_by("since", "pk")[:limit]
    )
    return [
        WaitingConversation(contact=c, since=c.since, waited=now - c.since, last_message=c.last_text or "")
        for c in contacts
    ]
