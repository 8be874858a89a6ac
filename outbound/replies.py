"""Reply generators: the OpenAI SDK for real, and a clearly labelled offline one for a first run."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import openai

from outbound.exceptions import ReplyConfigurationError, ReplyPermanentError, ReplyTransientError
from outbound.grounding import KnowledgeSnippet, knowledge_message
from outbound.redaction import redact

logger = logging.getLogger(__name__)

# WhatsApp's limit for a text body (Meta's text message reference).
WHATSAPP_TEXT_LIMIT = 4096
OFFLINE_LABEL = "[offline demo reply: no OpenAI key is configured]"
# Answers that say our configuration is wrong, not the job: a revoked or wrong key (401), a key without
# access to the model or project (403), a model name the provider does not know (404).
CONFIGURATION_STATUSES = {
    401: "OPENAI_API_KEY",
    403: "OPENAI_API_KEY and its access to OPENAI_MODEL",
    404: "OPENAI_MODEL (and OPENAI_BASE_URL)",
}


@dataclass(frozen=True)
class Turn:
    """One message of the conversation as the model sees it."""

    role: Literal["user", "assistant"]
    text: str


class ReplyGenerator(Protocol):
    def generate(
        self, *, system_prompt: str, conversation: list[Turn], knowledge: Sequence[KnowledgeSnippet] = ()
    ) -> str: ...


class OpenAIReplyGenerator:
    """Asks an OpenAI-compatible chat model for the reply. The SDK's own retries are off: attempts are ours."""

    def __init__(self, *, client: openai.OpenAI, model: str) -> None:
        self._client = client
        self._model = model

    @classmethod
    def from_settings(
        cls, *, api_key: str, base_url: str | None, model: str, timeout: float
    ) -> OpenAIReplyGenerator:
        client = openai.OpenAI(api_key=api_key, base_url=base_url, timeout=timeout, max_retries=0)
        return cls(client=client, model=model)

    def generate(
        self, *, system_prompt: str, conversation: list[Turn], knowledge: Sequence[KnowledgeSnippet] = ()
    ) -> str:
        """Return the model's reply to the conversation's last user turn, fitted to WhatsApp's limit.

        The knowledge entries go in a system message of their own, after the instructions (which stay first
        and identical, for prompt caching) and before the conversation: data, never mixed with either.
        """
        messages: list[dict[str, str]] = [{"role": "system", "content": system_prompt}]
        if knowledge:
            messages.append({"role": "system", "content": knowledge_message(knowledge)})
        messages += [{"role": turn.role, "content": turn.text} for turn in conversation]
        try:
            completion = self._client.chat.completions.create(
                model=self._model,
                messages=messages,  # type: ignore[arg-type]
            )
        except openai.RateLimitError as exc:
            raise ReplyTransientError(self._describe(exc), retry_after=_retry_after(exc)) from exc
        except (openai.APITimeoutError, openai.APIConnectionError) as exc:
            raise ReplyTransientError(f"OpenAI {type(exc).__name__}") from exc
        except openai.APIStatusError as exc:
            if exc.status_code >= 500 or exc.status_code in (408, 409):
                raise ReplyTransientError(self._describe(exc), retry_after=_retry_after(exc)) from exc
            if exc.status_code in CONFIGURATION_STATUSES:
                raise ReplyConfigurationError(
                    self._describe(exc), check=CONFIGURATION_STATUSES[exc.status_code]
                ) from exc
            raise ReplyPermanentError(self._describe(exc)) from exc
        except openai.OpenAIError as exc:
            raise ReplyTransientError(f"OpenAI {type(exc).__name__}: {self._scrub(str(exc))[:200]}") from exc
        choice = completion.choices[0] if completion.choices else None
        text = (choice.message.content or "").strip() if choice is not None else ""
        if not text:
            raise ReplyTransientError("the model returned an empty reply")
        return fit_to_whatsapp(text)

    def _describe(self, exc: openai.APIStatusError) -> str:
        return f"OpenAI http={exc.status_code} {type(exc).__name__}: {self._scrub(str(exc.message))[:200]}"

    def _scrub(self, text: str) -> str:
        # The provider's error text can quote our key back ("Incorrect API key provided: sk-..."), and it
        # ends up in logs and the error log.
        return redact(text, [self._client.api_key])


class OfflineReplyGenerator:
    """A canned, clearly labelled reply so that a first run shows the whole flow without an OpenAI key."""

    def generate(
        self, *, system_prompt: str, conversation: list[Turn], knowledge: Sequence[KnowledgeSnippet] = ()
    ) -> str:
        last = next((turn.text for turn in reversed(conversation) if turn.role == "user"), "")
        text = f"{OFFLINE_LABEL} Thanks for your message: \u201c{last[:200]}\u201d"
        if knowledge:
            # Shows a first run that retrieval works: which entries the model would have been given.
            text += " Knowledge the model would get: " + "; ".join(s.title for s in knowledge) + "."
        return fit_to_whatsapp(text)


def fit_to_whatsapp(text: str, limit: int = WHATSAPP_TEXT_LIMIT) -> str:
    """Cut a reply that is too long at the last sentence or word boundary, marked with an ellipsis."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    for boundary in (". ", "\n", " "):
        index = cut.rfind(boundary)
        if index > limit // 2:
            cut = cut[: index + (1 if boundary == ". " else 0)]
            break
    return cut.rstrip() + "\u2026"


def _retry_after(exc: openai.APIStatusError) -> float | None:
    value = exc.response.headers.get("retry-after") if exc.response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
