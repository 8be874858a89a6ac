"""The domain's tables: contacts and their messages, reply jobs and their state machine, worker heartbeats,
the business's knowledge and the reply settings."""

from outbound.models.contacts import Contact, InboundMessage
from outbound.models.heartbeat import WorkerHeartbeat
from outbound.models.jobs import OutboundJob, OutboundJobQuerySet
from outbound.models.knowledge import KnowledgeEntry, ReplySettings
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
    "KnowledgeEntry",
    "OutboundJob",
    "OutboundJobQuerySet",
    "ReplySettings",
    "WorkerHeartbeat",
    "error_log_append",
]
