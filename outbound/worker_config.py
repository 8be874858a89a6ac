"""The worker's configuration: the sender, the reply generator, the policy numbers and the system prompt.

Built from Django settings once per run (`worker_config_from_settings`); tests build a `WorkerConfig` directly.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.db import connection

from outbound.media import DEFAULT_MEDIA_MAX_BYTES, ConsoleMediaSource, GraphMediaClient, MediaSource
from outbound.numbers import default_phone_number_id
from outbound.ratelimit import SendLimiter, SendRateLimiter, SharedSendRateLimiter
from outbound.replies import OfflineReplyGenerator, OpenAIReplyGenerator, ReplyGenerator, openai_client
from outbound.transcription import OfflineTranscriber, OpenAITranscriber, Transcriber
from outbound.whatsapp import Sender, WhatsAppClient

# The limiter counts sends by our clock when it lets them go; Meta counts them by its clock when they arrive.
# Between the two lie a database write, a possible new connection and the thread scheduler, tens of ms apart
# from one send to the next, so a window of exactly 1 s let bursts of N+25% land inside one of Meta's seconds
# (bench.run_all, 20/s limit: 25-29 sends in one second). 100 ms of headroom absorbs that jitter.
# The shared limiter (PostgreSQL) keeps the same margin: its slots are 1.1 s / N apart on the database's clock,
# so N+1 of them span at least 1.1 s, and a send delayed by up to 100 ms more than another on its way to Meta
# still cannot squeeze N+1 into one of Meta's seconds.
SEND_RATE_WINDOW_SECONDS = 1.1
# The one default system prompt, shipped with the code (OPENAI_SYSTEM_PROMPT_FILE points here by default).
DEFAULT_SYSTEM_PROMPT_FILE = (
    Path(__file__).resolve().parent.parent / "templates" / "outbound" / "system_prompt.txt"
)


def default_system_prompt() -> str:
    """The shipped prompt: used when neither OPENAI_SYSTEM_PROMPT nor a readable prompt file says otherwise."""
    return DEFAULT_SYSTEM_PROMPT_FILE.read_text(encoding="utf-8").strip()


@dataclass
class WorkerConfig:
    """Everything a worker needs to process jobs; built from settings once per run."""

    sender: Sender
    generator: ReplyGenerator
    rate_limiter: SendLimiter
    system_prompt: str = field(default_factory=default_system_prompt)
    template_name: str = ""
    template_language: str = "en_US"
    template_body_parameters: list[str] = field(default_factory=list)
    max_attempts: int = 5
    retry_base_seconds: float = 30.0
    retry_max_seconds: float = 3600.0
    window_margin_seconds: int = 300
    history_messages: int = 20
    knowledge_top_k: int = 5
    secrets: tuple[str, ...] = ()
    # Human handoff: the message sent once when a conversation is handed to a person (empty: none), and the
    # "Talk to a person" button title offered in bot replies (empty: no button).
    handoff_message: str = "Thanks! A person from our team will answer you here as soon as possible."
    handoff_button: str = ""
    # Mark the customer's message read with "typing…" before asking the model (best effort, short timeout).
    typing_indicator: bool = False
    typing_indicator_timeout: float = 2.0
    # The confirmations of a customer's STOP and START (outbound.services.optout).
    opt_out_message: str = (
        "You will get no more automatic replies from us here. Send START to turn them back on."
    )
    opt_in_message: str = (
        "Welcome back! We will answer your messages here again. Send STOP at any time to stop."
    )
    # Voice notes and images (outbound.services.media): where their bytes come from and who transcribes them.
    # None: media is not fetched, and the model reads only that the customer sent one.
    media_source: MediaSource | None = None
    transcriber: Transcriber | None = None
    media_max_bytes: int = DEFAULT_MEDIA_MAX_BYTES
    # The send limit is per business number (Meta counts per number): `limiter_factory` makes each number's
    # limiter on first use. Without one (a config built by hand), `rate_limiter` serves every number.
    limiter_factory: Callable[[str], SendLimiter] | None = None
    _limiters: dict[str, SendLimiter] = field(default_factory=dict, repr=False)
    _limiters_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def limiter_for(self, phone_number_id: str) -> SendLimiter:
        """The send limiter of one business number (`rate_limiter` for the default number)."""
        if self.limiter_factory is None:
            return self.rate_limiter
        with self._limiters_lock:
            limiter = self._limiters.get(phone_number_id)
            if limiter is None:
                limiter = self._limiters[phone_number_id] = self.limiter_factory(phone_number_id)
            return limiter


def worker_config_from_settings() -> WorkerConfig:
    """Build the sender, the reply generator and the policy numbers from Django settings."""
    from outbound.console import ConsoleSender

    sender: Sender
    media_source: MediaSource
    # The default number: a contact always carries its own (migration 0007 gave the older ones the first).
    phone_number_id = default_phone_number_id()
    if settings.OUTBOUND_SENDER == "console":
        sender = ConsoleSender(phone_number_id=phone_number_id or "PHONE_NUMBER_ID")
        media_source = ConsoleMediaSource()
    else:
        media_source = GraphMediaClient(
            access_token=settings.WHATSAPP_ACCESS_TOKEN,
            base_url=settings.WHATSAPP_GRAPH_URL,
            api_version=settings.WHATSAPP_API_VERSION,
            timeout=settings.WHATSAPP_TIMEOUT,
        )
        sender = WhatsAppClient(
            access_token=settings.WHATSAPP_ACCESS_TOKEN,
            phone_number_id=phone_number_id,
            base_url=settings.WHATSAPP_GRAPH_URL,
            api_version=settings.WHATSAPP_API_VERSION,
            timeout=settings.WHATSAPP_TIMEOUT,
        )
    generator: ReplyGenerator
    transcriber: Transcriber
    # One SDK client for the reply model and transcription: one connection pool, and one TLS context to load
    # (about 50 ms of CPU each, paid by every run).
    openai_sdk = (
        None
        if settings.OUTBOUND_REPLY_GENERATOR == "offline"
        else openai_client(
            api_key=settings.OPENAI_API_KEY,
            base_url=settings.OPENAI_BASE_URL,
            timeout=settings.OPENAI_TIMEOUT,
        )
    )
    # The console media source's "voice notes" (simulate_inbound) are their words, not audio: only the offline
    # transcriber can read them, whatever generates the reply.
    if openai_sdk is None or isinstance(media_source, ConsoleMediaSource):
        transcriber = OfflineTranscriber()
    else:
        transcriber = OpenAITranscriber(client=openai_sdk, model=settings.OPENAI_TRANSCRIPTION_MODEL)
    if openai_sdk is None:
        generator = OfflineReplyGenerator()
    else:
        generator = OpenAIReplyGenerator(client=openai_sdk, model=settings.OPENAI_MODEL)
    limiter = send_limiter(phone_number_id=phone_number_id)
    return WorkerConfig(
        sender=sender,
        generator=generator,
        rate_limiter=limiter,
        limiter_factory=lambda number: (
            limiter if number in ("", phone_number_id) else send_limiter(phone_number_id=number)
        ),
        system_prompt=system_prompt_from_settings(),
        template_name=settings.WHATSAPP_TEMPLATE_NAME,
        template_language=settings.WHATSAPP_TEMPLATE_LANGUAGE,
        template_body_parameters=list(settings.WHATSAPP_TEMPLATE_BODY_PARAMETERS),
        max_attempts=settings.OUTBOUND_MAX_ATTEMPTS,
        retry_base_seconds=settings.OUTBOUND_RETRY_BASE_SECONDS,
        retry_max_seconds=settings.OUTBOUND_RETRY_MAX_SECONDS,
        window_margin_seconds=settings.WHATSAPP_WINDOW_MARGIN_SECONDS,
        history_messages=settings.OPENAI_HISTORY_MESSAGES,
        knowledge_top_k=settings.OUTBOUND_KNOWLEDGE_TOP_K,
        handoff_message=settings.OUTBOUND_HANDOFF_MESSAGE.strip(),
        handoff_button=settings.OUTBOUND_HANDOFF_BUTTON.strip(),
        typing_indicator=settings.OUTBOUND_TYPING_INDICATOR,
        typing_indicator_timeout=settings.OUTBOUND_TYPING_INDICATOR_TIMEOUT,
        opt_out_message=settings.OUTBOUND_OPT_OUT_MESSAGE.strip(),
        opt_in_message=settings.OUTBOUND_OPT_IN_MESSAGE.strip(),
        media_source=media_source,
        transcriber=transcriber,
        media_max_bytes=settings.OUTBOUND_MEDIA_MAX_BYTES,
        secrets=tuple(
            s
            for s in (settings.WHATSAPP_ACCESS_TOKEN, settings.OPENAI_API_KEY, settings.WHATSAPP_APP_SECRET)
            if s
        ),
    )


def send_limiter(*, phone_number_id: str) -> SendLimiter:
    """OUTBOUND_MAX_SENDS_PER_SECOND for one business number: shared by every worker on PostgreSQL (Meta
    counts per number, whoever sends), per process on SQLite (one machine, one worker). Each number has its
    own (`WorkerConfig.limiter_for`): a busy number never slows another's replies."""
    rate = settings.OUTBOUND_MAX_SENDS_PER_SECOND
    if connection.vendor == "postgresql":
        return SharedSendRateLimiter(rate, key=phone_number_id or "-", window=SEND_RATE_WINDOW_SECONDS)
    return SendRateLimiter(rate, window=SEND_RATE_WINDOW_SECONDS)


def system_prompt_from_settings() -> str:
    """OPENAI_SYSTEM_PROMPT if set, else the prompt file, else the shipped default.

    This is the default: a prompt staff save in the admin (reply settings) wins over it, reply by reply.
    """
    if settings.OPENAI_SYSTEM_PROMPT:
        return str(settings.OPENAI_SYSTEM_PROMPT)
    path = Path(settings.OPENAI_SYSTEM_PROMPT_FILE)
    if path.is_file():
        return path.read_text(encoding="utf-8").strip() or default_system_prompt()
    return default_system_prompt()
