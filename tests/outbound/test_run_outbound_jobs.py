"""The worker end to end: the real webhook view creates jobs, the real command processes them.

Graph is `responses` (nothing leaves the process), OpenAI is the real fake server on loopback.
"""

from __future__ import annotations

import json
import logging
from datetime import timedelta

import pytest
import requests
import responses
from django.core.management import CommandError
from django.utils import timezone
from responses import matchers

from bench.fakes import FakeGraph, self_signed_certificate
from bench.fakes import openai_error as scripted_openai_error
from outbound import worker as worker_module
from outbound.models import OutboundJob
from outbound.services.claims import outbound_jobs_claim
from tests.conftest import status_payload
from tests.outbound.conftest import GRAPH_MESSAGES_URL, graph_err, graph_ok, make_due, run_jobs

pytestmark = pytest.mark.django_db
S = OutboundJob.Status
TOKEN = "EAAtestaccesstoken0123456789abcdef"
OPENAI_KEY = "sk-test-openai-key-0123456789"


def sent_bodies(graph) -> list[dict]:
    return [json.loads(call.request.body) for call in graph.calls]


def fresh(job: OutboundJob) -> OutboundJob:
    return OutboundJob.objects.get(pk=job.pk)


def openai_error(message: str, kind: str = "invalid_request_error") -> dict:
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def go_stale(job: OutboundJob, seconds: int = 400) -> None:
    OutboundJob.objects.filter(pk=job.pk).update(claimed_at=timezone.now() - timedelta(seconds=seconds))


# ------------------------------------------------------------------------------------------------ window
def test_inside_the_window_a_text_reply_quotes_the_message(inbound, graph, fake_openai):
    job = inbound(body="Do you have it in blue?", wamid="wamid.Q1")
    graph.post(GRAPH_MESSAGES_URL, json=graph_ok("wamid.OUT1"))
    run_jobs()
    job = fresh(job)
    assert (job.status, job.send_as, job.content, job.wa_message_id) == (
        S.SENT,
        OutboundJob.SendAs.TEXT,
        fake_openai.reply,
        "wamid.OUT1",
    )
    assert (job.attempts, job.claim_token, job.error_log) == (1, None, "")
    [body] = sent_bodies(graph)
    assert body["type"] == "text"
    assert body["to"] == "+16505551234"
    assert body["text"]["body"] == fake_openai.reply
    assert body["context"] == {"message_id": "wamid.Q1"}
    assert body["biz_opaque_callback_data"] == f"{job.key}:text"
    assert fake_openai.requests[0]["body"]["messages"][-1] == {
        "role": "user",
        "content": "Do you have it in blue?",
    }


def test_outside_the_window_the_template_goes_with_the_name_and_no_model_call(inbound, graph, fake_openai):
    job = inbound(name="Sheena", minutes_ago=60 * 30)
    graph.post(
        GRAPH_MESSAGES_URL,
        json=graph_ok("wamid.T1", message_status="accepted"),
        match=[
            matchers.json_params_matcher(
                {
                    "type": "template",
                    "template": {
                        "name": "reply_follow_up",
                        "language": {"code": "en_US"},
                        "components": [{"type": "body", "parameters": [{"type": "text", "text": "Sheena"}]}],
                    },
                    "biz_opaque_callback_data": f"{job.key}:template",
                },
                strict_match=False,
            )
        ],
    )
    run_jobs()
    job = fresh(job)
    assert (job.status, job.send_as, job.content, job.message_status) == (
        S.SENT,
        OutboundJob.SendAs.TEMPLATE,
        "",
        "accepted",
    )
    assert len(graph.calls) == 1
    assert fake_openai.requests == []


def test_outside_the_window_without_a_template_fails_naming_the_setting(
    inbound, graph, fake_openai, settings
):
    settings.WHATSAPP_TEMPLATE_NAME = ""
    job = inbound(minutes_ago=60 * 30)
    run_jobs()
    job = fresh(job)
    assert job.status == S.FAILED
    assert "WHATSAPP_TEMPLATE_NAME" in job.error_log
    assert len(graph.calls) == 0
    assert fake_openai.requests == []


# ------------------------------------------------------------------------------------------------ 131047
def test_131047_on_the_text_sends_the_template_in_the_same_run(inbound, graph, fake_openai):
    job = inbound()
    graph.post(GRAPH_MESSAGES_URL, status=400, json=graph_err(131047, "Re-engagement message"))
    graph.post(GRAPH_MESSAGES_URL, json=graph_ok("wamid.T1"))
    run_jobs()
    job = fresh(job)
    assert (job.status, job.send_as, job.wa_message_id, job.attempts) == (
        S.SENT,
        OutboundJob.SendAs.TEMPLATE,
        "wamid.T1",
        1,
    )
    assert [body["type"] for body in sent_bodies(graph)] == ["text", "template"]
    assert "code=131047" in job.error_log


def test_131047_on_the_template_too_fails(inbound, graph, fake_openai):
    job = inbound()
    graph.post(GRAPH_MESSAGES_URL, status=400, json=graph_err(131047))
    graph.post(GRAPH_MESSAGES_URL, status=400, json=graph_err(131047))
    run_jobs()
    job = fresh(job)
    assert job.status == S.FAILED
    assert len(graph.calls) == 2
    assert job.error_log.count("code=131047") == 2


def test_a_failed_131047_status_for_a_sent_text_sends_the_template_next_run_once(
    inbound, graph, fake_openai, webhook
):
    job = inbound()
    graph.post(GRAPH_MESSAGES_URL, json=graph_ok("wamid.TEXT"))
    run_jobs()
    assert fresh(job).status == S.SENT
    failed = status_payload(
        wamid="wamid.TEXT",
        status="failed",
        timestamp=int(timezone.now().timestamp()),
        callback_data=f"{job.key}:text",
        error_code=131047,
    )
    assert webhook(failed).status_code == 200
    assert fresh(job).delivery_error_code == 131047
    graph.post(GRAPH_MESSAGES_URL, json=graph_ok("wamid.TEMPLATE"))
    out = run_jobs()
    job = fresh(job)
    assert (job.status, job.send_as, job.wa_message_id) == (
        S.SENT,
        OutboundJob.SendAs.TEMPLATE,
        "wamid.TEMPLATE",
    )
    assert [body["type"] for body in sent_bodies(graph)] == ["text", "template"]
    assert sent_bodies(graph)[1]["biz_opaque_callback_data"] == f"{job.key}:template"
    assert "recovered=1" in out
    # The template also fails with 131047: no third send.
    again = status_payload(
        wamid="wamid.TEMPLATE", status="failed", timestamp=int(timezone.now().timestamp()), error_code=131047
    )
    webhook(again)
    run_jobs()
    assert len(graph.calls) == 2
    assert len(fake_openai.requests) == 1


# ------------------------------------------------------------------------------------------------ Graph errors
def test_two_5xx_then_sent_on_the_third_run(inbound, graph, fake_openai):
    job = inbound()
    graph.post(GRAPH_MESSAGES_URL, status=500, json=graph_err(131000, "Something went wrong"))
    graph.post(GRAPH_MESSAGES_URL, status=503, json=graph_err(2, "Service unavailable"))
    graph.post(GRAPH_MESSAGES_URL, json=graph_ok("wamid.OK"))
    for run in (1, 2):
        run_jobs()
        row = fresh(job)
        assert (row.status, row.attempts, row.content) == (S.READY_TO_SEND, run, fake_openai.reply)
        assert row.next_attempt_at > timezone.now()
        assert row.claim_token is None
        make_due(row)
    run_jobs()
    job = fresh(job)
    assert (job.status, job.attempts, job.wa_message_id) == (S.SENT, 3, "wamid.OK")
    assert job.last_attempt_at is not None
    assert job.last_attempt_at <= job.sent_at
    lines = job.error_log.splitlines()
    assert len(lines) == 2
    assert "attempt=1 phase=send http=500 code=131000" in lines[0]
    assert "attempt=2 phase=send http=503 code=2" in lines[1]
    # Generated once, sent three times with the same content.
    assert len(fake_openai.requests) == 1
    assert {body["text"]["body"] for body in sent_bodies(graph)} == {fake_openai.reply}


def test_code_100_fails_after_one_attempt(inbound, graph, fake_openai):
    job = inbound()
    graph.post(GRAPH_MESSAGES_URL, status=400, json=graph_err(100, "Invalid parameter"))
    run_jobs()
    make_due(job)
    run_jobs()
    job = fresh(job)
    assert (job.status, job.attempts) == (S.FAILED, 1)
    assert "phase=send http=400 code=100" in job.error_log
    assert len(graph.calls) == 1


def test_130429_is_retried_later_with_the_content_kept(inbound, graph, fake_openai):
    job = inbound()
    graph.post(GRAPH_MESSAGES_URL, status=400, json=graph_err(130429, "Rate limit hit"))
    before = timezone.now()
    run_jobs()
    job = fresh(job)
    assert (job.status, job.content, job.attempts) == (S.READY_TO_SEND, fake_openai.reply, 1)
    assert job.next_attempt_at > before
    assert "code=130429" in job.error_log


def test_131056_is_retried_after_four_to_the_n_seconds(inbound, graph, fake_openai):
    job = inbound()
    graph.post(GRAPH_MESSAGES_URL, status=400, json=graph_err(131056, "pair rate limit"))
    graph.post(GRAPH_MESSAGES_URL, status=400, json=graph_err(131056, "pair rate limit"))
    graph.post(GRAPH_MESSAGES_URL, json=graph_ok())
    waits = []
    for _ in range(2):
        run_jobs()
        row = fresh(job)
        assert row.status == S.READY_TO_SEND
        waits.append((row.next_attempt_at - row.last_attempt_at).total_seconds())
        make_due(row)
    run_jobs()
    assert fresh(job).status == S.SENT
    # 4^0 = 1 s after the first failure, 4^1 = 4 s after the second (measured from the attempt's start).
    assert 1 <= waits[0] < 4
    assert 4 <= waits[1] < 16


def test_190_keeps_the_job_refunds_the_attempt_and_stops_loudly(inbound, graph, fake_openai):
    first = inbound(wa_id="16505550001")
    second = inbound(wa_id="16505550002")
    graph.post(
        GRAPH_MESSAGES_URL,
        status=401,
        json=graph_err(190, "Error validating access token: Session has expired"),
    )
    with pytest.raises(CommandError, match="WHATSAPP_ACCESS_TOKEN") as raised:
        run_jobs()
    assert "190" in str(raised.value)
    rows = [fresh(first), fresh(second)]
    touched = [row for row in rows if row.attempts or row.content]
    assert len(touched) == 1, "the run stops after the credentials error"
    job = touched[0]
    assert (job.status, job.attempts, job.claim_token) == (S.READY_TO_SEND, 0, None)
    assert job.content == fake_openai.reply
    assert "code=190" in job.error_log
    assert len(graph.calls) == 1


def test_a_tls_handshake_failure_is_retried_with_backoff_not_left_uncertain(
    inbound, fake_openai, settings, tmp_path, monkeypatch
):
    # Meta's certificate is not trusted (an intercepting proxy, say): the handshake fails, nothing was sent.
    certificate, key = self_signed_certificate(tmp_path)
    with FakeGraph(tls=(certificate, key)) as meta:
        settings.WHATSAPP_GRAPH_URL = meta.url
        job = inbound()
        before = timezone.now()
        out = run_jobs()
        row = fresh(job)
        assert (row.status, row.attempts, row.content) == (S.READY_TO_SEND, 1, fake_openai.reply)
        assert (row.claim_token, row.send_started_at) == (None, None)
        assert row.next_attempt_at > before
        assert "phase=send TLS handshake with the Graph API failed" in row.error_log
        assert "CERTIFICATE_VERIFY_FAILED" in row.error_log
        assert "may have been sent" not in row.error_log
        assert "retried=1 " in out
        assert "uncertain=0 " in out
        assert meta.requests == []
        # Stale recovery has nothing to hand to staff; once the certificate is trusted, the same job goes out.
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(certificate))
        go_stale(row)
        make_due(row)
        out = run_jobs()
    row = fresh(job)
    assert (row.status, row.attempts) == (S.SENT, 2)
    assert "recovered=0 " in out
    assert len(meta.accepted()) == 1
    assert len(fake_openai.requests) == 1


@pytest.mark.parametrize(
    ("status", "message", "code", "check"),
    [
        (401, f"Incorrect API key provided: {OPENAI_KEY}.", "invalid_api_key", "OPENAI_API_KEY"),
        (403, "Project does not have access to model `gpt-test`.", "model_not_found", "OPENAI_API_KEY"),
        (
            404,
            "The model `gpt-test` does not exist or you do not have access to it.",
            "model_not_found",
            "OPENAI_MODEL",
        ),
    ],
)
def test_a_wrong_openai_key_or_model_keeps_the_jobs_refunds_and_stops_loudly(
    inbound, graph, fake_openai, status, message, code, check
):
    fake_openai.plan.scripted = [scripted_openai_error(status, message, code=code)]
    first = inbound(wa_id="16505550001")
    second = inbound(wa_id="16505550002")
    with pytest.raises(CommandError, match=check) as raised:
        run_jobs()
    error = str(raised.value)
    assert f"http={status}" in error
    assert "\n" not in error
    assert OPENAI_KEY not in error
    rows = [fresh(first), fresh(second)]
    touched = [row for row in rows if row.error_log]
    assert len(touched) == 1, "the run stops after the configuration error"
    job = touched[0]
    assert (job.status, job.attempts, job.claim_token, job.content) == (S.PENDING, 0, None, "")
    assert job.next_attempt_at <= timezone.now()
    assert f"attempt=1 phase=generate OpenAI http={status}" in job.error_log
    assert OPENAI_KEY not in job.error_log
    assert len(fake_openai.requests) == 1
    assert len(graph.calls) == 0
    # The key (or the model) is fixed: the same jobs are answered.
    graph.post(GRAPH_MESSAGES_URL, json=graph_ok())
    out = run_jobs()
    assert "sent=2 " in out
    assert [(row.status, row.attempts) for row in (fresh(first), fresh(second))] == [(S.SENT, 1)] * 2


def test_attempts_exhausted_fail(inbound, graph, fake_openai, settings):
    settings.OUTBOUND_MAX_ATTEMPTS = 3
    job = inbound()
    graph.post(GRAPH_MESSAGES_URL, status=500, json=graph_err(131000))
    for _ in range(5):
        run_jobs()
        make_due(job)
    job = fresh(job)
    assert (job.status, job.attempts) == (S.FAILED, 3)
    assert "gave up after 3 attempts" in job.error_log
    assert len(graph.calls) == 3


# ------------------------------------------------------------------------------------------------ OpenAI errors
def test_openai_timeout_is_retried(inbound, graph, fake_openai, settings):
    settings.OPENAI_TIMEOUT = 0.3
    fake_openai.plan.latency = 1.5
    job = inbound()
    run_jobs()
    job = fresh(job)
    assert (job.status, job.attempts, job.content, job.claim_token) == (S.PENDING, 1, "", None)
    assert "phase=generate" in job.error_log
    assert "Timeout" in job.error_log
    assert len(graph.calls) == 0


# 401/403/404 (our key or model) are configuration errors: test_a_wrong_openai_key_or_model_keeps_the_jobs_...
@pytest.mark.parametrize(("status", "message"), [(400, "Invalid 'messages[1].content'")])
def test_openai_request_errors_fail_with_the_reason(inbound, graph, fake_openai, status, message):
    fake_openai.plan.scripted = [(status, openai_error(message))]
    job = inbound()
    run_jobs()
    job = fresh(job)
    assert job.status == S.FAILED
    assert f"phase=generate OpenAI http={status}" in job.error_log
    assert OPENAI_KEY not in job.error_log
    assert len(graph.calls) == 0


def test_openai_429_is_retried_no_sooner_than_retry_after(inbound, graph, fake_openai):
    fake_openai.plan.scripted = [
        (429, openai_error("Rate limit reached", "requests"), {"retry-after": "120"})
    ]
    job = inbound()
    before = timezone.now()
    run_jobs()
    job = fresh(job)
    assert job.status == S.PENDING
    assert job.next_attempt_at >= before + timedelta(seconds=120)


def test_empty_reply_is_retried_then_handed_to_a_person(inbound, graph, fake_openai, settings):
    """An empty reply breaks the reply contract: never sent, tried again, and once the attempts run out a
    person takes over (issue 11; it used to end FAILED): the customer gets the handoff message, not nothing."""
    settings.OUTBOUND_MAX_ATTEMPTS = 2
    fake_openai.reply = ""
    job = inbound()
    run_jobs()
    assert fresh(job).status == S.PENDING
    assert len(graph.calls) == 0
    make_due(job)
    graph.post(GRAPH_MESSAGES_URL, json=graph_ok())
    run_jobs()
    job = fresh(job)
    assert (job.status, job.attempts, job.kind) == (S.SENT, 2, OutboundJob.Kind.HANDOFF)
    assert job.error_log.count("empty reply") == 2
    [body] = sent_bodies(graph)
    assert body["text"]["body"] == settings.OUTBOUND_HANDOFF_MESSAGE
    assert job.contact.bot_pause_reason == "MODEL_FAILED"


def test_a_long_reply_is_cut_to_fit(inbound, graph, fake_openai):
    fake_openai.reply = "This sentence is long enough. " * 300
    job = inbound()
    graph.post(GRAPH_MESSAGES_URL, json=graph_ok())
    run_jobs()
    [body] = sent_bodies(graph)
    assert 0 < len(body["text"]["body"]) <= 4096
    assert fresh(job).content == body["text"]["body"]


# ------------------------------------------------------------------------------------------------ recovery
def test_stale_generating_is_released_and_generated_again(inbound, graph, fake_openai):
    job = inbound()
    [claimed] = outbound_jobs_claim(limit=1, worker_id="dead-worker")
    assert claimed.status == S.GENERATING
    go_stale(job)
    graph.post(GRAPH_MESSAGES_URL, json=graph_ok())
    out = run_jobs()
    job = fresh(job)
    assert (job.status, job.content, job.attempts) == (S.SENT, fake_openai.reply, 2)
    assert "dead-worker" in job.error_log
    assert "recovered=1" in out
    assert len(fake_openai.requests) == 1


def test_stale_ready_to_send_is_sent_with_the_same_content_and_no_new_generation(inbound, graph, fake_openai):
    job = inbound()
    [claimed] = outbound_jobs_claim(limit=1, worker_id="dead-worker")
    claimed.mark_generated(
        token=claimed.claim_token, content="The stored reply.", send_as=OutboundJob.SendAs.TEXT
    )
    go_stale(job)
    graph.post(GRAPH_MESSAGES_URL, json=graph_ok("wamid.AFTER"))
    run_jobs()
    job = fresh(job)
    assert (job.status, job.content, job.wa_message_id) == (S.SENT, "The stored reply.", "wamid.AFTER")
    assert sent_bodies(graph)[0]["text"]["body"] == "The stored reply."
    assert fake_openai.requests == []


def test_stale_send_that_may_have_gone_out_is_failed_and_never_resent(inbound, graph, fake_openai):
    job = inbound()
    [claimed] = outbound_jobs_claim(limit=1, worker_id="dead-worker")
    claimed.mark_generated(token=claimed.claim_token, content="reply", send_as=OutboundJob.SendAs.TEXT)
    claimed.mark_send_started(token=claimed.claim_token, send_as=OutboundJob.SendAs.TEXT)
    go_stale(job)
    graph.post(GRAPH_MESSAGES_URL, json=graph_ok())
    run_jobs()
    run_jobs()
    job = fresh(job)
    assert job.status == S.FAILED
    assert "may have reached Meta" in job.error_log
    assert "not resent automatically" in job.error_log
    assert len(graph.calls) == 0
    # The registered answer was a trap for a resend, never meant to fire.
    graph.remove(responses.POST, GRAPH_MESSAGES_URL)


def test_a_lost_send_response_is_never_resent_and_is_settled_by_the_status_webhook(
    inbound, graph, fake_openai, webhook
):
    job = inbound()
    graph.post(GRAPH_MESSAGES_URL, body=requests.ReadTimeout("read timed out"))
    out = run_jobs()
    row = fresh(job)
    assert (row.status, row.wa_message_id) == (S.READY_TO_SEND, "")
    assert row.claim_token is not None
    assert row.send_started_at is not None
    assert "may have been sent" in row.error_log
    assert "uncertain=1" in out
    graph.post(GRAPH_MESSAGES_URL, json=graph_ok())
    run_jobs()
    assert len(graph.calls) == 1, "a send that may have reached Meta is never repeated"
    # The second registered answer was a trap for a resend, never meant to fire.
    graph.remove(responses.POST, GRAPH_MESSAGES_URL)
    sent = status_payload(
        wamid="wamid.LOST",
        status="sent",
        timestamp=int(timezone.now().timestamp()),
        callback_data=f"{job.key}:text",
    )
    assert webhook(sent).status_code == 200
    row = fresh(job)
    assert (row.status, row.wa_message_id, row.delivery_status, row.claim_token) == (
        S.SENT,
        "wamid.LOST",
        "sent",
        None,
    )


# ------------------------------------------------------------------------------------------------ conversation
def test_a_burst_gets_one_reply_that_saw_every_message(inbound, graph, fake_openai):
    now = timezone.now()
    jobs = [
        inbound(body=text, at=now - timedelta(seconds=30 - i))
        for i, text in enumerate(["Hi", "Do you ship to Lisbon?", "And how long does it take?"])
    ]
    graph.post(GRAPH_MESSAGES_URL, json=graph_ok())
    run_jobs()
    older_a, older_b, newest = (fresh(job) for job in jobs)
    assert newest.status == S.SENT
    assert (older_a.status, older_a.superseded_by_id) == (S.SUPERSEDED, newest.pk)
    assert (older_b.status, older_b.superseded_by_id) == (S.SUPERSEDED, newest.pk)
    assert len(graph.calls) == 1
    assert sent_bodies(graph)[0]["context"] == {"message_id": newest.inbound_message.wamid}
    [request] = fake_openai.requests
    assert [m for m in request["body"]["messages"] if m["role"] != "system"] == [
        {"role": "user", "content": "Hi"},
        {"role": "user", "content": "Do you ship to Lisbon?"},
        {"role": "user", "content": "And how long does it take?"},
    ]


def test_the_conversation_includes_earlier_replies_as_assistant(inbound, graph, fake_openai):
    now = timezone.now()
    first = inbound(body="Is it in stock?", at=now - timedelta(minutes=10))
    graph.post(GRAPH_MESSAGES_URL, json=graph_ok())
    run_jobs()
    OutboundJob.objects.filter(pk=first.pk).update(sent_at=now - timedelta(minutes=9))
    inbound(body="Great, and the price?", at=now - timedelta(minutes=1))
    run_jobs()
    messages = fake_openai.requests[1]["body"]["messages"]
    assert [m for m in messages if m["role"] != "system"] == [
        {"role": "user", "content": "Is it in stock?"},
        {"role": "assistant", "content": fake_openai.reply},
        {"role": "user", "content": "Great, and the price?"},
    ]


# ------------------------------------------------------------------------------------------------ secrets
def test_secrets_echoed_back_never_reach_the_error_log_logs_or_output(
    inbound, graph, fake_openai, caplog, settings
):
    caplog.set_level(logging.DEBUG)
    fake_openai.plan.scripted = [
        (401, openai_error(f"Incorrect API key provided: {OPENAI_KEY}. Find yours at ..."))
    ]
    first = inbound(wa_id="16505550001")
    with pytest.raises(CommandError) as openai_raised:
        run_jobs("-v", "3")
    second = inbound(wa_id="16505550002", minutes_ago=60 * 30)
    # The first job, kept by the OpenAI key error, goes first in the next run (the fake answers now).
    graph.post(GRAPH_MESSAGES_URL, json=graph_ok())
    graph.post(
        GRAPH_MESSAGES_URL, status=400, json=graph_err(131009, f"Parameter invalid near access_token={TOKEN}")
    )
    third = inbound(wa_id="16505550003", minutes_ago=60 * 30)
    graph.post(GRAPH_MESSAGES_URL, status=401, json=graph_err(190, f"Invalid OAuth access token - {TOKEN}"))
    with pytest.raises(CommandError) as raised:
        run_jobs("-v", "3")
    logs = "\n".join(OutboundJob.objects.values_list("error_log", flat=True))
    assert "http=401" in logs
    assert "code=131009" in logs
    assert "code=190" in logs
    for secret in (TOKEN, OPENAI_KEY):
        assert secret not in logs
        assert secret not in caplog.text
        assert secret not in str(raised.value)
        assert secret not in str(openai_raised.value)
    assert [fresh(j).status for j in (first, second, third)] == [S.SENT, S.FAILED, S.READY_TO_SEND]


# ------------------------------------------------------------------------------------------------ the command
@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--concurrency", "0"], "--concurrency"),
        (["--batch-size", "x"], "--batch-size"),
        (["--max-runtime", "-1"], "--max-runtime"),
        (["--max-runtime", "nan"], "--max-runtime"),
        (["--idle-sleep", "0"], "--idle-sleep"),
    ],
)
def test_bad_options_are_refused_naming_the_option(args, option):
    with pytest.raises(CommandError, match=f"argument {option}"):
        run_jobs(*args)


def test_summary_line_and_verbose_progress(inbound, graph, fake_openai):
    job = inbound()
    graph.post(GRAPH_MESSAGES_URL, json=graph_ok())
    out = run_jobs("-v", "2")
    assert f"job {job.pk} contact {job.contact_id} attempt 1: sent (SENT)" in out
    summary = [line for line in out.splitlines() if line.startswith("run_outbound_jobs ")]
    assert len(summary) == 1
    for field in ("claimed=1", "generated=1", "sent=1", "retried=0", "failed=0", "recovered=0", "seconds="):
        assert field in summary[0]
    quiet = run_jobs()
    assert quiet.startswith("run_outbound_jobs claimed=0 ")
    assert "job " not in quiet


def test_batch_size_stops_after_n(inbound, graph, fake_openai):
    jobs = [inbound(wa_id=f"1650555{i:04d}") for i in range(5)]
    graph.post(GRAPH_MESSAGES_URL, json=graph_ok())
    out = run_jobs("--batch-size", "2")
    assert "claimed=2 " in out
    statuses = sorted(fresh(job).status for job in jobs)
    assert statuses == [S.PENDING] * 3 + [S.SENT] * 2
    assert len(graph.calls) == 2


@pytest.mark.django_db(transaction=True)
def test_concurrency_four(inbound, graph, fake_openai):
    jobs = [inbound(wa_id=f"1650556{i:04d}") for i in range(12)]
    graph.post(GRAPH_MESSAGES_URL, json=graph_ok())
    out = run_jobs("--concurrency", "4")
    assert "claimed=12 " in out
    assert "sent=12 " in out
    assert {fresh(job).status for job in jobs} == {S.SENT}
    keys = [body["biz_opaque_callback_data"] for body in sent_bodies(graph)]
    assert sorted(keys) == sorted(f"{job.key}:text" for job in jobs)


def test_a_run_excludes_from_its_claims_only_the_jobs_it_gave_back(
    inbound, graph, fake_openai, settings, monkeypatch
):
    # A job given back for later is never taken twice in one run, even when it is due again at once; a job
    # that ended (sent) leaves the run's exclusion list, which the claim sends to the database every time.
    settings.OUTBOUND_RETRY_BASE_SECONDS = 0
    settings.OUTBOUND_RETRY_MAX_SECONDS = 0
    jobs = [inbound(wa_id=f"1650555000{i}", body=f"question {i}") for i in range(3)]
    answers = iter([(400, {}, json.dumps(graph_err(130429, "Rate limit hit")))])

    def send(request):
        return next(answers, (200, {}, json.dumps(graph_ok(f"wamid.OUT{len(graph.calls)}"))))

    graph.add_callback(responses.POST, GRAPH_MESSAGES_URL, callback=send)
    excluded: list[set[int]] = []
    claim = worker_module.outbound_jobs_claim

    def recording_claim(**kwargs):
        excluded.append(set(kwargs["exclude_ids"]))
        return claim(**kwargs)

    monkeypatch.setattr(worker_module, "outbound_jobs_claim", recording_claim)
    run_jobs()
    rows = {job.pk: OutboundJob.objects.get(pk=job.pk) for job in jobs}
    retried = [pk for pk, row in rows.items() if row.status == S.READY_TO_SEND]
    sent = [pk for pk, row in rows.items() if row.status == S.SENT]
    assert (len(retried), len(sent)) == (1, 2)
    assert rows[retried[0]].attempts == 1  # due again at once, yet not taken again in this run
    assert excluded[-1] == set(retried)
