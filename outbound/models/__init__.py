"""The domain's tables: contacts (with their bot state) and their messages both ways, reply jobs and their
state machine, worker heartbeats, the business's knowledge and the reply settings, the shared send schedule,
and what Meta last said about the message templates."""

from outbound.models.contacts import (
    BotPauseReason,
    Contact,
    EchoMessage,
    InboundMessage,
    MarketingPreference,
    MediaStatus,
    bot_paused_q,
)
from outbound.models.heartbeat import WorkerHeartbeat
from outbound.models.job_people import BotPaused
from outbound.models.jobs import OutboundJob, OutboundJobQuerySet
from outbound.models.knowledge import KnowledgeEntry, ReplySettings
from outbound.models.sendschedule import SendSchedule
from outbound.models.states import (
    ALLOWED_TRANSITIONS,
    EVENT_SOURCES,
    Event,
    IllegalTransition,
    JobChanged,
    error_log_append,
)
from outbound.models.templates import WhatsAppTemplate

__all__ = [
    "ALLOWED_TRANSITIONS",
    "EVENT_SOURCES",
    "BotPauseReason",
    "BotPaused",
    "Contact",
    "EchoMessage",
    "Event",
    "IllegalTransition",
    "InboundMessage",
    "JobChanged",
    "KnowledgeEntry",
    "MarketingPreference",
    "MediaStatus",
    "OutboundJob",
    "OutboundJobQuerySet",
    "ReplySettings",
    "SendSchedule",
    "WhatsAppTemplate",
    "WorkerHeartbeat",
    "bot_paused_q",
    "error_log_append",
]
