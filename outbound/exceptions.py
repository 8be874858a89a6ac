"""Errors raised by the outbound clients; `outbound.retry` decides what each one means for a job.

OutboundError
├── GraphError                 the Graph API answered with an error body or a non-2xx status
├── GraphTransportError        no usable answer from the Graph API
│   ├── GraphConnectError      the request never reached Meta (safe to resend)
│   └── GraphResponseLost      the request went out but no answer came (the message may have been sent)
├── ReplyError                 the model did not give a usable reply
│   ├── ReplyTransientError    rate limit, timeout, connection, 5xx, empty reply: try again later
│   │   └── ReplyUnusableError a refusal, an incomplete answer, or JSON outside the reply contract: never
│   │                          sent; tried again, and once the attempts run out a person takes over
│   └── ReplyPermanentError    a request the model refuses (bad request): retrying will not help
│       └── ReplyConfigurationError  our key or model is wrong (401/403/404): not the job's fault; the
│                                  error names OPENAI_API_KEY or OPENAI_MODEL
├── MediaError                 a customer's voice note or image could not be used (outbound.media,
│   │                          outbound.transcription; the Graph media client also raises the Graph errors)
│   ├── MediaTransientError    transcription rate limit, timeout, connection, 5xx: try again later
│   ├── MediaUnavailableError  gone at Meta, expired, too large, corrupted, or an audio format the
│   │                          transcription refuses: the customer is asked to write or resend
│   └── MediaConfigurationError  our OpenAI key or transcription model is wrong: not the job's fault
└── ConfigurationError         a setting is missing or wrong (the error names it)
"""

from __future__ import annotations

from typing import Any

from outbound.redaction import redact
from outbound.usage import TokenUsage


class OutboundError(Exception):
    """Base class of everything the outbound clients raise."""


class GraphError(OutboundError):
    """An error answer from the Graph API, with Meta's fields kept for the policy and the error log."""

    def __init__(
        self,
        *,
        http_status: int,
        code: int | None,
        message: str,
        details: str = "",
        fbtrace_id: str = "",
        error_subcode: int | None = None,
    ) -> None:
        self.http_status = http_status
        self.code = code
        self.message = message
        self.details = details
        self.fbtrace_id = fbtrace_id
        self.error_subcode = error_subcode
        super().__init__(self.describe())

    def describe(self) -> str:
        parts = [f"http={self.http_status}", f"code={self.code}", self.message]
        if self.details:
            parts.append(f"details={self.details}")
        if self.fbtrace_id:
            parts.append(f"fbtrace_id={self.fbtrace_id}")
        return " ".join(parts)

    @classmethod
    def from_response(cls, http_status: int, body: Any, *, secrets: tuple[str, ...] = ()) -> GraphError:
        """Parse Meta's `{"error": {...}}` body; anything else is kept as an uncoded error.

        Meta sometimes quotes the request back ("Error validating access token EAA..."): every string in
        `secrets` is blanked out before the text is kept, since it ends up in logs and the error log.
        """

        error = body.get("error") if isinstance(body, dict) else None
        if not isinstance(error, dict):
            return cls(
                http_status=http_status,
                code=None,
                message=f"unexpected error body: {redact(str(body), secrets)[:200]}",
            )
        data = error.get("error_data")
        details = data.get("details", "") if isinstance(data, dict) else str(data or "")
        code = error.get("code")
        subcode = error.get("error_subcode")
        return cls(
            http_status=http_status,
            code=code if isinstance(code, int) else None,
            message=redact(str(error.get("message") or ""), secrets)[:300],
            details=redact(str(details), secrets)[:300],
            fbtrace_id=str(error.get("fbtrace_id") or "")[:64],
            error_subcode=subcode if isinstance(subcode, int) else None,
        )


class GraphTransportError(OutboundError):
    """No usable answer from the Graph API."""


class GraphConnectError(GraphTransportError):
    """The request never reached Meta: connection refused, DNS failure, connect timeout."""


class GraphResponseLost(GraphTransportError):
    """The request was sent but the answer never came (read timeout, dropped connection)."""


class ReplyError(OutboundError):
    """The model did not give a usable reply."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class ReplyTransientError(ReplyError):
    """Worth another attempt later (honouring `retry_after` when the provider gave one)."""


class ReplyUnusableError(ReplyTransientError):
    """The model answered, but with nothing we may send: a refusal, a cut-off answer, or a broken contract.

    `usage`: the tokens of that answer, paid for all the same (a cut-off answer is the most expensive kind).
    """

    usage: TokenUsage | None = None


class ReplyPermanentError(ReplyError):
    """Retrying will not help until something is fixed."""


class ReplyConfigurationError(ReplyPermanentError):
    """The provider refused our key (401/403) or does not know our model (404): every job would fail alike.

    `check` names the settings to look at, e.g. "OPENAI_API_KEY"; the worker keeps the job and stops the run.
    """

    def __init__(self, message: str, *, check: str) -> None:
        self.check = check
        super().__init__(message)


class ConfigurationError(OutboundError):
    """A setting is missing or wrong; the message names the variable."""


class MediaError(OutboundError):
    """A customer's voice note or image could not be used."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class MediaTransientError(MediaError):
    """Worth another attempt later (transcription rate limit, timeout, 5xx)."""


class MediaUnavailableError(MediaError):
    """This media cannot be used, now or later: the reply asks the customer to write or resend it.

    `reason` is one of `outbound.models.MediaStatus`'s failure values (GONE, TOO_LARGE, CORRUPT, UNREADABLE).
    """

    def __init__(self, message: str, *, reason: str) -> None:
        self.reason = reason
        super().__init__(message)


class MediaConfigurationError(MediaError):
    """OpenAI refused our key or does not know the transcription model: every voice note would fail alike."""

    def __init__(self, message: str, *, check: str) -> None:
        self.check = check
        super().__init__(message)
