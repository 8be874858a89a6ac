"""The job's moves that people cause: staff actions in the admin (retry, regenerate, cancel), and the bot
stepping back for a person (held, handed off) or finding nothing to say.

A mixin of `OutboundJob` (outbound/models/jobs.py), kept apart so that each module stays one screenful of
transitions; the moves go through the same `_transition` and are listed in `states.ALLOWED_TRANSITIONS`.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.utils import timezone

from outbound.models.states import Event, IllegalTransition, JobChanged, JobKind, JobStatus, SendAs
from outbound.usage import TokenUsage


class BotPaused(JobChanged):
    """The contact's bot was paused (a person took over) between this worker's claim and its next write."""


class PeopleTransitions:
    """Staff actions, and `mark_held`, `mark_handed_off`, `mark_no_reply`: a bot reply that is not sent."""

    pk: Any
    status: str
    attempts: int
    kind: str
    content: str
    send_as: str

    def _transition(self, to: str, *, event: Event, **kwargs: Any) -> None:
        raise NotImplementedError  # OutboundJob's

    def usage_fields(self, usage: TokenUsage | None) -> dict[str, int]:
        raise NotImplementedError  # OutboundJob's

    def mark_held(self, *, token: uuid.UUID) -> None:
        """GENERATING → PENDING without asking the model: the bot is paused, so the job waits, unclaimed.

        The attempt is refunded (nothing was tried). While the pause lasts no claim takes the job; a staff
        reply settles it as HANDED_OFF, a resume lets the bot answer it.
        """
        self._transition(
            JobStatus.PENDING,
            event=Event.HELD,
            fence=token,
            attempts=max(self.attempts - 1, 0),
            claim_token=None,
            claimed_at=None,
            send_started_at=None,
            log={"held": "bot paused"},
        )

    def mark_handed_off(self, *, token: uuid.UUID | None, why: str, usage: TokenUsage | None = None) -> None:
        """A person took over: this bot reply is never sent (its text, if any, stays for the record).

        With `token`, the worker's own claim (checked before generating or sending); without, an open job
        that no worker holds, settled when a person takes the conversation.
        """
        self._transition(
            JobStatus.HANDED_OFF,
            event=Event.HANDED_OFF,
            fence=token,
            require_unclaimed=token is None,
            error=f"phase=handoff not sent: {why}",
            claim_token=None,
            claimed_at=None,
            send_started_at=None,
            **self.usage_fields(usage),
        )

    def mark_no_reply(
        self,
        *,
        token: uuid.UUID,
        log: dict[str, Any] | None = None,
        usage: TokenUsage | None = None,
        why: str | None = None,
    ) -> None:
        """Nothing is sent: the model decided the message needs no answer (the call's tokens are kept), or
        (`why`, recorded in the error log for staff) the customer opted out."""
        self._transition(
            JobStatus.NO_REPLY,
            event=Event.NO_REPLY,
            fence=token,
            log=log,
            error=f"phase=opt_out not sent: {why}" if why else None,
            claim_token=None,
            claimed_at=None,
            send_started_at=None,
            generated_at=timezone.now(),
            **self.usage_fields(usage),
        )

    def mark_retried_by_staff(self) -> None:
        """FAILED → READY_TO_SEND when a reply (or the template decision) is stored, else PENDING."""
        ready = bool(self.content) or self.send_as == SendAs.TEMPLATE
        self._transition(
            JobStatus.READY_TO_SEND if ready else JobStatus.PENDING,
            event=Event.STAFF_RETRY,
            attempts=0,
            next_attempt_at=timezone.now(),
            claim_token=None,
            claimed_at=None,
            send_started_at=None,
            error="phase=staff retried",
        )

    def mark_regenerate(self) -> None:
        """Drop the reply and ask the model again (bot replies only: a person's words are never replaced)."""
        if self.kind != JobKind.BOT:
            raise IllegalTransition(
                f"{Event.STAFF_REGENERATE}: job {self.pk} is a {JobKind(self.kind).label}"
            )
        self._transition(
            JobStatus.PENDING,
            event=Event.STAFF_REGENERATE,
            require_unclaimed=True,
            content="",
            knowledge=[],
            send_as=SendAs.TEXT,
            attempts=0,
            next_attempt_at=timezone.now(),
            send_started_at=None,
            error="phase=staff reply dropped for regeneration",
        )

    def mark_cancelled(self) -> None:
        """Staff decided that this job must not be sent."""
        self._transition(
            JobStatus.CANCELLED,
            event=Event.STAFF_CANCEL,
            require_unclaimed=True,
            error="phase=staff cancelled",
        )
