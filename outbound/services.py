"""Outbound job operations: the only place where errors become state transitions.

Every operation is `outbound_job_<action>` (one job) or `outbound_jobs_<action>` (many).
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models import Count, Q
from django.utils import timezone

from outbound.exceptions import (
    ConfigurationError,
    GraphConnectError,
    GraphError,
    GraphResponseLost,
    ReplyConfigurationError,
    ReplyPermanentError,
    ReplyTransientError,
)
from outbound.models import JobChanged, OutboundJob
from outbound.ratelimit import SendRateLimiter
from outbound.replies import OfflineReplyGenerator, OpenAIReplyGenerator, ReplyGenerator, Turn
from outbound.retry import (
    Action,
    backoff_seconds,
    graph_error_action,
    next_attempt_at,
    pair_rate_limit_seconds,
)
from outbound.whatsapp import Recipient, Sender, SendResult, WhatsAppClient
from webhooks.models import Contact, InboundMessage
from webhooks.payloads import ParsedStatus

logger = logging.getLogger(__name__)

WINDOW = timedelta(hours=24)
# The limiter counts sends by our clock when it lets them go; Meta counts them by its clock when they arrive.
# Between the two lie a database write, a possible new connection and the thread scheduler, tens of ms apart
# from one send to the next, so a window of exactly 1 s let bursts of N+25% land inside one of Meta's seconds
# (bench.run_all, 20/s limit: 25-29 sends in one second). 100 ms of headroom absorbs that jitter.
SEND_RATE_WINDOW_SECONDS = 1.1
DEFAULT_SYSTEM_PROMPT = (
    "You are the WhatsApp assistant of a small business. Answer the customer's latest messages briefly and "
    "politely in their language. You can only read text: if they sent a photo, voice note, video or file, say "
    "so and ask them to write it instead."
)


class Outcome:
    """What processing one claimed job ended in (the run's summary counts these)."""

    GENERATED = "generated"
    SENT = "sent"
    RETRIED = "retried"
    FAILED = "failed"
    UNCERTAIN = "uncertain"
    LOST = "lost"


@dataclass
class OutboundConfig:
    """Everything a worker needs to process jobs; built from settings once per run."""

    sender: Sender
    generator: ReplyGenerator
    rate_limiter: SendRateLimiter
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    template_name: str = ""
    template_language: str = "en_US"
    template_body_parameters: list[str] = field(default_factory=list)
    max_attempts: int = 5
    retry_base_seconds: float = 30.0
    retry_max_seconds: float = 3600.0
    window_margin_seconds: int = 300
    history_messages: int = 20
    secrets: tuple[str, ...] = ()


def outbound_config_from_settings() -> OutboundConfig:
    """Build the sender, the reply generator and the policy numbers from Django settings."""
    from outbound.console import ConsoleSender

    sender: Sender
    if settings.OUTBOUND_SENDER == "console":
        sender = ConsoleSender(
            phone_number_id=settings.WHATSAPP_PHONE_NUMBER_ID.strip(" ,") or "PHONE_NUMBER_ID"
        )
    else:
        sender = WhatsAppClient(
            access_token=settings.WHATSAPP_ACCESS_TOKEN,
            phone_number_id=settings.WHATSAPP_PHONE_NUMBER_ID.strip(" ,"),
            base_url=settings.WHATSAPP_GRAPH_URL,
            api_version=settings.WHATSAPP_API_VERSION,
            timeout=settings.WHATSAPP_TIMEOUT,
        )
    generator: ReplyGenerator
    if settings.OUTBOUND_REPLY_GENERATOR == "offline":
        generator = OfflineReplyGenerator()
    else:
        generator = OpenAIReplyGenerator.from_settings(
            api_key=settings.OPENAI_API_KEY,
            base_url=settings.OPENAI_BASE_URL,
            model=settings.OPENAI_MODEL,
            timeout=settings.OPENAI_TIMEOUT,
        )
    return OutboundConfig(
        sender=sender,
        generator=generator,
        rate_limiter=SendRateLimiter(settings.OUTBOUND_MAX_SENDS_PER_SECOND, window=SEND_RATE_WINDOW_SECONDS),
        system_prompt=system_prompt_from_settings(),
        template_name=settings.WHATSAPP_TEMPLATE_NAME,
        template_language=settings.WHATSAPP_TEMPLATE_LANGUAGE,
        template_body_parameters=list(settings.WHATSAPP_TEMPLATE_BODY_PARAMETERS),
        max_attempts=settings.OUTBOUND_MAX_ATTEMPTS,
        retry_base_seconds=settings.OUTBOUND_RETRY_BASE_SECONDS,
        retry_max_seconds=settings.OUTBOUND_RETRY_MAX_SECONDS,
        window_margin_seconds=settings.WHATSAPP_WINDOW_MARGIN_SECONDS,
        history_messages=settings.OPENAI_HISTORY_MESSAGES,
        secrets=tuple(
            s
            for s in (settings.WHATSAPP_ACCESS_TOKEN, settings.OPENAI_API_KEY, settings.WHATSAPP_APP_SECRET)
            if s
        ),
    )


def system_prompt_from_settings() -> str:
    """OPENAI_SYSTEM_PROMPT if set, else the prompt file, else a sensible default."""
    if settings.OPENAI_SYSTEM_PROMPT:
        return str(settings.OPENAI_SYSTEM_PROMPT)
    path = Path(settings.OPENAI_SYSTEM_PROMPT_FILE)
    if path.is_file():
        return path.read_text(encoding="utf-8").strip() or DEFAULT_SYSTEM_PROMPT
    return DEFAULT_SYSTEM_PROMPT


def is_window_open(*, last_inbound_at: datetime | None, now: datetime, margin_seconds: int = 0) -> bool:
    """Whether a free-form reply is still allowed: less than 24 h (minus a safety margin) since the customer wrote."""
    if last_inbound_at is None:
        return False
    return now - last_inbound_at < WINDOW - timedelta(seconds=margin_seconds)


# ---------------------------------------------------------------------------------------------- enqueue
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


# ---------------------------------------------------------------------------------------------- claiming
def outbound_jobs_claim(
    *, limit: int, worker_id: str, now: datetime | None = None, exclude_ids: Iterable[int] = ()
) -> list[OutboundJob]:
    """Claim up to `limit` due jobs, at most one per contact, in one short transaction.

    PostgreSQL: the due rows and their contacts are locked with SKIP LOCKED, so concurrent workers never
    wait for each other and never take the same job; the contact lock makes "no other job of this contact
    in flight" a check that cannot race. SQLite: the IMMEDIATE transaction serialises claimers, and each
    claim is a compare-and-set UPDATE on an unclaimed row. No lock outlives this function.
    """
    now = now or timezone.now()
    exclude = set(exclude_ids)
    claimed: list[OutboundJob] = []
    with transaction.atomic():
        candidates = list(
            OutboundJob.objects.claimable(now)
            .exclude(pk__in=exclude)
            .select_for_update(skip_locked=True)
            .order_by("next_attempt_at", "pk")
            .only("pk", "contact_id")[: limit * 4]
        )
        contact_ids = list(dict.fromkeys(job.contact_id for job in candidates))
        if not contact_ids:
            return []
        locked = set(
            Contact.objects.filter(pk__in=contact_ids)
            .select_for_update(skip_locked=True)
            .values_list("pk", flat=True)
        )
        # Again under the contact locks: a claim committed since the candidates were read is seen now.
        busy = set(
            OutboundJob.objects.in_flight().filter(contact_id__in=locked).values_list("contact_id", flat=True)
        )
        eligible = [c for c in contact_ids if c in locked and c not in busy][:limit]
        open_jobs = _lock_open_jobs(contact_ids=eligible)
        for contact_id in eligible:
            job = _fold(open_jobs.get(contact_id, []))
            if job is None or job.next_attempt_at > now or job.pk in exclude:
                continue
            try:
                job.mark_claimed(token=uuid.uuid4(), worker_id=worker_id, now=now)
            except JobChanged:
                continue
            claimed.append(job)
    return claimed


def outbound_jobs_claimable_exist(*, exclude_ids: Iterable[int] = ()) -> bool:
    """Whether a due job is waiting that no worker holds a job of its contact for.

    A claim can come back empty while such jobs exist, when another claimer's transaction held their rows
    for a moment; a run must not mistake that for "nothing is due".
    """
    return OutboundJob.objects.claimable().exclude(pk__in=set(exclude_ids)).exists()


def _lock_open_jobs(*, contact_ids: list[int]) -> dict[int, list[OutboundJob]]:
    """Lock every open, unclaimed job of these contacts, oldest message first, in two statements.

    Only rows this transaction can lock without waiting are taken (another claimer may hold some as its
    candidates). A contact with any row held elsewhere is left out for this round rather than risk a
    deadlock, or folding into the wrong job.
    """
    open_jobs = OutboundJob.objects.filter(
        contact_id__in=contact_ids, status__in=OutboundJob.CLAIMABLE_STATUSES, claim_token__isnull=True
    )
    expected = dict(
        open_jobs.order_by().values("contact_id").annotate(n=Count("pk")).values_list("contact_id", "n")
    )
    by_contact: dict[int, list[OutboundJob]] = {}
    for job in (
        open_jobs.select_for_update(skip_locked=True, of=("self",))
        .select_related("inbound_message")
        .order_by("contact_id", "inbound_message__timestamp", "inbound_message_id")
    ):
        by_contact.setdefault(job.contact_id, []).append(job)
    return {c: jobs for c, jobs in by_contact.items() if len(jobs) == expected.get(c)}


def _fold(open_jobs: list[OutboundJob]) -> OutboundJob | None:
    """Keep a contact's newest open job and supersede the older ones: one reply answers them all."""
    if not open_jobs:
        return None
    newest = open_jobs[-1]
    for older in open_jobs[:-1]:
        older.mark_superseded(by=newest)
    return newest


# ---------------------------------------------------------------------------------------------- recovery
@dataclass
class RecoveryCounts:
    released: int = 0
    unsettled: int = 0
    reopened_for_template: int = 0

    @property
    def total(self) -> int:
        return self.released + self.unsettled + self.reopened_for_template


def outbound_jobs_recover(
    *, stale_seconds: int, max_attempts: int, now: datetime | None = None
) -> RecoveryCounts:
    """Release claims whose worker is presumed dead, and reopen text replies Meta failed with 131047.

    A job whose worker keeps dying (a poison job) is not released forever: at `max_attempts` it is FAILED.
    """
    now = now or timezone.now()
    counts = RecoveryCounts()
    for job in OutboundJob.objects.stale(older_than=now - timedelta(seconds=stale_seconds)).order_by("pk"):
        try:
            if job.status == OutboundJob.Status.READY_TO_SEND and job.send_started_at is not None:
                job.mark_stale_send_unsettled()
                counts.unsettled += 1
                logger.error("stale_send_unsettled job_id=%s handed to staff", job.pk)
            elif job.attempts >= max_attempts:
                job.mark_failed(
                    token=job.claim_token,
                    error=f"attempt={job.attempts} phase=recovery the worker holding this job stopped "
                    f"responding {job.attempts} times; gave up",
                )
                counts.unsettled += 1
            else:
                job.mark_stale_released()
                counts.released += 1
        except JobChanged:
            continue
    for job in OutboundJob.objects.awaiting_template_fallback().order_by("pk"):
        try:
            job.mark_reopened_for_template()
            counts.reopened_for_template += 1
        except JobChanged:
            continue
    return counts


# ---------------------------------------------------------------------------------------------- processing
@dataclass(frozen=True)
class ProcessResult:
    outcome: str
    generated: bool = False


def outbound_job_process(*, job: OutboundJob, config: OutboundConfig) -> ProcessResult:
    """Take one claimed job as far as it goes: generate if needed, then send.

    Raises ConfigurationError (after giving the job back with its attempt refunded) when the fault is ours.
    """
    token = job.claim_token
    if token is None:
        raise ValueError(f"job {job.pk} is not claimed")
    generated = False
    try:
        if job.status == OutboundJob.Status.GENERATING:
            outcome = _generate(job, token, config)
            if outcome != Outcome.GENERATED:
                return ProcessResult(outcome)
            generated = bool(job.content)
        return ProcessResult(_send(job, token, config, allow_template_switch=True), generated)
    except JobChanged as exc:
        # Someone else (stale recovery, a status webhook, staff) moved the job: our result is void.
        logger.warning("job_claim_lost job_id=%s %s", job.pk, exc)
        return ProcessResult(Outcome.LOST, generated)


def outbound_job_crashed(*, job: OutboundJob, error: BaseException, config: OutboundConfig) -> None:
    """Record an unexpected error on the job and give it back (never resending a send that may have gone)."""
    token = job.claim_token
    if token is None:
        return
    line = _error_line(job, "crash", f"{type(error).__name__}: {error}", config)
    try:
        job.refresh_from_db(fields=["status", "claim_token", "send_started_at", "error_log"])
        if job.claim_token != token:
            return
        if job.send_started_at is not None:
            job.mark_send_uncertain(token=token, error=line)
        elif job.attempts >= config.max_attempts:
            job.mark_failed(token=token, error=line)
        else:
            delay = backoff_seconds(
                attempts=job.attempts, base=config.retry_base_seconds, cap=config.retry_max_seconds
            )
            job.mark_retry(
                token=token,
                error=line,
                next_attempt_at=next_attempt_at(now=timezone.now(), delay_seconds=delay),
            )
    except (JobChanged, DatabaseError):
        # The claim stays; stale recovery releases it once the database answers again.
        logger.warning("job_crash_not_recorded job_id=%s", job.pk)


def _generate(job: OutboundJob, token: uuid.UUID, config: OutboundConfig) -> str:
    contact = Contact.objects.get(pk=job.contact_id)
    now = timezone.now()
    if not is_window_open(
        last_inbound_at=contact.last_inbound_at, now=now, margin_seconds=config.window_margin_seconds
    ):
        # No point paying for a reply that cannot be sent: the template goes instead.
        job.mark_generated(
            token=token, content="", send_as=OutboundJob.SendAs.TEMPLATE, log={"in_window": False}
        )
        return Outcome.GENERATED
    conversation = conversation_for(job=job, limit=config.history_messages)
    started = time.monotonic()
    try:
        text = config.generator.generate(system_prompt=config.system_prompt, conversation=conversation)
    except ReplyTransientError as exc:
        return _retry_or_fail(
            job, token, config, phase="generate", error=str(exc), retry_after=exc.retry_after
        )
    except ReplyConfigurationError as exc:
        # Our key or model, not this job: every job would fail alike. Keep it, refund the attempt, stop loudly.
        job.mark_retry(
            token=token,
            error=_error_line(job, "generate", str(exc), config),
            next_attempt_at=timezone.now(),
            refund_attempt=True,
        )
        raise ConfigurationError(
            redact(
                f"OpenAI refused our configuration ({exc}): check {exc.check}; the job was kept",
                config.secrets,
            )
        ) from exc
    except ReplyPermanentError as exc:
        job.mark_failed(token=token, error=_error_line(job, "generate", str(exc), config))
        return Outcome.FAILED
    job.mark_generated(
        token=token,
        content=text,
        send_as=OutboundJob.SendAs.TEXT,
        log={"in_window": True, "duration_ms": int((time.monotonic() - started) * 1000)},
    )
    return Outcome.GENERATED


def _send(job: OutboundJob, token: uuid.UUID, config: OutboundConfig, *, allow_template_switch: bool) -> str:
    contact = Contact.objects.get(pk=job.contact_id)
    in_window = is_window_open(
        last_inbound_at=contact.last_inbound_at,
        now=timezone.now(),
        margin_seconds=config.window_margin_seconds,
    )
    send_as = job.send_as if in_window else OutboundJob.SendAs.TEMPLATE
    if send_as == OutboundJob.SendAs.TEMPLATE and not config.template_name:
        job.mark_failed(
            token=token,
            error=_error_line(
                job,
                "send",
                "the 24-hour window is closed and no template is configured: set "
                "WHATSAPP_TEMPLATE_NAME (and WHATSAPP_TEMPLATE_LANGUAGE) to an approved template",
                config,
            ),
            log={"in_window": in_window},
        )
        return Outcome.FAILED
    config.rate_limiter.acquire()
    job.mark_send_started(token=token, send_as=send_as)
    started = time.monotonic()
    try:
        result = _deliver(job, contact, send_as, config)
    except GraphError as exc:
        return _handle_graph_error(job, token, config, exc, allow_template_switch=allow_template_switch)
    except GraphConnectError as exc:
        return _retry_or_fail(job, token, config, phase="send", error=str(exc))
    except GraphResponseLost as exc:
        job.mark_send_uncertain(
            token=token,
            error=_error_line(
                job,
                "send",
                f"{exc}; the message may have been sent, waiting for Meta's status webhook to settle it",
                config,
            ),
        )
        return Outcome.UNCERTAIN
    job.mark_sent(
        token=token,
        wa_message_id=result.wa_message_id,
        message_status=result.message_status,
        response=result.response,
        log={
            "in_window": in_window,
            "wa_message_id": result.wa_message_id,
            "message_status": result.message_status,
            "duration_ms": int((time.monotonic() - started) * 1000),
        },
    )
    return Outcome.SENT


def _deliver(job: OutboundJob, contact: Contact, send_as: str, config: OutboundConfig) -> SendResult:
    to = Recipient(wa_id=contact.wa_id, user_id=contact.user_id)
    callback_data = f"{job.key}:{send_as.lower()}"
    if send_as == OutboundJob.SendAs.TEMPLATE:
        return config.sender.send_template(
            to=to,
            name=config.template_name,
            language=config.template_language,
            body_parameters=template_parameters(config.template_body_parameters, contact=contact),
            callback_data=callback_data,
        )
    # The claim loaded the inbound message with the job (select_related): no query here.
    reply_to = job.inbound_message.wamid
    return config.sender.send_text(to=to, body=job.content, reply_to=reply_to, callback_data=callback_data)


def _handle_graph_error(
    job: OutboundJob,
    token: uuid.UUID,
    config: OutboundConfig,
    exc: GraphError,
    *,
    allow_template_switch: bool,
) -> str:
    action = graph_error_action(exc)
    line = _error_line(job, "send", exc.describe(), config)
    log: dict[str, object] = {"fbtrace_id": exc.fbtrace_id, "code": exc.code}
    if action is Action.TEMPLATE and job.send_as == OutboundJob.SendAs.TEXT and allow_template_switch:
        job.mark_switch_to_template(token=token, error=line)
        return _send(job, token, config, allow_template_switch=False)
    if action is Action.RETRY:
        return _retry_or_fail(job, token, config, phase="send", error=exc.describe(), log=log)
    if action is Action.PAIR_RATE_LIMIT:
        delay = pair_rate_limit_seconds(attempts=job.attempts, cap=config.retry_max_seconds)
        return _retry_or_fail(job, token, config, phase="send", error=exc.describe(), delay=delay, log=log)
    if action is Action.CONFIGURATION:
        job.mark_retry(token=token, error=line, next_attempt_at=timezone.now(), refund_attempt=True, log=log)
        raise ConfigurationError(
            f"Meta rejected our credentials ({exc.describe()}): check WHATSAPP_ACCESS_TOKEN and its permissions"
            " for WHATSAPP_PHONE_NUMBER_ID; the job was kept"
        )
    job.mark_failed(token=token, error=line, log=log)
    return Outcome.FAILED


def _retry_or_fail(
    job: OutboundJob,
    token: uuid.UUID,
    config: OutboundConfig,
    *,
    phase: str,
    error: str,
    retry_after: float | None = None,
    delay: float | None = None,
    log: dict[str, object] | None = None,
) -> str:
    if job.attempts >= config.max_attempts:
        job.mark_failed(
            token=token,
            error=_error_line(job, phase, f"{error} (gave up after {job.attempts} attempts)", config),
            log=log,
        )
        return Outcome.FAILED
    if delay is None:
        delay = backoff_seconds(
            attempts=job.attempts,
            base=config.retry_base_seconds,
            cap=config.retry_max_seconds,
            retry_after=retry_after,
        )
    job.mark_retry(
        token=token,
        error=_error_line(job, phase, f"{error} (retry in {delay:.0f}s)", config),
        next_attempt_at=next_attempt_at(now=timezone.now(), delay_seconds=delay),
        log=log,
    )
    return Outcome.RETRIED


def _error_line(job: OutboundJob, phase: str, message: str, config: OutboundConfig) -> str:
    return f"attempt={job.attempts} phase={phase} {redact(message, config.secrets)}"


_KEY_LIKE = re.compile(r"\b(sk-[A-Za-z0-9_*\-]{6,}|EAA[A-Za-z0-9]{20,})")


def redact(text: str, secrets: Iterable[str]) -> str:
    """Remove our secrets, and anything shaped like an OpenAI key or a Meta token, from a message."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return _KEY_LIKE.sub("[redacted]", text)


def template_parameters(names: list[str], *, contact: Contact) -> list[str]:
    """Fill the template's body placeholders, in order, from what we know of the contact."""
    values = {"contact_name": contact.profile_name or "there"}
    return [values.get(name, name) for name in names]


def conversation_for(*, job: OutboundJob, limit: int) -> list[Turn]:
    """The contact's recent messages up to the one this job answers, inbound and outbound, oldest first."""
    answered = job.inbound_message
    inbound = (
        InboundMessage.objects.filter(contact_id=job.contact_id, timestamp__lte=answered.timestamp)
        .exclude(text="")
        .exclude(type__in=["reaction", "system", "revoke"])
        .order_by("-timestamp", "-pk")
        .values_list("timestamp", "text")[:limit]
    )
    outbound = (
        OutboundJob.objects.filter(
            contact_id=job.contact_id, status=OutboundJob.Status.SENT, sent_at__isnull=False
        )
        .exclude(content="")
        .exclude(send_as=OutboundJob.SendAs.TEMPLATE)
        .order_by("-sent_at")
        .values_list("sent_at", "content")[:limit]
    )
    turns: list[tuple[datetime, int, Turn]] = [(ts, 0, Turn("user", text)) for ts, text in inbound]
    turns += [(ts, 1, Turn("assistant", text)) for ts, text in outbound if ts is not None]
    turns.sort(key=lambda item: (item[0], item[1]))
    selected = [turn for _, _, turn in turns][-limit:]
    # The model must answer the customer, so the conversation ends on their side. A reply of ours sent after
    # the answered message arrived (it answered an earlier one) still belongs in the context: it goes just
    # before the answered message, so the model knows what it already said.
    late_replies: list[Turn] = []
    while selected and selected[-1].role != "user":
        late_replies.insert(0, selected.pop())
    if selected and late_replies:
        selected[-1:-1] = late_replies
    return selected[-limit:]


# ---------------------------------------------------------------------------------------------- statuses
DELIVERY_RANK = {"": 0, "sent": 1, "delivered": 2, "read": 3}


@dataclass
class StatusCounts:
    applied: int = 0
    settled: int = 0
    unknown: int = 0


def outbound_jobs_record_statuses(*, statuses: list[ParsedStatus]) -> StatusCounts:
    """Apply Meta's status webhooks to jobs, never moving a delivery status backwards.

    A job is found by the message id Meta gave us, or, when the send's response was lost, by the key we put in
    `biz_opaque_callback_data`; such a status proves the send reached Meta and settles the job as SENT.
    """
    counts = StatusCounts()
    if not statuses:
        return counts
    keys = {status.callback_data: _parse_callback(status.callback_data) for status in statuses}
    job_keys = {parsed[0] for parsed in keys.values() if parsed}
    jobs = list(
        OutboundJob.objects.filter(Q(wa_message_id__in={s.wamid for s in statuses}) | Q(key__in=job_keys))
    )
    by_wamid = {job.wa_message_id: job for job in jobs if job.wa_message_id}
    by_key = {job.key: job for job in jobs}
    # Oldest first so that the last write for a job is its newest news.
    for status in sorted(statuses, key=lambda s: (s.timestamp, DELIVERY_RANK.get(s.status, 4))):
        job = by_wamid.get(status.wamid)
        if job is None:
            job = _settle_from_callback(status, keys.get(status.callback_data), by_key)
            if job is None:
                counts.unknown += 1
                logger.info("status_unknown wa_message_id=%s status=%s", status.wamid, status.status)
                continue
            by_wamid[job.wa_message_id] = job
            counts.settled += 1
        if _apply_delivery(job, status):
            counts.applied += 1
    return counts


def _parse_callback(data: str) -> tuple[uuid.UUID, str] | None:
    key, _, kind = data.partition(":")
    try:
        return uuid.UUID(key), kind.upper()
    except ValueError:
        return None


def _settle_from_callback(
    status: ParsedStatus, parsed: tuple[uuid.UUID, str] | None, by_key: dict[uuid.UUID, OutboundJob]
) -> OutboundJob | None:
    if parsed is None or parsed[0] not in by_key:
        return None
    job = by_key[parsed[0]]
    # Only the send this job is waiting on may settle it; an older text send's status must not.
    if job.wa_message_id or job.send_started_at is None or job.send_as != parsed[1]:
        return None
    if job.status not in (OutboundJob.Status.READY_TO_SEND, OutboundJob.Status.FAILED):
        return None
    try:
        job.mark_settled_sent(wa_message_id=status.wamid)
    except JobChanged:
        return None
    return job


def _apply_delivery(job: OutboundJob, status: ParsedStatus) -> bool:
    """One conditional UPDATE: the new status only replaces a lower one."""
    fields: dict[str, object] = {"delivery_status": status.status, "delivery_updated_at": status.timestamp}
    if status.status == OutboundJob.Delivery.FAILED:
        lower = ["", "sent"]
        first = status.errors[0] if status.errors else None
        fields["delivery_error_code"] = first.code if first else None
        fields["delivery_error"] = (f"{first.code} {first.title}: {first.details}" if first else "")[:2000]
    else:
        lower = [name for name, rank in DELIVERY_RANK.items() if rank < DELIVERY_RANK[status.status]]
    updated = OutboundJob.objects.filter(
        pk=job.pk, wa_message_id=status.wamid, delivery_status__in=lower
    ).update(**fields)
    if updated:
        job.delivery_status = status.status
        logger.info(
            "delivery_status job_id=%s contact_id=%s status=%s code=%s",
            job.pk,
            job.contact_id,
            status.status,
            fields.get("delivery_error_code"),
        )
    return bool(updated)


# ---------------------------------------------------------------------------------------------- staff
@dataclass
class StaffActionResult:
    done: list[OutboundJob] = field(default_factory=list)
    skipped: list[tuple[OutboundJob, str]] = field(default_factory=list)
    template_warnings: list[OutboundJob] = field(default_factory=list)


def outbound_jobs_retry(
    *, jobs: Iterable[OutboundJob], margin_seconds: int | None = None
) -> StaffActionResult:
    """FAILED → READY_TO_SEND (reply kept) or PENDING; anything else is refused and reported."""
    result = StaffActionResult()
    now = timezone.now()
    margin = settings.WHATSAPP_WINDOW_MARGIN_SECONDS if margin_seconds is None else margin_seconds
    for job in jobs:
        if job.status != OutboundJob.Status.FAILED:
            result.skipped.append((job, f"is {job.get_status_display()}, not failed"))
            continue
        try:
            job.mark_retried_by_staff()
        except JobChanged:
            result.skipped.append((job, "changed while retrying"))
            continue
        result.done.append(job)
        if not is_window_open(last_inbound_at=job.contact.last_inbound_at, now=now, margin_seconds=margin):
            result.template_warnings.append(job)
    return result


def outbound_jobs_regenerate(*, jobs: Iterable[OutboundJob]) -> StaffActionResult:
    """Drop the stored reply and ask the model again (FAILED or waiting READY_TO_SEND jobs)."""
    return _staff_apply(
        jobs,
        allowed=(OutboundJob.Status.FAILED, OutboundJob.Status.READY_TO_SEND),
        apply=OutboundJob.mark_regenerate,
    )


def outbound_jobs_cancel(*, jobs: Iterable[OutboundJob]) -> StaffActionResult:
    """Make sure a job is never sent (only jobs no worker holds right now)."""
    return _staff_apply(
        jobs,
        allowed=(OutboundJob.Status.PENDING, OutboundJob.Status.READY_TO_SEND, OutboundJob.Status.FAILED),
        apply=OutboundJob.mark_cancelled,
    )


def _staff_apply(
    jobs: Iterable[OutboundJob], *, allowed: tuple[str, ...], apply: object
) -> StaffActionResult:
    result = StaffActionResult()
    for job in jobs:
        if job.status not in allowed:
            result.skipped.append((job, f"is {job.get_status_display()}"))
            continue
        if job.claim_token is not None:
            result.skipped.append((job, "is being processed by a worker right now"))
            continue
        try:
            apply(job)  # type: ignore[operator]
        except JobChanged:
            result.skipped.append((job, "changed while you acted"))
            continue
        result.done.append(job)
    return result
