"""The domain's tables: contacts and their messages, reply jobs and their state machine, worker heartbeats,
the shared send schedule."""

from outbound.models.contacts import Contact, InboundMessage
from outbound.models.heartbeat import WorkerHeartbeat
from outbound.models.jobs import OutboundJob, OutboundJobQuerySet
from outbound.models.sendschedule import SendSchedule
from outbound.models.states import (
    ALLOWED_TRANSITIONS,
    EVENT_SOURCES,
    Event,
    IllegalTransition,
    JobChanged,
    error_log_append,
)

__all__ = [
    "ALLOWED_TRANSITIONS",
    "EVENT_SOURCES",
    "Contact",
    "Event",
    "IllegalTransition",
    "InboundMessage",
    "JobChanged",
    "OutboundJob",
    "OutboundJobQuerySet",
    "SendSchedule",
    "WorkerHeartbeat",
    "error_log_append",
]
