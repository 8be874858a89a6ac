"""OpenAIReplyGenerator against the real fake OpenAI server: request shape, errors mapped, one request each."""

from __future__ import annotations

import logging
import re

import pytest

from bench.fakes import FakeOpenAI, FaultPlan
from outbound.exceptions import (
    ReplyConfigurationError,
    ReplyPermanentError,
    ReplyTransientError,
    ReplyUnusableError,
)
from outbound.replies import (
    RESPONSE_FORMAT,
    WHATSAPP_TEXT_LIMIT,
    ModelReply,
    OfflineReplyGenerator,
    OpenAIReplyGenerator,
    ReplyAction,
    Turn,
    fit_to_whatsapp,
)

KEY = "sk-test-openai-key-0123456789"
CONVERSATION = [
    Turn("user", "Do you have it in blue?"),
    Turn("assistant", "Yes."),
    Turn("user", "And green?"),
]


@pytest.fixture
def server():
    fake = FakeOpenAI(plan=FaultPlan())
    fake.start()
    yield fake
    fake.stop()


def generator(server: FakeOpenAI, *, timeout: float = 2.0) -> OpenAIReplyGenerator:
    return OpenAIReplyGenerator.from_settings(
        api_key=KEY, base_url=f"{server.url}/v1", model="gpt-test", timeout=timeout
    )


def openai_error(message: str, kind: str, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def test_request_carries_the_system_prompt_and_the_conversation(server):
    reply = generator(server).generate(system_prompt="Be brief.", conversation=CONVERSATION)
    assert reply == ModelReply(text=server.reply, action=ReplyAction.REPLY, knowledge_used=())
    assert len(server.requests) == 1
    request = server.requests[0]
    assert request["path"] == "/v1/chat/completions"
    headers = {name.lower(): value for name, value in request["headers"].items()}
    assert headers["authorization"] == f"Bearer {KEY}"
    assert request["body"]["model"] == "gpt-test"
    assert request["body"]["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Do you have it in blue?"},
        {"role": "assistant", "content": "Yes."},
        {"role": "user", "content": "And green?"},
    ]
    # Structured outputs: the model can only answer in the reply contract's shape.
    assert request["body"]["response_format"] == RESPONSE_FORMAT
    assert RESPONSE_FORMAT["json_schema"]["strict"] is True


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (500, openai_error("The server had an error", "server_error"), ReplyTransientError),
        (503, openai_error("overloaded", "server_error"), ReplyTransientError),
        (429, openai_error("Rate limit reached", "requests"), ReplyTransientError),
        (408, openai_error("timeout", "timeout"), ReplyTransientError),
        (
            401,
            openai_error(f"Incorrect API key provided: {KEY}.", "invalid_request_error", "invalid_api_key"),
            ReplyPermanentError,
        ),
        (400, openai_error("Invalid 'messages'", "invalid_request_error"), ReplyPermanentError),
        (
            404,
            openai_error("The model `gpt-test` does not exist", "invalid_request_error", "model_not_found"),
            ReplyPermanentError,
        ),
    ],
)
def test_errors_are_mapped_and_sent_exactly_once(server, status, body, error):
    server.plan.scripted = [(status, body)]
    with pytest.raises(error) as raised:
        generator(server).generate(system_prompt="s", conversation=CONVERSATION)
    # max_retries=0: the SDK never retries behind our back; attempts stay honest.
    assert len(server.requests) == 1
    assert f"http={status}" in str(raised.value)


@pytest.mark.parametrize(
    ("status", "code", "check"),
    [
        (401, "invalid_api_key", "OPENAI_API_KEY"),
        (403, "unsupported_country_region_territory", "OPENAI_API_KEY and its access to OPENAI_MODEL"),
        (404, "model_not_found", "OPENAI_MODEL (and OPENAI_BASE_URL)"),
    ],
)
def test_key_and_model_errors_are_configuration_errors_naming_the_setting(server, status, code, check):
    server.plan.scripted = [(status, openai_error("refused", "invalid_request_error", code))]
    with pytest.raises(ReplyConfigurationError) as raised:
        generator(server).generate(system_prompt="s", conversation=CONVERSATION)
    assert raised.value.check == check
    assert f"http={status}" in str(raised.value)


def test_a_bad_request_is_permanent_but_not_a_configuration_error(server):
    server.plan.scripted = [(400, openai_error("Invalid 'messages'", "invalid_request_error"))]
    with pytest.raises(ReplyPermanentError) as raised:
        generator(server).generate(system_prompt="s", conversation=CONVERSATION)
    assert not isinstance(raised.value, ReplyConfigurationError)


def test_retry_after_is_read_from_a_429(server):
    server.plan.scripted = [(429, openai_error("Rate limit reached", "requests"), {"retry-after": "7"})]
    with pytest.raises(ReplyTransientError) as raised:
        generator(server).generate(system_prompt="s", conversation=CONVERSATION)
    assert raised.value.retry_after == 7.0


def test_timeout_is_transient_and_not_retried(server):
    server.plan.latency = 1.0
    with pytest.raises(ReplyTransientError, match="Timeout"):
        generator(server, timeout=0.2).generate(system_prompt="s", conversation=CONVERSATION)
    assert len(server.requests) <= 1


def test_connection_refused_is_transient():
    fake = FakeOpenAI(plan=FaultPlan())
    url = fake.url
    fake.server.server_close()  # the port is free again: nothing listens
    gen = OpenAIReplyGenerator.from_settings(api_key=KEY, base_url=f"{url}/v1", model="m", timeout=2.0)
    with pytest.raises(ReplyTransientError, match="Connection"):
        gen.generate(system_prompt="s", conversation=CONVERSATION)


@pytest.mark.parametrize("content", ["", "   \n "])
def test_an_empty_reply_is_transient(server, content):
    server.reply = content
    with pytest.raises(ReplyTransientError, match="empty"):
        generator(server).generate(system_prompt="s", conversation=CONVERSATION)


def test_a_long_reply_is_fitted(server):
    server.reply = "word " * 2000
    reply = generator(server).generate(system_prompt="s", conversation=CONVERSATION)
    assert 0 < len(reply.text) <= WHATSAPP_TEXT_LIMIT


def test_the_key_never_reaches_the_error_or_the_logs(server, caplog):
    caplog.set_level(logging.DEBUG)
    server.plan.scripted = [
        (
            401,
            openai_error(
                f"Incorrect API key provided: {KEY}. You can find your API key at ...",
                "invalid_request_error",
                "invalid_api_key",
            ),
        )
    ]
    with pytest.raises(ReplyPermanentError) as raised:
        generator(server).generate(system_prompt="s", conversation=CONVERSATION)
    assert "401" in str(raised.value)
    assert KEY not in str(raised.value)
    assert KEY not in caplog.text


def test_fit_to_whatsapp():
    assert fit_to_whatsapp("short") == "short"
    exact = "a" * WHATSAPP_TEXT_LIMIT
    assert fit_to_whatsapp(exact) == exact
    sentences = "This is a sentence. " * 400
    fitted = fit_to_whatsapp(sentences)
    assert len(fitted) <= WHATSAPP_TEXT_LIMIT
    assert fitted.endswith(".\u2026")
    unbroken = "x" * 10_000
    assert len(fit_to_whatsapp(unbroken)) == WHATSAPP_TEXT_LIMIT
    assert fit_to_whatsapp(unbroken).endswith("\u2026")


def test_offline_generator_is_labelled_and_fitted():
    reply = OfflineReplyGenerator().generate(system_prompt="s", conversation=[Turn("user", "y" * 9000)])
    assert reply.action is ReplyAction.REPLY
    assert reply.text.startswith("[offline demo reply")
    assert len(reply.text) <= WHATSAPP_TEXT_LIMIT
    assert reply.knowledge_used == ()


# ------------------------------------------------------------------------------------------------ the contract
def test_the_answer_follows_the_contract_knowledge_ids_included(server):
    server.action = "reply"
    server.knowledge_used = [3, 7]
    reply = generator(server).generate(system_prompt="s", conversation=CONVERSATION)
    assert reply == ModelReply(text=server.reply, action=ReplyAction.REPLY, knowledge_used=(3, 7))


@pytest.mark.parametrize(
    ("action", "text"), [("handoff", ""), ("no_reply", ""), ("handoff", "Let me get someone.")]
)
def test_handoff_and_no_reply_need_no_text(server, action, text):
    server.action, server.reply = action, text
    reply = generator(server).generate(system_prompt="s", conversation=CONVERSATION)
    assert reply.action == ReplyAction(action)


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ({"refusal": "I'm sorry, I can't help with that."}, "the model refused: I'm sorry"),
        ({"finish_reason": "length"}, "incomplete (finish_reason=length)"),
        ({"finish_reason": "content_filter"}, "incomplete (finish_reason=content_filter)"),
        ({"content": "Sure, here you go"}, "not JSON"),
        ({"content": "[1, 2]"}, "does not follow the reply contract"),
        ({"content": '{"reply": "hi", "action": "reply"}'}, "does not follow the reply contract"),
        ({"content": '{"reply": "hi", "action": "reply", "knowledge_used": [], "x": 1}'}, "contract"),
        ({"content": '{"reply": "hi", "action": "escalate", "knowledge_used": []}'}, "unknown action"),
        ({"content": '{"reply": 5, "action": "reply", "knowledge_used": []}'}, "wrong type"),
        ({"content": '{"reply": "hi", "action": "reply", "knowledge_used": ["faq"]}'}, "entry ids"),
        ({"content": '{"reply": "  ", "action": "reply", "knowledge_used": []}'}, "empty reply"),
    ],
)
def test_an_unusable_answer_is_never_a_reply(server, fault, message):
    for name, value in fault.items():
        setattr(server, name, value)
    with pytest.raises(ReplyUnusableError, match=re.escape(message)):
        generator(server).generate(system_prompt="s", conversation=CONVERSATION)
    # Unusable answers are transient: the worker tries again before a person takes over.
    assert issubclass(ReplyUnusableError, ReplyTransientError)


def test_the_schema_is_strict_and_every_property_required():
    schema = RESPONSE_FORMAT["json_schema"]["schema"]
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == set(schema["properties"]) == {"reply", "action", "knowledge_used"}
    assert schema["properties"]["action"]["enum"] == ["reply", "handoff", "no_reply"]


def test_the_offline_generator_hands_off_when_asked_for_a_person():
    reply = OfflineReplyGenerator().generate(
        system_prompt="s", conversation=[Turn("user", "Can I talk to a real person please?")]
    )
    assert (reply.action, reply.text) == (ReplyAction.HANDOFF, "")
