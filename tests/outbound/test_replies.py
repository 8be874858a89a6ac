"""OpenAIReplyGenerator against the real fake OpenAI server: request shape, errors mapped, one request each."""

from __future__ import annotations

import json
import logging
import re

import httpx2
import openai
import pytest

from bench.fakes import FakeOpenAI, FaultPlan, Reply
from outbound.exceptions import (
    ReplyConfigurationError,
    ReplyPermanentError,
    ReplyTransientError,
    ReplyUnusableError,
)
from outbound.grounding import KnowledgeSnippet, knowledge_message
from outbound.replies import (
    RESPONSE_FORMAT,
    WHATSAPP_TEXT_LIMIT,
    ModelReply,
    OfflineReplyGenerator,
    OpenAIReplyGenerator,
    ReplyAction,
    Turn,
    fit_to_whatsapp,
    turn_content,
)
from outbound.usage import TokenUsage

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


# ------------------------------------------------------------- the request create would send, without the SDK's machinery
@pytest.mark.parametrize(
    ("conversation", "knowledge"),
    [
        (CONVERSATION, ()),
        (
            [Turn("user", 'Is it "waterproof"? \u2028 \U0001f600', images=("data:image/jpeg;base64,AAAA",))],
            (KnowledgeSnippet(id=3, title="Jackets", body="All jackets are waterproof."),),
        ),
    ],
)
def test_the_request_has_the_url_body_header_values_and_timeout_of_the_typed_sdk_call(
    conversation, knowledge
):
    # generate() sends its request through the SDK's httpx client without the SDK's request machinery: what
    # goes on the wire (URL, headers, body, timeout) must stay what `chat.completions.create` sends.
    sent: list[httpx2.Request] = []
    answer = {"reply": "hi", "action": "reply", "knowledge_used": []}

    def handler(request: httpx2.Request) -> httpx2.Response:
        sent.append(request)
        completion = {"choices": [{"finish_reason": "stop", "message": {"content": json.dumps(answer)}}]}
        return httpx2.Response(200, json=completion)

    client = openai.OpenAI(
        api_key=KEY,
        base_url="http://openai.test/v1",
        timeout=3.5,
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
    )
    OpenAIReplyGenerator(client=client, model="gpt-test").generate(
        system_prompt="Be brief.", conversation=conversation, knowledge=knowledge
    )
    messages = [{"role": "system", "content": "Be brief."}]
    if knowledge:
        messages.append({"role": "system", "content": knowledge_message(knowledge)})
    messages += [{"role": turn.role, "content": turn_content(turn)} for turn in conversation]
    client.chat.completions.create(model="gpt-test", messages=messages, response_format=RESPONSE_FORMAT)
    ours, typed = sent
    assert (
        (ours.method, ours.url)
        == (typed.method, typed.url)
        == ("POST", "http://openai.test/v1/chat/completions")
    )
    assert ours.content == typed.content
    assert dict(ours.headers) == dict(typed.headers)
    assert (
        ours.extensions["timeout"]
        == typed.extensions["timeout"]
        == dict.fromkeys(("connect", "read", "write", "pool"), 3.5)
    )


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ({"refusal": "I can't help with that."}, "the model refused"),
        ({"finish_reason": "length"}, "finish_reason=length"),
        ({"content": "not json"}, "not JSON"),
    ],
)
def test_an_unusable_answer_carries_the_tokens_it_cost(server, fault, message):
    for name, value in fault.items():
        setattr(server, name, value)
    server.prompt_tokens, server.cached_tokens, server.completion_tokens = 600, 100, 4000
    with pytest.raises(ReplyUnusableError, match=message) as raised:
        generator(server).generate(system_prompt="s", conversation=CONVERSATION)
    assert raised.value.usage == TokenUsage(input_tokens=600, output_tokens=4000, cached_input_tokens=100)


def test_a_429_gives_its_retry_after_and_a_401_names_the_key(server):
    server.plan.scripted = [
        (429, openai_error("Rate limit reached", "requests"), {"retry-after": "2.5"}),
        (401, openai_error("Incorrect API key", "invalid_request_error", "invalid_api_key")),
    ]
    with pytest.raises(ReplyTransientError) as limited:
        generator(server).generate(system_prompt="s", conversation=CONVERSATION)
    assert (type(limited.value), limited.value.retry_after) == (ReplyTransientError, 2.5)
    assert "http=429 RateLimitError: Rate limit reached" in str(limited.value)
    with pytest.raises(ReplyConfigurationError) as refused:
        generator(server).generate(system_prompt="s", conversation=CONVERSATION)
    assert refused.value.check == "OPENAI_API_KEY"
    assert "http=401 AuthenticationError" in str(refused.value)
    assert len(server.requests) == 2


@pytest.mark.parametrize(
    "answer",
    [
        Reply(200, b"<html>Welcome to the proxy</html>", "text/html"),
        Reply(200, b'{"choices": [', "application/json"),
        Reply(200, b"[1, 2]", "application/json"),
        Reply(200, b"", "application/json"),
    ],
)
def test_a_200_that_is_no_completion_at_all_is_transient_not_unusable(server, answer):
    # No model answered (a proxy's page, a cut body): worth another attempt, and no tokens to count.
    server.plan.scripted = [(200, answer)]
    with pytest.raises(ReplyTransientError, match="not a JSON object") as raised:
        generator(server).generate(system_prompt="s", conversation=CONVERSATION)
    assert not isinstance(raised.value, ReplyUnusableError)
    assert "http=200" in str(raised.value)


@pytest.mark.parametrize(
    ("completion", "message"),
    [
        ({}, "no choices"),
        ({"choices": []}, "no choices"),
        ({"choices": ["x"]}, "no choices"),
        ({"choices": [{"finish_reason": "stop"}]}, "empty reply"),
        ({"choices": [{"finish_reason": "stop", "message": {"content": None}}]}, "empty reply"),
        ({"choices": [{"finish_reason": "stop", "message": {"content": [{"type": "text"}]}}]}, "not text"),
    ],
)
def test_a_completion_of_the_wrong_shape_is_unusable(server, completion, message):
    server.plan.scripted = [(200, completion)]
    with pytest.raises(ReplyUnusableError, match=message):
        generator(server).generate(system_prompt="s", conversation=CONVERSATION)


@pytest.mark.parametrize(
    ("status", "answer", "described"),
    [
        (503, Reply(503, b"<html>upstream down</html>", "text/html"), "http=503 InternalServerError: <html>"),
        (
            422,
            Reply(422, b'{"detail": "bad"}', "application/json"),
            'http=422 UnprocessableEntityError: {"detail"',
        ),
        (418, Reply(418, b"", "text/plain"), "http=418 APIStatusError: "),
    ],
)
def test_an_error_answer_is_described_by_status_class_and_the_providers_words(
    server, status, answer, described
):
    server.plan.scripted = [(status, answer)]
    with pytest.raises((ReplyTransientError, ReplyPermanentError)) as raised:
        generator(server).generate(system_prompt="s", conversation=CONVERSATION)
    assert str(raised.value).startswith(f"OpenAI {described}")
    assert isinstance(raised.value, ReplyTransientError) == (status >= 500)


def test_a_client_without_a_key_is_refused_when_built():
    client = openai.OpenAI(api_key="placeholder", base_url="http://openai.test/v1", max_retries=0)
    client.api_key = ""
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        OpenAIReplyGenerator(client=client, model="m")


def test_the_read_timeout_header_follows_an_httpx_timeout():
    client = openai.OpenAI(
        api_key=KEY, base_url="http://openai.test/v1", max_retries=0, timeout=httpx2.Timeout(9.0, read=30.0)
    )
    sent: list[httpx2.Request] = []
    typed = openai.OpenAI(
        api_key=KEY,
        base_url="http://openai.test/v1",
        max_retries=0,
        timeout=httpx2.Timeout(9.0, read=30.0),
        http_client=httpx2.Client(
            transport=httpx2.MockTransport(lambda r: sent.append(r) or httpx2.Response(400))
        ),
    )
    with pytest.raises(openai.BadRequestError):
        typed.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    headers = OpenAIReplyGenerator(client=client, model="m")._headers
    assert headers["x-stainless-read-timeout"] == sent[0].headers["x-stainless-read-timeout"] == "30.0"


def test_an_authorization_of_the_clients_own_headers_wins_as_in_the_sdk():
    client = openai.OpenAI(
        api_key=KEY,
        base_url="http://openai.test/v1",
        max_retries=0,
        default_headers={"authorization": "Bearer gateway-token"},
    )
    headers = OpenAIReplyGenerator(client=client, model="m")._headers
    assert [value for key, value in headers.items() if key.lower() == "authorization"] == [
        "Bearer gateway-token"
    ]
