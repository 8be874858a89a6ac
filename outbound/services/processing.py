"""One claimed job taken as far as it goes: generate the reply, then send it.

The only place where errors become state transitions: the clients classify (`outbound.exceptions`), the
retry policy decides (`outbound.retry`), and this module moves the job (`OutboundJob.mark_*`).
"""

from __future__ import annotations

import enum
import logging
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

from django.db import DatabaseError
from django.utils import timezone

from outbound.exceptions import (
    ConfigurationError,
    GraphConnectError,
    GraphError,
    GraphResponseLost,
    MediaConfigurationError,
    MediaTransientError,
    OutboundError,
    ReplyConfigurationError,
    ReplyPermanentError,
    ReplyTransientError,
    ReplyUnusableError,
)
from outbound.hot_reads import BotJobFacts, bot_job_facts, contact_state_refresh
from outbound.knowledge import knowledge_search, question_from
from outbound.models import BotPaused, BotPauseReason, Contact, JobChanged, OutboundJob
from outbound.models.states import OPT_CONFIRMATIONS
from outbound.redaction import redact
from outbound.replies import ReplyAction
from outbound.retry import (
    Action,
    backoff_seconds,
    graph_error_action,
    next_attempt_at,
    pair_rate_limit_seconds,
)
from outbound.selectors import conversation_for, reply_system_prompt
from outbound.services.handoff import (
    outbound_job_asks_for_a_person,
    outbound_job_hand_off,
    outbound_job_step_back,
)
from outbound.services.media import FETCHED_TYPES, MediaPhase, outbound_job_prepare_media
from outbound.services.optout import opt_out_reason
from outbound.services.preferences import MARKETING_STOPPED_CODE, contact_record_marketing_preference
from outbound.services.templates import (
    TEMPLATE_STATUS_CODES,
    template_refusal,
    whatsapp_template_record_send_error,
)
from outbound.usage import TokenUsage
from outbound.vocabulary import BUTTON_BODY_LIMIT, HANDOFF_BUTTON_ID
from outbound.whatsapp import Recipient, SendResult
from outbound.window import is_window_open, template_parameters
from outbound.worker_config import WorkerConfig

logger = logging.getLogger(__name__)


class Outcome(enum.StrEnum):
    """What processing one claimed job ended in; the worker's `RunSummary.record` counts each one."""

    GENERATED = "generated"
    """The reply was saved; the send follows in the same claim (never a final outcome)."""
    SENT = "sent"
    """Meta accepted the message."""
    RETRIED = "retried"
    """Given back for another attempt later."""
    FAILED = "failed"
    """Given up (staff can retry)."""
    UNCERTAIN = "uncertain"
    """The send may have reached Meta; a status webhook or staff settle it."""
    LOST = "lost"
    """Someone else moved the job meanwhile; our result was void."""
    HELD = "held"
    """The contact's bot was paused before the model was asked: the job waits for a person (or a resume)."""
    HANDED_OFF = "handed_off"
    """A person took over: the bot's reply was not sent."""
    NO_REPLY = "no_reply"
    """The model said the message needs no answer."""


@dataclass(frozen=True)
class ProcessResult:
    outcome: Outcome
    generated: bool = False


def outbound_job_process(*, job: OutboundJob, config: WorkerConfig) -> ProcessResult:
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


def outbound_job_crashed(*, job: OutboundJob, error: BaseException, config: WorkerConfig) -> None:
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


def _contact_refreshed(job: OutboundJob) -> Contact:
    """The job's contact with its pause and opt-out columns read again (one small query).

    The contact may have been merged into another since the claim loaded it (a customer known by BSUID and by
    phone number turned out to be one, or `user_changed_user_id`): the merge moved the job to the kept contact
    and deleted the one in memory. Then the job's current contact is loaded whole and the job goes on with it.
    """
    contact = job.contact
    if not contact_state_refresh(contact):
        gone = contact.pk
        job.refresh_from_db(fields=["contact"])
        contact = job.contact
        logger.info(
            "job_contact_merged job_id=%s merged_contact_id=%s contact_id=%s", job.pk, gone, contact.pk
        )
    return contact


def _bot_job_refreshed(job: OutboundJob) -> tuple[Contact, BotJobFacts | None]:
    """`_contact_refreshed`, with what the handoff check and the media phase need read in the same statement
    (`bot_job_facts`). None for those when the contact was merged away: they then read for themselves."""
    facts = bot_job_facts(job.contact, job_id=job.pk, media_types=FETCHED_TYPES)
    if facts is None:
        return _contact_refreshed(job), None
    return job.contact, facts


def _generate(job: OutboundJob, token: uuid.UUID, config: WorkerConfig) -> Outcome:
    # Loaded with the claim. `last_inbound_at` only grows, so a value read a moment ago can only make the
    # window look shorter than it is: the safe side.
    contact = job.contact
    now = timezone.now()
    if job.kind in OPT_CONFIRMATIONS:
        return _confirm_opt(job, token, config, now=now)
    facts: BotJobFacts | None = None
    if job.kind == OutboundJob.Kind.BOT:
        # A person may have taken over since the claim read the contact: one small read spares a model call
        # (seconds, and money) whose reply could not be sent anyway (the send's UPDATE refuses it: BotPaused).
        # The same read tells whether the customer opted out (STOP): then nothing is generated or sent.
        contact, facts = _bot_job_refreshed(job)
        if contact.opted_out_at is not None:
            job.mark_no_reply(token=token, why=opt_out_reason(contact), log={"opted_out": True})
            return Outcome.NO_REPLY
        if contact.bot_paused(now=now):
            outbound_job_step_back(job=job, token=token, why="the bot was paused")
            return Outcome.HELD
    if not is_window_open(
        last_inbound_at=contact.last_inbound_at, now=now, margin_seconds=config.window_margin_seconds
    ):
        # No point paying for a reply that cannot be sent: the template goes instead.
        job.mark_generated(
            token=token, content="", send_as=OutboundJob.SendAs.TEMPLATE, log={"in_window": False}
        )
        return Outcome.GENERATED
    if outbound_job_asks_for_a_person(job=job, folded_taps=facts.folded_taps if facts else None):
        return _hand_off(job, token, config, reason=BotPauseReason.CUSTOMER_ASKED)
    # The indicator goes out beside the media phase and the model call, and is waited for (briefly, if at all)
    # only before the reply can go: see _await_typing.
    typing = _start_typing(job, config)
    try:
        return _answer(job, token, config, has_media=facts.has_media if facts else None)
    finally:
        _await_typing(job, typing, config)


def _answer(job: OutboundJob, token: uuid.UUID, config: WorkerConfig, *, has_media: bool | None) -> Outcome:
    """The media phase and the model call: the reply saved (GENERATED), or why there is none."""
    media = _prepare_media(job, token, config, has_media=has_media)
    if isinstance(media, Outcome):
        return media
    conversation = conversation_for(job=job, limit=config.history_messages, images=media.images)
    # Read for each reply: staff edits to the prompt and the entries apply to a running --loop worker.
    knowledge = knowledge_search(question=question_from(conversation), limit=config.knowledge_top_k)
    system_prompt = reply_system_prompt(default=config.system_prompt)
    started = time.monotonic()
    try:
        answer = config.generator.generate(
            system_prompt=system_prompt, conversation=conversation, knowledge=knowledge
        )
    except ReplyUnusableError as exc:
        # A refusal or a broken answer is never sent: tried again, then a person takes over.
        if job.attempts >= config.max_attempts:
            line = _error_line(
                job, "generate", f"{exc} (a person takes over after {job.attempts} attempts)", config
            )
            return _hand_off(
                job, token, config, reason=BotPauseReason.MODEL_FAILED, error=line, usage=exc.usage
            )
        return _retry_or_fail(job, token, config, phase="generate", error=str(exc), usage=exc.usage)
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
    log = {
        "in_window": True,
        **media.log(),
        "action": answer.action.value,
        "knowledge_ids": ",".join(str(snippet.id) for snippet in knowledge),
        "knowledge_used": ",".join(map(str, answer.knowledge_used)),
        "duration_ms": int((time.monotonic() - started) * 1000),
    }
    if answer.action is ReplyAction.HANDOFF:
        return _hand_off(job, token, config, reason=BotPauseReason.MODEL_ASKED, usage=answer.usage)
    if answer.action is ReplyAction.NO_REPLY:
        job.mark_no_reply(token=token, log=log, usage=answer.usage)
        return Outcome.NO_REPLY
    job.mark_generated(
        token=token,
        content=answer.text,
        send_as=OutboundJob.SendAs.TEXT,
        # What the model was given, and which of it the model says the reply relies on.
        knowledge=[snippet.record(cited=snippet.id in answer.knowledge_used) for snippet in knowledge],
        log=log,
        # Media that could not be used: staff see why the reply asks the customer to write or resend.
        error=_error_line(job, "media", "; ".join(media.notes), config) if media.notes else None,
        usage=answer.usage,
    )
    return Outcome.GENERATED


def _confirm_opt(job: OutboundJob, token: uuid.UUID, config: WorkerConfig, *, now: datetime) -> Outcome:
    """The answer to the customer's STOP or START: the configured text, no model call, inside the window only."""
    opt_out = job.kind == OutboundJob.Kind.OPT_OUT
    message = config.opt_out_message if opt_out else config.opt_in_message
    if not is_window_open(
        last_inbound_at=job.contact.last_inbound_at, now=now, margin_seconds=config.window_margin_seconds
    ):
        job.mark_no_reply(
            token=token,
            why="the 24-hour window closed before the confirmation went (never sent as a template)",
        )
        return Outcome.NO_REPLY
    if not message:
        setting = "OUTBOUND_OPT_OUT_MESSAGE" if opt_out else "OUTBOUND_OPT_IN_MESSAGE"
        job.mark_no_reply(token=token, why=f"{setting} is empty: no confirmation is sent")
        return Outcome.NO_REPLY
    job.mark_generated(token=token, content=message, send_as=OutboundJob.SendAs.TEXT, log={"opt": job.kind})
    return Outcome.GENERATED


@dataclass(frozen=True)
class _Typing:
    future: Future[None]
    started: float


# The read receipt with "typing…" runs beside the model call, on a pool of its own (threads: the call is network
# I/O and touches no database). Threads start only as needed; 8 covers `--concurrency` up to 8 without queueing,
# and a call still queued when its reply is ready is cancelled (see _await_typing).
_typing_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="typing-indicator")


def _start_typing(job: OutboundJob, config: WorkerConfig) -> _Typing | None:
    """Mark the customer's latest message read with "typing…" while the reply is prepared (Meta: only when
    we are going to answer). Best effort: bounded by its own short timeout; a failure is logged at INFO and
    forgotten: no attempt is spent, nothing goes to the job's error log, the reply goes on."""
    if not config.typing_indicator or job.inbound_message is None:
        return None
    future = _typing_pool.submit(
        _show_typing,
        job_id=job.pk,
        message_id=job.inbound_message.wamid,
        # From the number the customer wrote to, like the reply (the claim loaded the contact).
        phone_number_id=job.contact.phone_number_id or None,
        config=config,
    )
    return _Typing(future=future, started=time.monotonic())


def _await_typing(job: OutboundJob, typing: _Typing | None, config: WorkerConfig) -> None:
    """Let the indicator reach Meta before the reply can: one arriving after our answer would show "typing…"
    for 25 s more. Normally long done, since the model takes longer than one small Graph call; the wait is at
    most what is left of the indicator's own timeout, never a retry or a failure."""
    if typing is None:
        return
    left = config.typing_indicator_timeout - (time.monotonic() - typing.started)
    try:
        typing.future.result(timeout=max(left, 0.0))
    except TimeoutError:
        # Still queued: never sent now, since "typing…" after our answer would be wrong. Already on its way:
        # its own timeout ends it soon.
        typing.future.cancel()
        logger.info("typing_indicator_late job_id=%s the reply goes without waiting for it", job.pk)


def _show_typing(*, job_id: int, message_id: str, phone_number_id: str | None, config: WorkerConfig) -> None:
    try:
        confirmed = config.sender.mark_read(
            message_id=message_id,
            typing=True,
            timeout=config.typing_indicator_timeout,
            phone_number_id=phone_number_id,
        )
    except OutboundError as exc:
        logger.info("typing_indicator_failed job_id=%s %s", job_id, redact(str(exc), config.secrets)[:300])
        return
    except Exception:  # best effort: whatever breaks here must not reach the reply
        logger.info("typing_indicator_failed job_id=%s", job_id, exc_info=True)
        return
    if not confirmed:
        logger.info("typing_indicator_failed job_id=%s Meta did not answer success=true", job_id)


def _prepare_media(
    job: OutboundJob, token: uuid.UUID, config: WorkerConfig, *, has_media: bool | None
) -> MediaPhase | Outcome:
    """The media phase (outbound.services.media): its result, or the outcome when the job stops here."""
    if config.media_source is None or config.transcriber is None:
        return MediaPhase()
    try:
        return outbound_job_prepare_media(
            job=job,
            source=config.media_source,
            transcriber=config.transcriber,
            max_bytes=config.media_max_bytes,
            last_attempt=job.attempts >= config.max_attempts,
            has_media=has_media,
        )
    except MediaTransientError as exc:
        return _retry_or_fail(job, token, config, phase="media", error=str(exc), retry_after=exc.retry_after)
    except MediaConfigurationError as exc:
        # Our token, key or model, not this job: keep it, refund the attempt, stop loudly (as for replies).
        job.mark_retry(
            token=token,
            error=_error_line(job, "media", str(exc), config),
            next_attempt_at=timezone.now(),
            refund_attempt=True,
        )
        raise ConfigurationError(
            redact(
                f"a media request was refused ({exc}): check {exc.check}; the job was kept", config.secrets
            )
        ) from exc


def _hand_off(
    job: OutboundJob,
    token: uuid.UUID,
    config: WorkerConfig,
    *,
    reason: str,
    error: str | None = None,
    usage: TokenUsage | None = None,
) -> Outcome:
    """Pause the bot and carry the handoff message, or end HANDED_OFF when someone handed off first."""
    if outbound_job_hand_off(
        job=job, token=token, reason=reason, message=config.handoff_message, error=error, usage=usage
    ):
        return Outcome.GENERATED
    return Outcome.HANDED_OFF


def _send(
    job: OutboundJob, token: uuid.UUID, config: WorkerConfig, *, allow_template_switch: bool
) -> Outcome:
    contact = job.contact  # as loaded by the claim (see _generate)
    in_window = is_window_open(
        last_inbound_at=contact.last_inbound_at,
        now=timezone.now(),
        margin_seconds=config.window_margin_seconds,
    )
    send_as = job.send_as if in_window else OutboundJob.SendAs.TEMPLATE
    if not in_window and job.kind in OPT_CONFIRMATIONS:
        job.mark_failed(
            token=token,
            error=_error_line(
                job,
                "send",
                "the 24-hour window closed before this confirmation went; it is a reply to the customer's "
                "keyword, never sent as a template",
                config,
            ),
            log={"in_window": in_window},
        )
        return Outcome.FAILED
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
    if send_as == OutboundJob.SendAs.TEMPLATE:
        # One small read, for template sends only: a template Meta reported paused or disabled fails here
        # with that reason, instead of a Graph error on every attempt.
        refusal = template_refusal(name=config.template_name, language=config.template_language)
        if refusal:
            job.mark_failed(
                token=token, error=_error_line(job, "send", refusal, config), log={"in_window": False}
            )
            return Outcome.FAILED
    config.limiter_for(contact.phone_number_id).acquire()
    try:
        job.mark_send_started(token=token, send_as=send_as)
    except BotPaused:
        contact = _contact_refreshed(job)
        if contact.opted_out_at is not None:
            # The customer sent STOP after this reply was generated: never sent (checked in the same UPDATE).
            job.mark_no_reply(token=token, why=opt_out_reason(contact), log={"opted_out": True})
            return Outcome.NO_REPLY
        # A person took over after this reply was generated: it is never sent (checked in the same UPDATE).
        outbound_job_step_back(job=job, token=token, why="a person took the conversation over first")
        return Outcome.HANDED_OFF
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


def _deliver(job: OutboundJob, contact: Contact, send_as: str, config: WorkerConfig) -> SendResult:
    # From the number the customer wrote to: the conversation is (business number, customer).
    to = Recipient(
        wa_id=contact.wa_id, user_id=contact.user_id, phone_number_id=contact.phone_number_id or None
    )
    callback_data = f"{job.key}:{send_as.lower()}"
    if send_as == OutboundJob.SendAs.TEMPLATE:
        return config.sender.send_template(
            to=to,
            name=config.template_name,
            language=config.template_language,
            body_parameters=template_parameters(config.template_body_parameters, contact=contact),
            callback_data=callback_data,
        )
    # The claim loaded the inbound message with the job (select_related): no query here. A staff reply
    # answers the conversation, not one message: it quotes nothing.
    reply_to = job.inbound_message.wamid if job.inbound_message is not None else None
    if job.kind == OutboundJob.Kind.BOT and config.handoff_button and len(job.content) <= BUTTON_BODY_LIMIT:
        return config.sender.send_buttons(
            to=to,
            body=job.content,
            buttons=[(HANDOFF_BUTTON_ID, config.handoff_button)],
            reply_to=reply_to,
            callback_data=callback_data,
        )
    return config.sender.send_text(to=to, body=job.content, reply_to=reply_to, callback_data=callback_data)


def _handle_graph_error(
    job: OutboundJob,
    token: uuid.UUID,
    config: WorkerConfig,
    exc: GraphError,
    *,
    allow_template_switch: bool,
) -> Outcome:
    action = graph_error_action(exc)
    line = _error_line(job, "send", exc.describe(), config)
    log: dict[str, object] = {"fbtrace_id": exc.fbtrace_id, "code": exc.code}
    if exc.code == MARKETING_STOPPED_CODE:
        contact_record_marketing_preference(contact_id=job.contact_id, value="stop")
    if exc.code in TEMPLATE_STATUS_CODES and job.send_as == OutboundJob.SendAs.TEMPLATE:
        # Meta paused or disabled the template: the next jobs fail before calling Meta (template_refusal).
        whatsapp_template_record_send_error(
            name=config.template_name, language=config.template_language, code=exc.code, message=exc.message
        )
    if (
        action is Action.TEMPLATE
        and job.send_as == OutboundJob.SendAs.TEXT
        and job.kind not in OPT_CONFIRMATIONS
        and allow_template_switch
    ):
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
    config: WorkerConfig,
    *,
    phase: str,
    error: str,
    retry_after: float | None = None,
    delay: float | None = None,
    log: dict[str, object] | None = None,
    usage: TokenUsage | None = None,
) -> Outcome:
    if job.attempts >= config.max_attempts:
        job.mark_failed(
            token=token,
            error=_error_line(job, phase, f"{error} (gave up after {job.attempts} attempts)", config),
            log=log,
            usage=usage,
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
        usage=usage,
    )
    return Outcome.RETRIED


def _error_line(job: OutboundJob, phase: str, message: str, config: WorkerConfig) -> str:
    return f"attempt={job.attempts} phase={phase} {redact(message, config.secrets)}"
