"""The job's state machine as data: its statuses, the events that move it, and which moves are legal.

The moves themselves are `OutboundJob.mark_*` (outbound/models/jobs.py), one method per event, each a single
conditional UPDATE checked against these tables.
"""

from __future__ import annotations

import enum
import re
from datetime import datetime

from django.db import models

ERROR_LOG_MAX_LINES = 50
ERROR_LOG_MAX_LINE_CHARS = 600


class IllegalTransition(Exception):
    """A transition that the state machine does not allow from the job's current status."""


class JobChanged(Exception):
    """The row no longer matches what this worker saw (status moved, or the claim was lost): write nothing."""


class JobStatus(models.TextChoices):
    """Where a job is in its life (`OutboundJob.Status`)."""

    PENDING = "PENDING", "pending"
    """Waiting for a reply to be generated."""
    GENERATING = "GENERATING", "generating"
    """A worker holds it and is asking the model."""
    READY_TO_SEND = "READY_TO_SEND", "ready to send"
    """The reply (or the decision to send the template) is saved; waiting to be sent."""
    SENT = "SENT", "sent"
    """Meta accepted the message; delivery progress is in `delivery_status`."""
    FAILED = "FAILED", "failed"
    """Given up: a permanent error or attempts exhausted. Staff can retry it."""
    SUPERSEDED = "SUPERSEDED", "superseded"
    """Folded into a newer message's job from the same contact, which answers both."""
    CANCELLED = "CANCELLED", "cancelled"
    """Staff decided it must not be sent."""
    HANDED_OFF = "HANDED_OFF", "handed off"
    """Not sent: a person took the conversation over before the bot's reply went out."""
    NO_REPLY = "NO_REPLY", "no reply needed"
    """The model decided the message needs no answer (a thank-you, an emoji)."""


class JobKind(models.TextChoices):
    """Whose words a job carries (`OutboundJob.Kind`)."""

    BOT = "BOT", "bot reply"
    """The model's reply to a customer message; it steps back while the contact's bot is paused."""
    STAFF = "STAFF", "staff reply"
    """A staff member's words from the admin; sent whatever the bot's state."""
    HANDOFF = "HANDOFF", "handoff message"
    """OUTBOUND_HANDOFF_MESSAGE, sent once when the conversation is handed to a person."""
    OPT_OUT = "OPT_OUT", "opt-out confirmation"
    """OUTBOUND_OPT_OUT_MESSAGE: the answer to the customer's STOP (its job, converted at ingest)."""
    OPT_IN = "OPT_IN", "opt-in confirmation"
    """OUTBOUND_OPT_IN_MESSAGE: the answer to the customer's START."""


# Kinds a paused bot does not hold back: people's words, the one message announcing the handoff, and the
# confirmations of an opt-out or opt-in (the customer's request is honoured whoever holds the conversation).
SENT_WHILE_PAUSED = frozenset({JobKind.STAFF, JobKind.HANDOFF, JobKind.OPT_OUT, JobKind.OPT_IN})
# Kinds that answer an opt keyword: replies, so never sent as the template outside the 24-hour window.
OPT_CONFIRMATIONS = frozenset({JobKind.OPT_OUT, JobKind.OPT_IN})


class SendAs(models.TextChoices):
    """How the reply goes out (`OutboundJob.SendAs`)."""

    TEXT = "TEXT", "text"
    """A free-form reply, allowed inside the 24-hour window."""
    TEMPLATE = "TEMPLATE", "template"
    """The approved template, the only thing allowed outside the window."""


CLAIMABLE_STATUSES = [JobStatus.PENDING, JobStatus.READY_TO_SEND]


class Event(enum.StrEnum):
    """What moved a job; each is one `OutboundJob.mark_*` method, and its value is logged as `event=`."""

    CLAIM = "claim"
    """A worker took the job for one attempt."""
    GENERATED = "generated"
    """The reply (or the decision to send the template) was saved."""
    SEND_STARTED = "send_started"
    """The Graph call is about to go out."""
    SENT = "sent"
    """Meta accepted the message."""
    RETRY = "retry"
    """The claim was given back; another attempt later."""
    FAILED = "failed"
    """Given up."""
    SWITCH_TO_TEMPLATE = "switch_to_template"
    """Meta said the window is closed: the same claim sends the template."""
    SEND_UNCERTAIN = "send_uncertain"
    """No answer to a send that may have reached Meta."""
    SUPERSEDED = "superseded"
    """Folded into a newer job of the same contact."""
    STALE_RELEASED = "stale_released"
    """A dead worker's claim was released."""
    STALE_SEND_UNSETTLED = "stale_send_unsettled"
    """A dead worker's send that nothing settled, handed to staff."""
    SETTLED_BY_WEBHOOK = "settled_by_webhook"
    """A status webhook carrying the job's key proved the send reached Meta."""
    REOPEN_FOR_TEMPLATE = "reopen_for_template"
    """Meta failed a sent text with 131047 later: the template goes next."""
    STAFF_RETRY = "staff_retry"
    """Staff retried a failed job."""
    STAFF_REGENERATE = "staff_regenerate"
    """Staff dropped the reply to ask the model again."""
    STAFF_CANCEL = "staff_cancel"
    """Staff decided the job must never be sent."""
    HELD = "held"
    """The contact's bot was paused before the model was asked: the claim is given back, nothing spent."""
    HANDED_OFF = "handed_off"
    """A person took over: the bot's reply is never sent."""
    NO_REPLY = "no_reply"
    """Nothing to send: the model said the message needs no answer, or the customer opted out."""


S = JobStatus
# The state machine in one place: from → the statuses it may move to.
ALLOWED_TRANSITIONS: dict[str, frozenset[str]] = {
    S.PENDING: frozenset({S.GENERATING, S.SUPERSEDED, S.CANCELLED, S.HANDED_OFF}),
    S.GENERATING: frozenset({S.READY_TO_SEND, S.PENDING, S.FAILED, S.HANDED_OFF, S.NO_REPLY}),
    S.READY_TO_SEND: frozenset(
        {S.READY_TO_SEND, S.SENT, S.FAILED, S.PENDING, S.SUPERSEDED, S.CANCELLED, S.HANDED_OFF, S.NO_REPLY}
    ),
    S.SENT: frozenset({S.READY_TO_SEND}),
    S.FAILED: frozenset({S.PENDING, S.READY_TO_SEND, S.SENT, S.CANCELLED}),
    S.SUPERSEDED: frozenset(),
    S.CANCELLED: frozenset(),
    S.HANDED_OFF: frozenset(),
    S.NO_REPLY: frozenset(),
}
# Which statuses each event may start from. The table above says where a status may go; this one says which
# event may take it there: SENT → READY_TO_SEND exists for the 131047 template fallback, but a claim or a
# staff retry must never move a SENT job (that would send it twice).
EVENT_SOURCES: dict[Event, frozenset[str]] = {
    Event.CLAIM: frozenset({S.PENDING, S.READY_TO_SEND}),
    Event.GENERATED: frozenset({S.GENERATING}),
    Event.SEND_STARTED: frozenset({S.READY_TO_SEND}),
    Event.SENT: frozenset({S.READY_TO_SEND}),
    Event.RETRY: frozenset({S.GENERATING, S.READY_TO_SEND}),
    Event.FAILED: frozenset({S.GENERATING, S.READY_TO_SEND}),
    Event.SWITCH_TO_TEMPLATE: frozenset({S.READY_TO_SEND}),
    Event.SEND_UNCERTAIN: frozenset({S.READY_TO_SEND}),
    Event.SUPERSEDED: frozenset({S.PENDING, S.READY_TO_SEND}),
    Event.STALE_RELEASED: frozenset({S.GENERATING, S.READY_TO_SEND}),
    Event.STALE_SEND_UNSETTLED: frozenset({S.READY_TO_SEND}),
    Event.SETTLED_BY_WEBHOOK: frozenset({S.READY_TO_SEND, S.FAILED}),
    Event.REOPEN_FOR_TEMPLATE: frozenset({S.SENT}),
    Event.STAFF_RETRY: frozenset({S.FAILED}),
    Event.STAFF_REGENERATE: frozenset({S.FAILED, S.READY_TO_SEND}),
    Event.STAFF_CANCEL: frozenset({S.PENDING, S.READY_TO_SEND, S.FAILED}),
    Event.HELD: frozenset({S.GENERATING}),
    # A worker's claimed job (fenced), or an open job nobody holds when a person takes over.
    Event.HANDED_OFF: frozenset({S.PENDING, S.GENERATING, S.READY_TO_SEND}),
    # READY_TO_SEND: a bot reply generated before the customer opted out is never sent.
    Event.NO_REPLY: frozenset({S.GENERATING, S.READY_TO_SEND}),
}


def error_log_append(log: str, line: str, *, now: datetime) -> str:
    """Append one attempt's line, keeping the log bounded: the newest lines win."""
    line = " ".join(line.split())[:ERROR_LOG_MAX_LINE_CHARS]
    lines = [*log.splitlines(), f"{now:%Y-%m-%dT%H:%M:%SZ} {line}"]
    # The marker line carries the running count of what was dropped before, so it must not count as a line.
    already = 0
    marker = _DROPPED_MARKER.fullmatch(lines[0])
    if marker:
        already = int(marker.group(1))
        lines = lines[1:]
    if len(lines) > ERROR_LOG_MAX_LINES - 1 and (already or len(lines) > ERROR_LOG_MAX_LINES):
        keep = ERROR_LOG_MAX_LINES - 1
        already += len(lines) - keep
        lines = lines[-keep:]
    if already:
        lines = [f"({already} earlier lines dropped)", *lines]
    return "\n".join(lines)


_DROPPED_MARKER = re.compile(r"\((\d+) earlier lines dropped\)")
