"""Voice notes to text: OpenAI's transcription endpoint for real, and a labelled offline stand-in.

`client.audio.transcriptions.create(model=OPENAI_TRANSCRIPTION_MODEL, file=(name, bytes, mime))`, uploads up to
25 MB (https://developers.openai.com/docs/guides/speech-to-text). The client is the reply model's
(`outbound.replies.openai_client`: explicit timeout, no SDK retries). Errors are classified here:
`MediaTransientError` (rate limit, timeout, connection, 5xx), `MediaConfigurationError` (401/403/404: our key
or model), `MediaUnavailableError` (any other refusal, e.g. a 400 for an audio format it does not take: the
customer is asked to write instead).
"""

from __future__ import annotations

import logging
from typing import Protocol

import openai

from outbound.exceptions import MediaConfigurationError, MediaTransientError, MediaUnavailableError
from outbound.media import UNREADABLE
from outbound.redaction import redact
from outbound.replies import openai_client

logger = logging.getLogger(__name__)

OFFLINE_TRANSCRIPT_LABEL = "[offline demo transcript: no OpenAI key is configured]"
# Answers that say our configuration is wrong, not the voice note (as for the reply model).
CONFIGURATION_STATUSES = {
    401: "OPENAI_API_KEY",
    403: "OPENAI_API_KEY and its access to OPENAI_TRANSCRIPTION_MODEL",
    404: "OPENAI_TRANSCRIPTION_MODEL (and OPENAI_BASE_URL)",
}
# The file name tells the endpoint the format; Meta's voice notes are Ogg/Opus.
_EXTENSIONS = {
    "audio/ogg": "ogg",
    "audio/opus": "ogg",
    "audio/mpeg": "mp3",
    "audio/mp3": "mp3",
    "audio/mp4": "m4a",
    "audio/m4a": "m4a",
    "audio/aac": "m4a",
    "audio/amr": "amr",
    "audio/wav": "wav",
    "audio/webm": "webm",
}


class Transcriber(Protocol):
    def transcribe(self, *, data: bytes, mime_type: str) -> str: ...


class OpenAITranscriber:
    """Sends a voice note to OpenAI's transcription endpoint; the SDK's own retries are off."""

    def __init__(self, *, client: openai.OpenAI, model: str) -> None:
        self._client = client
        self._model = model

    @classmethod
    def from_settings(
        cls, *, api_key: str, base_url: str | None, model: str, timeout: float
    ) -> OpenAITranscriber:
        return cls(client=openai_client(api_key=api_key, base_url=base_url, timeout=timeout), model=model)

    def transcribe(self, *, data: bytes, mime_type: str) -> str:
        """Return what the customer said (may be empty for silence)."""
        base = mime_type.split(";")[0].strip().lower()
        name = f"voice.{_EXTENSIONS.get(base, 'ogg')}"
        try:
            result = self._client.audio.transcriptions.create(
                model=self._model, file=(name, data, base or "audio/ogg")
            )
        except openai.RateLimitError as exc:
            raise MediaTransientError(self._describe(exc), retry_after=_retry_after(exc)) from exc
        except (openai.APITimeoutError, openai.APIConnectionError) as exc:
            raise MediaTransientError(f"OpenAI transcription {type(exc).__name__}") from exc
        except openai.APIStatusError as exc:
            if exc.status_code >= 500 or exc.status_code in (408, 409):
                raise MediaTransientError(self._describe(exc), retry_after=_retry_after(exc)) from exc
            if exc.status_code in CONFIGURATION_STATUSES:
                raise MediaConfigurationError(
                    self._describe(exc), check=CONFIGURATION_STATUSES[exc.status_code]
                ) from exc
            raise MediaUnavailableError(self._describe(exc), reason=UNREADABLE) from exc
        except openai.OpenAIError as exc:
            raise MediaTransientError(
                f"OpenAI transcription {type(exc).__name__}: {self._scrub(str(exc))[:200]}"
            ) from exc
        text = getattr(result, "text", result if isinstance(result, str) else "")
        return str(text or "").strip()

    def _describe(self, exc: openai.APIStatusError) -> str:
        return (
            f"OpenAI transcription http={exc.status_code} {type(exc).__name__}: "
            f"{self._scrub(str(exc.message))[:200]}"
        )

    def _scrub(self, text: str) -> str:
        return redact(text, [self._client.api_key])


class OfflineTranscriber:
    """A clearly labelled fake transcript for a first run without an OpenAI key.

    The console media source's simulated voice notes carry their words as UTF-8: those come back, labelled.
    """

    def transcribe(self, *, data: bytes, mime_type: str) -> str:
        try:
            words = data.decode("utf-8").strip()
        except UnicodeDecodeError:
            words = f"(a {len(data)}-byte recording; the offline demo does not transcribe audio)"
        return f"{OFFLINE_TRANSCRIPT_LABEL} {words}"


def _retry_after(exc: openai.APIStatusError) -> float | None:
    value = exc.response.headers.get("retry-after") if exc.response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
