"""The outbound job: one AI reply to one inbound message, and its state machine.

Status changes happen only through the `mark_*` methods below, each a single conditional UPDATE: the row must
still be in the status this object saw (and, for a worker, still carry the worker's claim token). That check
is the fencing: a worker presumed dead cannot overwrite a newer attempt, and an illegal move raises with the
status it came from.
"""

from __future__ import annotations

import logging
import re
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import connections, models, router, transaction
from django.db.models import Q
from django.utils import timezone

from outbound.models.contacts import Contact, InboundMessage, bot_paused_sql
from outbound.models.job_people import BotPaused, PeopleTransitions
from outbound.models.queries import OutboundJobQuerySet
from outbound.models.states import (
    ALLOWED_TRANSITIONS,
    CLAIMABLE_STATUSES,
    EVENT_SOURCES,
    SENT_WHILE_PAUSED,
    Event,
    IllegalTransition,
    JobChanged,
    JobKind,
    JobStatus,
    SendAs,
    error_log_append,
)
from outbound.models.transition_sql import CONTACT_ALIAS, transition_sql
from outbound.usage import Prices, TokenUsage, token_cost
from outbound.vocabulary import ID_MAX_LENGTH, WINDOW_CLOSED_CODE, DeliveryStatus

logger = logging.getLogger(__name__)

_PHASE = re.compile(r"\bphase=(\w+)")


def phase_of(error: str) -> str:
    """The phase named in an error line ("attempt=2 phase=send ..."), or "" when it names none."""
    match = _PHASE.search(error)
    return match.group(1)[:16] if match else ""


class OutboundJob(PeopleTransitions, models.Model):
    """One message to a customer: the model's reply to an inbound message (generated, then sent through the
    Graph API), a staff member's reply from the admin, or the handoff message."""

    Status = JobStatus
    SendAs = SendAs
    Delivery = DeliveryStatus
    Kind = JobKind

    CLAIMABLE_STATUSES = CLAIMABLE_STATUSES

    key = models.UUIDField(
        default=uuid.uuid4, unique=True, editable=False, help_text="sent to Meta as biz_opaque_callback_data"
    )
    contact = models.ForeignKey(Contact, on_delete=models.PROTECT, related_name="outbound_jobs")
    # The message a bot reply answers; a staff reply answers the conversation, not one message (null).
    inbound_message = models.OneToOneField(
        InboundMessage, on_delete=models.PROTECT, related_name="outbound_job", null=True, blank=True
    )
    kind = models.CharField(
        max_length=max(len(v) for v in JobKind.values), choices=JobKind.choices, default=JobKind.BOT
    )
    # Who wrote a staff reply (null for the bot's and the handoff message).
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    status = models.CharField(
        max_length=max(len(v) for v in Status.values),
        choices=Status.choices,
        default=Status.PENDING,
        db_index=True,
    )
    send_as = models.CharField(
        max_length=max(len(v) for v in SendAs.values), choices=SendAs.choices, default=SendAs.TEXT
    )
    content = models.TextField(blank=True, help_text="the AI reply, saved before any send")
    knowledge = models.JSONField(
        default=list, blank=True, help_text="knowledge entries given to the model: [{id, title}] at the time"
    )
    superseded_by = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    # Attempts and claims (machine-owned)
    attempts = models.PositiveIntegerField(default=0)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    claimed_at = models.DateTimeField(null=True, blank=True)
    claim_token = models.UUIDField(null=True, blank=True)
    claimed_by = models.CharField(max_length=128, blank=True)
    # Set just before the Graph call: from then on the send may have reached Meta and is never blindly repeated.
    send_started_at = models.DateTimeField(null=True, blank=True)
    error_log = models.TextField(blank=True, help_text="one line per failed attempt, oldest first")

    # Meta's answer
    wa_message_id = models.CharField("Meta message id", max_length=ID_MAX_LENGTH, blank=True, db_index=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    message_status = models.CharField(
        max_length=64, blank=True, help_text="template pacing status from the send response"
    )
    send_response = models.JSONField(null=True, blank=True)
    delivery_status = models.CharField(
        max_length=max(len(v) for v in DeliveryStatus),
        # "No status webhook yet" shows as a dash.
        choices=[(s.value, s.value or "—") for s in DeliveryStatus],
        default=Delivery.NONE,
        blank=True,
    )
    delivery_updated_at = models.DateTimeField(null=True, blank=True)
    delivery_error_code = models.IntegerField(null=True, blank=True)
    delivery_error = models.TextField(blank=True)

    # Timeline and cost (machine-owned): when the first claim took it and when the reply was generated (the
    # latency split: waiting for a worker, generating, sending), the model's tokens (summed over attempts), and
    # why a FAILED job failed (the phase of its last error line and Meta's code), for the charts and /metrics.
    first_claimed_at = models.DateTimeField(null=True, blank=True)
    generated_at = models.DateTimeField(null=True, blank=True)
    input_tokens = models.PositiveIntegerField(null=True, blank=True, help_text="model input (prompt) tokens")
    cached_input_tokens = models.PositiveIntegerField(
        null=True, blank=True, help_text="of the input tokens, those served from OpenAI's prompt cache"
    )
    output_tokens = models.PositiveIntegerField(null=True, blank=True, help_text="model output tokens")
    failure_phase = models.CharField(max_length=16, blank=True)
    failure_code = models.IntegerField(null=True, blank=True, help_text="Meta's error code of the failure")

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = OutboundJobQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            # The claim query: open, unclaimed, due, oldest first.
            models.Index(
                fields=["next_attempt_at", "id"],
                name="outbound_due",
                condition=Q(status__in=["PENDING", "READY_TO_SEND"], claim_token__isnull=True),
            ),
            models.Index(
                fields=["claimed_at"], name="outbound_claimed", condition=Q(claim_token__isnull=False)
            ),
            models.Index(fields=["contact", "status"], name="outbound_contact_status"),
            models.Index(fields=["status", "-created_at"], name="outbound_status_created"),
            models.Index(fields=["delivery_status"], name="outbound_delivery"),
            # The admin's list order, and the charts' and /metrics' time windows (aggregates over a range).
            models.Index(fields=["-created_at", "-id"], name="outbound_created"),
            models.Index(fields=["sent_at"], name="outbound_sent_at", condition=Q(sent_at__isnull=False)),
            models.Index(
                fields=["generated_at"], name="outbound_generated_at", condition=Q(generated_at__isnull=False)
            ),
            models.Index(fields=["updated_at"], name="outbound_failed_at", condition=Q(status="FAILED")),
            # The admin's filters by kind and by text/template, in the list's order: their rare values (staff
            # replies, templates) would otherwise walk the whole list order to fill a page.
            models.Index(fields=["kind", "-created_at", "-id"], name="outbound_kind_created"),
            models.Index(fields=["send_as", "-created_at", "-id"], name="outbound_send_as_created"),
        ]

    def __str__(self) -> str:
        return f"job {self.pk} ({self.status})"

    # ------------------------------------------------------------------ transitions
    def _transition(
        self,
        to: str,
        *,
        event: Event,
        fence: uuid.UUID | None = None,
        require_unclaimed: bool = False,
        require_unsent: bool = False,
        error: str | None = None,
        log: dict[str, Any] | None = None,
        unless_paused_at: datetime | None = None,
        **fields: Any,
    ) -> None:
        """Move to `to` with one conditional UPDATE; raise if illegal or if the row changed under us.

        `require_unsent`: refuse it (JobChanged) when a send has started on the row (`send_started_at` set), even
        if it started after this instance was read.

        `unless_paused_at`: refuse the move with `BotPaused` when the contact's bot is paused at that time
        (`bot_paused_q`) or the contact opted out (checked in the same UPDATE, so nothing can slip in between
        the check and the move).

        The statement is hand-written SQL whose text is kept per shape (outbound.models.transition_sql): the
        ORM's compilation of it was most of a transition's CPU.
        """
        if self.status not in EVENT_SOURCES[event] or to not in ALLOWED_TRANSITIONS[self.status]:
            raise IllegalTransition(f"{event}: job {self.pk} cannot go from {self.status} to {to}")
        now = timezone.now()
        if error is not None:
            fields["error_log"] = error_log_append(self.error_log, error, now=now)
        # Set explicitly (an UPDATE runs no `pre_save`): `auto_now`'s value, the transition's time.
        fields.update(status=to, updated_at=now)
        connection = connections[router.db_for_write(OutboundJob)]
        paused, paused_params = (
            bot_paused_sql(now=unless_paused_at, alias=CONTACT_ALIAS, connection=connection)
            if unless_paused_at is not None
            else (None, [])
        )
        sql = transition_sql(
            OutboundJob,
            connection,
            tuple(fields),
            fenced=fence is not None,
            unclaimed=require_unclaimed,
            unless_paused=paused,
            unsent=require_unsent,
        )
        where = [OutboundJob.id.field.get_db_prep_value(self.pk, connection), self.status]
        if fence is not None:
            where.append(sql.token_field.get_db_prep_value(fence, connection))
        values = []
        for field, value in zip(sql.fields, fields.values(), strict=True):
            if hasattr(value, "resolve_expression"):
                raise TypeError(f"{field.name}: a transition sets values, not expressions")
            if field.remote_field is not None and hasattr(value, "prepare_database_save"):
                value = value.prepare_database_save(field)  # a model instance: its key
            values.append(field.get_db_prep_save(value, connection))
        # As QuerySet.update does: a database error marks an enclosing atomic block for rollback (not our own
        # JobChanged/BotPaused, raised below, outside it).
        with transaction.mark_for_rollback_on_error(using=connection.alias), connection.cursor() as cursor:
            cursor.execute(sql.update, [*values, *where, *paused_params])
            moved = cursor.rowcount == 1
            held = False
            if not moved and paused is not None:
                cursor.execute(sql.still_ours, where)
                held = cursor.fetchone() is not None
        if held:
            raise BotPaused(f"{event}: job {self.pk} refused, the contact's bot is paused")
        if not moved:
            raise JobChanged(f"{event}: job {self.pk} is no longer {self.status} with this claim")
        previous = self.status
        for name, value in fields.items():
            setattr(self, name, value)
        if not logger.isEnabledFor(logging.INFO):
            return
        extra = " ".join(f"{k}={v}" for k, v in (log or {}).items() if v not in (None, ""))
        logger.info(
            "job_transition event=%s job_id=%s contact_id=%s from=%s to=%s attempt=%s send_as=%s %s",
            event,
            self.pk,
            self.contact_id,
            previous,
            to,
            self.attempts,
            self.send_as,
            extra,
        )

    def mark_claimed(self, *, token: uuid.UUID, worker_id: str, now: datetime) -> None:
        """Take the job for one attempt: a compare-and-set on a row that nobody holds."""
        to = self.Status.GENERATING if self.status == self.Status.PENDING else self.Status.READY_TO_SEND
        self._transition(
            to,
            event=Event.CLAIM,
            require_unclaimed=True,
            claim_token=token,
            claimed_at=now,
            claimed_by=worker_id[:128],
            attempts=self.attempts + 1,
            last_attempt_at=now,
            first_claimed_at=self.first_claimed_at or now,
        )

    def mark_generated(
        self,
        *,
        token: uuid.UUID,
        content: str,
        send_as: str,
        kind: str | None = None,
        error: str | None = None,
        log: dict[str, Any] | None = None,
        knowledge: list[dict[str, Any]] | None = None,
        usage: TokenUsage | None = None,
    ) -> None:
        """Save the reply (or the decision to send the template) and the entries it drew on, with READY_TO_SEND.

        `kind=HANDOFF`: the reply is the handoff message (the bot was paused in the same claim); `error`
        records why, when the model's failures led there.
        """
        fields: dict[str, Any] = {
            "content": content,
            "send_as": send_as,
            "knowledge": knowledge or [],
            "generated_at": timezone.now(),
            **self.usage_fields(usage),
        }
        if kind:
            fields["kind"] = kind
        self._transition(
            self.Status.READY_TO_SEND, event=Event.GENERATED, fence=token, error=error, log=log, **fields
        )

    def usage_fields(self, usage: TokenUsage | None) -> dict[str, int]:
        """The token columns after adding one model call's usage (every attempt's tokens were paid for)."""
        if usage is None:
            return {}
        return {
            "input_tokens": (self.input_tokens or 0) + usage.input_tokens,
            "cached_input_tokens": (self.cached_input_tokens or 0) + usage.cached_input_tokens,
            "output_tokens": (self.output_tokens or 0) + usage.output_tokens,
        }

    def estimated_cost(self, prices: Prices | None = None) -> Decimal | None:
        """What this job's model calls cost at the configured prices (None: no usage recorded)."""
        if self.input_tokens is None and self.output_tokens is None:
            return None
        return token_cost(
            input_tokens=self.input_tokens or 0,
            output_tokens=self.output_tokens or 0,
            cached_input_tokens=self.cached_input_tokens or 0,
            prices=prices or Prices.from_settings(),
        )

    def mark_send_started(self, *, token: uuid.UUID, send_as: str) -> None:
        """Record that the Graph call is about to go out: from here on, never send blindly again.

        A bot reply whose contact's bot is paused, or who opted out, is refused in the same UPDATE
        (`BotPaused`): checked at the last moment before the Graph call, so a person who took over is never
        talked over and a STOP is honoured even for a reply generated before it.
        """
        now = timezone.now()
        self._transition(
            self.Status.READY_TO_SEND,
            event=Event.SEND_STARTED,
            fence=token,
            send_started_at=now,
            send_as=send_as,
            # A bot reply is refused while a person holds the conversation or once the customer opted out (STOP).
            unless_paused_at=None if self.kind in SENT_WHILE_PAUSED else now,
        )

    def mark_sent(
        self,
        *,
        token: uuid.UUID,
        wa_message_id: str,
        message_status: str,
        response: dict[str, Any],
        log: dict[str, Any] | None = None,
    ) -> None:
        """Meta accepted the message: store its id, the pacing status and the response."""
        self._transition(
            self.Status.SENT,
            event=Event.SENT,
            fence=token,
            log=log,
            wa_message_id=wa_message_id[:ID_MAX_LENGTH],
            message_status=message_status[:64],
            send_response=response,
            sent_at=timezone.now(),
            claim_token=None,
            claimed_at=None,
            send_started_at=None,
            delivery_status=self.Delivery.NONE,
            delivery_updated_at=None,
            delivery_error_code=None,
            delivery_error="",
        )

    def mark_retry(
        self,
        *,
        token: uuid.UUID,
        error: str,
        next_attempt_at: datetime,
        refund_attempt: bool = False,
        log: dict[str, Any] | None = None,
        usage: TokenUsage | None = None,
    ) -> None:
        """Give the claim back and try later: GENERATING → PENDING; READY_TO_SEND keeps its content."""
        to = self.Status.PENDING if self.status == self.Status.GENERATING else self.Status.READY_TO_SEND
        fields: dict[str, Any] = self.usage_fields(usage)
        if refund_attempt:
            # Not the job's fault (our access token expired, say): the attempt does not count.
            fields["attempts"] = max(self.attempts - 1, 0)
        self._transition(
            to,
            event=Event.RETRY,
            fence=token,
            error=error,
            log=log,
            next_attempt_at=next_attempt_at,
            claim_token=None,
            claimed_at=None,
            send_started_at=None,
            **fields,
        )

    def mark_failed(
        self,
        *,
        token: uuid.UUID | None,
        error: str,
        log: dict[str, Any] | None = None,
        usage: TokenUsage | None = None,
        require_unsent: bool = False,
    ) -> None:
        """Give up; staff read the reason in `error_log` and can retry.

        Only for failures where nothing can have reached Meta (an error answer, a refused request);
        a send that may have gone out is `mark_send_uncertain` / `mark_stale_send_unsettled` instead.
        `require_unsent`: for a caller that is not the claim's worker (stale recovery), which read the row
        before its worker could start a send.
        """
        code = (log or {}).get("code")
        usage_fields: dict[str, Any] = self.usage_fields(usage)
        self._transition(
            self.Status.FAILED,
            event=Event.FAILED,
            fence=token,
            require_unsent=require_unsent,
            error=error,
            log=log,
            claim_token=None,
            claimed_at=None,
            send_started_at=None,
            failure_phase=phase_of(error),
            failure_code=code if isinstance(code, int) else None,
            **usage_fields,
        )

    def mark_switch_to_template(self, *, token: uuid.UUID, error: str) -> None:
        """Meta said the window is closed (131047): this claim's next send goes as the template."""
        self._transition(
            self.Status.READY_TO_SEND,
            event=Event.SWITCH_TO_TEMPLATE,
            fence=token,
            error=error,
            send_as=self.SendAs.TEMPLATE,
            send_started_at=None,
        )

    def mark_send_uncertain(self, *, token: uuid.UUID, error: str) -> None:
        """The send may have reached Meta (no answer came back): keep the claim so that nothing resends it.

        A status webhook carrying this job's key settles it; otherwise stale recovery hands it to staff.
        """
        self._transition(self.Status.READY_TO_SEND, event=Event.SEND_UNCERTAIN, fence=token, error=error)

    def mark_superseded(self, *, by: OutboundJob) -> None:
        """A newer message from the same contact will be answered instead, in one reply covering both."""
        self._transition(
            self.Status.SUPERSEDED,
            event=Event.SUPERSEDED,
            require_unclaimed=True,
            superseded_by=by,
            log={"superseded_by": by.pk},
        )

    # Stale recovery: the claim's worker is presumed dead; fence on its token so a late finish loses.
    def mark_stale_released(self) -> None:
        """GENERATING → PENDING (nothing was sent); READY_TO_SEND keeps its content. Not yet due again."""
        to = self.Status.PENDING if self.status == self.Status.GENERATING else self.Status.READY_TO_SEND
        self._transition(
            to,
            event=Event.STALE_RELEASED,
            fence=self.claim_token,
            # The worker may be alive after all and start its send after recovery read the row: then the
            # send may reach Meta, and releasing the claim would let another worker send it again.
            require_unsent=True,
            claim_token=None,
            claimed_at=None,
            error=f"phase=recovery claim by {self.claimed_by or '?'} from {self.claimed_at:%Y-%m-%d %H:%M:%S} "
            "went stale; released",
        )

    def mark_stale_send_unsettled(self) -> None:
        """A send that may have reached Meta, which no status webhook settled: staff decide."""
        self._transition(
            self.Status.FAILED,
            event=Event.STALE_SEND_UNSETTLED,
            fence=self.claim_token,
            claim_token=None,
            claimed_at=None,
            failure_phase="recovery",
            failure_code=None,
            error="phase=recovery the send started at "
            f"{self.send_started_at:%Y-%m-%d %H:%M:%S} may have reached Meta, but no response or status webhook "
            "confirmed it; not resent automatically. Check the conversation in WhatsApp before retrying.",
        )

    # Status webhooks
    def mark_settled_sent(self, *, wa_message_id: str) -> None:
        """A status webhook carrying this job's key proves that a send whose response was lost reached Meta."""
        self._transition(
            self.Status.SENT,
            event=Event.SETTLED_BY_WEBHOOK,
            claim_token=None,
            claimed_at=None,
            wa_message_id=wa_message_id[:ID_MAX_LENGTH],
            sent_at=self.send_started_at or timezone.now(),
            send_started_at=None,
            log={"wa_message_id": wa_message_id},
        )

    def mark_reopened_for_template(self) -> None:
        """Meta reported the text reply failed with 131047 after accepting it: send the template (once)."""
        self._transition(
            self.Status.READY_TO_SEND,
            event=Event.REOPEN_FOR_TEMPLATE,
            require_unclaimed=True,
            send_as=self.SendAs.TEMPLATE,
            next_attempt_at=timezone.now(),
            attempts=0,
            error=f"phase=delivery text message {self.wa_message_id} failed with {WINDOW_CLOSED_CODE} "
            "(window closed); sending the template instead",
            wa_message_id="",
            message_status="",
            delivery_status=self.Delivery.NONE,
            delivery_error_code=None,
            delivery_error="",
        )
