"""Reply generators: a chat model through the OpenAI SDK's client, and a clearly labelled offline one for a first run.

Both answer through one typed contract (`ModelReply`, the JSON schema `REPLY_SCHEMA` that OpenAI's structured
outputs enforce): the reply text, an action (`reply`, `handoff` to a person, or `no_reply`), and the knowledge
entries the reply used. Anything else the model sends back (a refusal, a cut-off answer, JSON outside the
contract) is a `ReplyUnusableError`, never a reply.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import httpx2
import openai

from outbound.exceptions import (
    ReplyConfigurationError,
    ReplyPermanentError,
    ReplyTransientError,
    ReplyUnusableError,
)
from outbound.grounding import KnowledgeSnippet, knowledge_message
from outbound.redaction import redact
from outbound.usage import TokenUsage

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
    # Images the customer sent with this message, as base64 data URLs (downloaded for this call only).
    images: tuple[str, ...] = ()


class ReplyAction(enum.StrEnum):
    """What the model decided to do with the customer's message."""

    REPLY = "reply"
    """Send `reply` to the customer."""
    HANDOFF = "handoff"
    """Hand the conversation to a person: OUTBOUND_HANDOFF_MESSAGE goes instead, and the bot pauses."""
    NO_REPLY = "no_reply"
    """Nothing needs saying (a thank-you, an emoji)."""


@dataclass(frozen=True)
class ModelReply:
    """The model's answer, checked against the contract."""

    text: str
    action: ReplyAction
    # Ids of the knowledge entries the reply drew on (empty until the knowledge base feeds the model).
    knowledge_used: tuple[int, ...] = ()
    # The tokens the call used (OpenAI's `usage`), for the cost per reply; None when the provider sent none.
    usage: TokenUsage | None = field(default=None, compare=False)


REPLY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "reply": {
            "type": "string",
            "description": "The message to send the customer (empty unless action is reply).",
        },
        "action": {"type": "string", "enum": [a.value for a in ReplyAction]},
        "knowledge_used": {
            "type": "array",
            "items": {"type": "integer"},
            "description": "Ids of the knowledge entries the reply is based on; empty when none.",
        },
    },
    "required": ["reply", "action", "knowledge_used"],
    "additionalProperties": False,
}
# Chat Completions' structured outputs (meta-whatsapp-api.md §12.6): the model can only answer in this shape.
RESPONSE_FORMAT: dict[str, Any] = {
    "type": "json_schema",
    "json_schema": {"name": "whatsapp_reply", "strict": True, "schema": REPLY_SCHEMA},
}


def parse_model_answer(content: str) -> ModelReply:
    """Check the model's JSON against the contract; raise ReplyUnusableError when it breaks it."""
    try:
        data = json.loads(content)
    except ValueError as exc:
        raise ReplyUnusableError(f"the model's answer is not JSON ({len(content)} characters)") from exc
    if not isinstance(data, dict) or set(data) != set(REPLY_SCHEMA["required"]):
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ReplyUnusableError(f"the model's answer does not follow the reply contract: {keys}")
    text, action, used = data["reply"], data["action"], data["knowledge_used"]
    if action not in ReplyAction.__members__.values():
        raise ReplyUnusableError(f"the model's answer has an unknown action {str(action)[:40]!r}")
    if not isinstance(text, str) or not isinstance(used, list):
        raise ReplyUnusableError("the model's answer has fields of the wrong type")
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in used):
        raise ReplyUnusableError("the model's knowledge_used holds something other than entry ids")
    text = text.strip()
    if action == ReplyAction.REPLY and not text:
        raise ReplyUnusableError("the model returned an empty reply")
    return ModelReply(text=fit_to_whatsapp(text), action=ReplyAction(action), knowledge_used=tuple(used))


class ReplyGenerator(Protocol):
    def generate(
        self, *, system_prompt: str, conversation: list[Turn], knowledge: Sequence[KnowledgeSnippet] = ()
    ) -> ModelReply: ...


def openai_client(*, api_key: str, base_url: str | None, timeout: float) -> openai.OpenAI:
    """The SDK client every OpenAI call uses: an explicit timeout, and the SDK's own retries off (attempts
    are the worker's)."""
    return openai.OpenAI(api_key=api_key, base_url=base_url, timeout=timeout, max_retries=0)


class OpenAIReplyGenerator:
    """Asks an OpenAI-compatible chat model for the reply. The SDK's own retries are off: attempts are ours."""

    def __init__(self, *, client: openai.OpenAI, model: str) -> None:
        if not client.api_key:
            raise ValueError("the OpenAI client has no API key (OPENAI_API_KEY)")
        self._client = client
        self._model = model
        # The request is the one the SDK's `chat.completions.create` sends (URL, headers, JSON body, timeout),
        # sent through the SDK's own httpx client (its connection pool, proxies, CA and redirect settings),
        # without the SDK's request machinery around it: per call, that machinery (options models, header
        # merging, retry bookkeeping) cost as much CPU as the HTTP exchange itself. What it would add for us
        # is nothing: retries are off (attempts are ours) and the key is a fixed bearer token.
        self._http: httpx2.Client = client._client  # the SDK's client: no public accessor
        self._url = f"{str(client.base_url).rstrip('/')}/chat/completions"
        self._timeout = client.timeout
        self._headers = _request_headers(client)

    @classmethod
    def from_settings(
        cls, *, api_key: str, base_url: str | None, model: str, timeout: float
    ) -> OpenAIReplyGenerator:
        return cls(client=openai_client(api_key=api_key, base_url=base_url, timeout=timeout), model=model)

    def generate(
        self, *, system_prompt: str, conversation: list[Turn], knowledge: Sequence[KnowledgeSnippet] = ()
    ) -> ModelReply:
        """Return the model's answer to the conversation's last user turn, its text fitted to WhatsApp's limit.

        The knowledge entries go in a system message of their own, after the instructions (which stay first
        and identical, for prompt caching) and before the conversation: data, never mixed with either.
        """
        messages: list[dict[str, Any]] = [{"role": "system", "content": system_prompt}]
        if knowledge:
            messages.append({"role": "system", "content": knowledge_message(knowledge)})
        messages += [{"role": turn.role, "content": turn_content(turn)} for turn in conversation]
        body = {"model": self._model, "messages": messages, "response_format": RESPONSE_FORMAT}
        try:
            response = self._http.post(self._url, json=body, headers=self._headers, timeout=self._timeout)
        except httpx2.TimeoutException as exc:
            # The names the SDK gave these, which staff know from the error log.
            raise ReplyTransientError("OpenAI APITimeoutError") from exc
        except (httpx2.HTTPError, httpx2.InvalidURL, httpx2.StreamError) as exc:
            raise ReplyTransientError(f"OpenAI APIConnectionError ({type(exc).__name__})") from exc
        if not response.is_success:
            status = response.status_code
            described = self._describe(response)
            if status == 429 or status >= 500 or status in (408, 409):
                raise ReplyTransientError(described, retry_after=_retry_after(response))
            if status in CONFIGURATION_STATUSES:
                raise ReplyConfigurationError(described, check=CONFIGURATION_STATUSES[status])
            raise ReplyPermanentError(described)
        try:
            completion = json.loads(response.content)
        except ValueError:
            completion = None
        if not isinstance(completion, dict):
            # No completion at all (a proxy's HTML page, a cut body): nothing was answered, nor paid for.
            raise ReplyTransientError(
                f"OpenAI http={response.status_code}: the answer is not a JSON object "
                f"({len(response.content)} bytes, {response.headers.get('content-type', 'no content type')})"
            )
        usage = TokenUsage.from_openai(completion.get("usage"))
        try:
            answer = self._answer_of(completion)
        except ReplyUnusableError as exc:
            exc.usage = usage
            raise
        return dataclasses.replace(answer, usage=usage)

    def _answer_of(self, completion: dict[str, Any]) -> ModelReply:
        """The completion's answer (Chat Completions' JSON), checked; ReplyUnusableError when there is nothing
        we may send."""
        choices = completion.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices else None
        if not isinstance(choice, dict):
            raise ReplyUnusableError("the model returned an empty reply (no choices)")
        message = choice.get("message")
        if not isinstance(message, dict):
            message = {}
        refusal = message.get("refusal")
        if refusal:
            # The refusal's words are the model's, not the customer's; a short excerpt helps staff see why.
            raise ReplyUnusableError(f"the model refused: {self._scrub(str(refusal))[:200]}")
        finish_reason = choice.get("finish_reason")
        if finish_reason in ("length", "content_filter"):
            raise ReplyUnusableError(f"the model's answer is incomplete (finish_reason={finish_reason})")
        content = message.get("content")
        if content is not None and not isinstance(content, str):
            raise ReplyUnusableError(f"the model's answer is not text ({type(content).__name__})")
        content = (content or "").strip()
        if not content:
            raise ReplyUnusableError("the model returned an empty reply")
        return parse_model_answer(content)

    def _describe(self, response: httpx2.Response) -> str:
        """`OpenAI http=429 RateLimitError: <the provider's message>`, the key scrubbed from it."""
        name = _STATUS_ERRORS.get(response.status_code, openai.APIStatusError).__name__
        if response.status_code >= 500:
            name = openai.InternalServerError.__name__
        return f"OpenAI http={response.status_code} {name}: {self._scrub(_error_message(response))[:200]}"

    def _scrub(self, text: str) -> str:
        # The provider's error text can quote our key back ("Incorrect API key provided: sk-..."), and it
        # ends up in logs and the error log.
        return redact(text, [self._client.api_key])


def turn_content(turn: Turn) -> str | list[dict[str, Any]]:
    """A turn's content: its text, or (with images) a text part followed by one image part per image, as
    Chat Completions takes them (§12.6: `{"type": "image_url", "image_url": {"url": "data:…"}}`)."""
    if not turn.images:
        return turn.text
    return [
        {"type": "text", "text": turn.text},
        *({"type": "image_url", "image_url": {"url": url}} for url in turn.images),
    ]


class OfflineReplyGenerator:
    """A canned, clearly labelled reply so that a first run shows the whole flow without an OpenAI key.

    It follows the model's contract (its answer is JSON checked by `parse_model_answer`), and hands off when
    the customer asks for a person in so many words, so that the handoff can be tried offline too.
    """

    def generate(
        self, *, system_prompt: str, conversation: list[Turn], knowledge: Sequence[KnowledgeSnippet] = ()
    ) -> ModelReply:
        last_turn = next((turn for turn in reversed(conversation) if turn.role == "user"), None)
        last = last_turn.text if last_turn is not None else ""
        if last_turn is not None and last_turn.images:
            last += (
                f" (with {len(last_turn.images)} image{'s' if len(last_turn.images) > 1 else ''} attached)"
            )
        answer: dict[str, object]
        if _ASKS_FOR_A_PERSON.search(last):
            answer = {"reply": "", "action": ReplyAction.HANDOFF.value, "knowledge_used": []}
        else:
            text = f"{OFFLINE_LABEL} Thanks for your message: \u201c{last[:200]}\u201d"
            if knowledge:
                # Shows a first run that retrieval works: which entries the model would have been given.
                text += " Knowledge the model would get: " + "; ".join(k.title for k in knowledge) + "."
            answer = {
                "reply": text,
                "action": ReplyAction.REPLY.value,
                "knowledge_used": [k.id for k in knowledge],
            }
        return parse_model_answer(json.dumps(answer))


_ASKS_FOR_A_PERSON = re.compile(r"\b(a (real )?(person|human)|an agent|someone real)\b", re.IGNORECASE)


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


def _request_headers(client: openai.OpenAI) -> dict[str, str]:
    """The headers the SDK sends with a chat completion, worked out once: its defaults (user agent, platform,
    organization and project when set, a client's own `default_headers`), the bearer key unless those set an
    Authorization of their own (as the SDK merges them), and the retry count and read timeout it reports."""
    defaults = {key: value for key, value in client.default_headers.items() if isinstance(value, str)}
    auth = (
        {}
        if any(key.lower() == "authorization" for key in defaults)
        else {"Authorization": f"Bearer {client.api_key}"}
    )
    headers = {**auth, **defaults}
    headers["x-stainless-retry-count"] = "0"
    timeout = client.timeout
    read = timeout.read if isinstance(timeout, httpx2.Timeout) else timeout
    if read is not None:
        headers["x-stainless-read-timeout"] = str(read)
    return headers


# The SDK's error class for each status (its `_make_status_error`), by name in the error lines staff read.
_STATUS_ERRORS: dict[int, type[openai.APIStatusError]] = {
    400: openai.BadRequestError,
    401: openai.AuthenticationError,
    403: openai.PermissionDeniedError,
    404: openai.NotFoundError,
    409: openai.ConflictError,
    422: openai.UnprocessableEntityError,
    429: openai.RateLimitError,
}


def _error_message(response: httpx2.Response) -> str:
    """The provider's own words: `error.message` of a JSON error body, else the body's text."""
    try:
        body = json.loads(response.content)
    except ValueError:
        return response.text.strip()
    error = body.get("error") if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    return str(message) if message else json.dumps(body)


def _retry_after(response: httpx2.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
