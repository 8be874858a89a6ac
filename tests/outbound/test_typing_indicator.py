"""The read receipt with the typing indicator (§6): sent when a reply is being generated, before it, and never
in its way: a failure or a timeout costs no attempt, leaves no error line, and the reply still goes."""

from __future__ import annotations

import json
import logging
import time

import pytest
import requests
import responses
from django.utils import timezone
from responses import matchers

from bench.fakes import FakeGraph, FaultPlan, graph_error
from outbound.console import ConsoleSender
from outbound.models import Contact, OutboundJob
from outbound.services.claims import outbound_jobs_claim
from outbound.services.handoff import contact_bot_pause, contact_staff_reply
from outbound.services.processing import Outcome, outbound_job_process
from outbound.whatsapp import WhatsAppClient
from outbound.worker_config import worker_config_from_settings
from tests.outbound.conftest import GRAPH_MESSAGES_URL, graph_ok, is_postgres, run_jobs
from webhooks.envelopes import text_message_webhook

pytestmark = pytest.mark.django_db
S = OutboundJob.Status


@pytest.fixture(autouse=True)
def typing_on(settings):
    settings.OUTBOUND_TYPING_INDICATOR = True
    settings.OUTBOUND_TYPING_INDICATOR_TIMEOUT = 1.5


def read_receipt(wamid: str) -> dict:
    return {
        "messaging_product": "whatsapp",
        "status": "read",
        "message_id": wamid,
        "typing_indicator": {"type": "text"},
    }


def register_read(graph, wamid: str, **answer) -> None:
    graph.post(
        GRAPH_MESSAGES_URL,
        match=[
            matchers.json_params_matcher(read_receipt(wamid)),
            matchers.request_kwargs_matcher({"timeout": 1.5}),
        ],
        **(answer or {"json": {"success": True}}),
    )


def register_reply(graph) -> None:
    graph.post(
        GRAPH_MESSAGES_URL,
        match=[matchers.json_params_matcher({"type": "text"}, strict_match=False)],
        json=graph_ok(),
    )


def bodies(graph) -> list[dict]:
    return [json.loads(call.request.body) for call in graph.calls]


def test_the_customer_message_is_marked_read_with_typing_before_the_reply(inbound, graph, fake_openai):
    job = inbound(body="Do you ship to Lisbon?")
    register_read(graph, job.inbound_message.wamid)
    register_reply(graph)
    run_jobs()
    first, second = bodies(graph)
    assert first == read_receipt(job.inbound_message.wamid)
    assert second["type"] == "text"
    assert second["text"]["body"] == fake_openai.reply
    # The model was asked after the indicator went out: the indicator shows while it thinks.
    assert len(fake_openai.requests) == 1
    row = OutboundJob.objects.get(pk=job.pk)
    assert (row.status, row.attempts, row.error_log) == (S.SENT, 1, "")


def test_the_model_is_asked_while_the_indicator_is_on_its_way(inbound, graph, fake_openai):
    # Meta holding the read receipt must not hold the reply: the receipt's answer waits until the model has been
    # asked. Done one after the other, the model would only be asked after this 1 s wait, and the check fails.
    job = inbound(body="Do you ship to Lisbon?")
    seen: list[int] = []

    def answer_once_the_model_was_asked(request):
        deadline = time.monotonic() + 1.0
        while not fake_openai.requests and time.monotonic() < deadline:
            time.sleep(0.01)
        seen.append(len(fake_openai.requests))
        return 200, {}, json.dumps({"success": True})

    graph.add_callback(
        responses.POST,
        GRAPH_MESSAGES_URL,
        callback=answer_once_the_model_was_asked,
        match=[matchers.json_params_matcher(read_receipt(job.inbound_message.wamid))],
    )
    register_reply(graph)
    run_jobs()
    assert seen == [1]
    # The receipt still reached Meta before the reply (the reply waits for it, within its timeout).
    assert [b.get("status") for b in bodies(graph)] == ["read", None]
    assert OutboundJob.objects.get(pk=job.pk).status == S.SENT


def test_a_burst_marks_the_newest_message_read(inbound, graph, fake_openai):
    inbound(body="Hi", minutes_ago=2)
    newest = inbound(body="Do you ship to Lisbon?", minutes_ago=1)
    register_read(graph, newest.inbound_message.wamid)
    register_reply(graph)
    run_jobs()
    assert [b.get("status") for b in bodies(graph)] == ["read", None]


@pytest.mark.parametrize(
    "answer",
    [
        {"status": 500, "json": graph_error(131000, "Something went wrong", http_status=500)[1]},
        {"status": 400, "json": graph_error(131009, "Parameter value is not valid")[1]},
        {"body": requests.ReadTimeout("read timed out")},
        {"body": requests.ConnectionError("connection refused")},
    ],
    ids=["500", "131009", "timeout", "connection-error"],
)
def test_a_failed_indicator_never_fails_nor_delays_the_reply(inbound, graph, fake_openai, caplog, answer):
    caplog.set_level(logging.INFO, logger="outbound")
    job = inbound()
    register_read(graph, job.inbound_message.wamid, **answer)
    register_reply(graph)
    out = run_jobs()
    row = OutboundJob.objects.get(pk=job.pk)
    # Sent at the first attempt, nothing in the error log, no retry counted in the run.
    assert (row.status, row.attempts, row.error_log) == (S.SENT, 1, "")
    assert "retried=0" in out
    assert "failed=0" in out
    failures = [r for r in caplog.records if "typing_indicator_failed" in r.getMessage()]
    assert len(failures) == 1
    assert failures[0].levelno == logging.INFO
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and "graph_error" in r.getMessage()]


def test_not_sent_when_a_person_has_the_conversation(inbound, graph, fake_openai):
    job = inbound()
    contact_bot_pause(contact=job.contact, reason=Contact.PauseReason.STAFF_ACTION)
    run_jobs()
    assert list(graph.calls) == []
    assert fake_openai.requests == []


def test_not_sent_to_a_customer_who_opted_out(inbound, graph, fake_openai):
    job = inbound()
    Contact.objects.filter(pk=job.contact_id).update(opted_out_at=job.inbound_message.timestamp)
    run_jobs()
    assert list(graph.calls) == []
    assert OutboundJob.objects.get(pk=job.pk).status == S.NO_REPLY


def test_not_sent_for_staff_replies_nor_templates(inbound, graph, fake_openai, client):
    job = inbound()
    OutboundJob.objects.filter(pk=job.pk).update(status=S.CANCELLED)
    contact_staff_reply(contact=job.contact, author=None, text="Hello from a person")
    graph.post(GRAPH_MESSAGES_URL, json=graph_ok())
    run_jobs()
    assert [b["type"] for b in bodies(graph)] == ["text"]
    # Outside the window the template goes, without a model call and without an indicator.
    late = inbound(minutes_ago=25 * 60, wa_id="15550001111")
    graph.post(GRAPH_MESSAGES_URL, json=graph_ok("wamid.T"))
    run_jobs()
    assert [b["type"] for b in bodies(graph)] == ["text", "template"]
    assert OutboundJob.objects.get(pk=late.pk).status == S.SENT


def test_off_by_setting(inbound, graph, fake_openai, settings):
    settings.OUTBOUND_TYPING_INDICATOR = False
    inbound()
    register_reply(graph)
    run_jobs()
    assert [b["type"] for b in bodies(graph)] == ["text"]


def test_the_indicator_costs_no_database_statement(inbound, graph, fake_openai, django_assert_num_queries):
    # The same count as tests/outbound/test_processing.py's reply without the indicator: the wamid comes with
    # the claim (select_related), and the call writes nothing.
    job = inbound()
    register_read(graph, job.inbound_message.wamid)
    register_reply(graph)
    config = worker_config_from_settings()
    [claimed] = outbound_jobs_claim(limit=1, worker_id="w")
    with django_assert_num_queries(8 if is_postgres() else 7):
        assert outbound_job_process(job=claimed, config=config).outcome == Outcome.SENT
    assert len(graph.calls) == 2


def test_a_slow_fake_graph_is_cut_off_by_the_short_timeout(inbound, fake_openai, settings):
    # A real HTTP server that answers the read receipt too late: the reply still goes, at the first attempt.
    with FakeGraph(plan=FaultPlan(latency=0.6)) as graph:
        settings.WHATSAPP_GRAPH_URL = graph.url
        settings.OUTBOUND_TYPING_INDICATOR_TIMEOUT = 0.2
        job = inbound()
        run_jobs()
        row = OutboundJob.objects.get(pk=job.pk)
        assert (row.status, row.attempts, row.error_log) == (S.SENT, 1, "")
        assert len(graph.read_receipts()) == 1
        assert len(graph.accepted()) == 1


def test_marked_read_from_the_number_the_customer_wrote_to(webhook, graph, fake_openai, settings):
    first, second = "106540352242922", "111222333444555"
    settings.WHATSAPP_PHONE_NUMBER_ID = f"{first},{second}"
    when = int(timezone.now().timestamp()) - 60
    payload = text_message_webhook(
        wa_id="16505551234",
        name="Sheena",
        text="Hi",
        wamid="wamid.S1",
        timestamp=when,
        phone_number_id=second,
    )
    assert webhook(payload).status_code == 200
    second_url = f"https://graph.test/v25.0/{second}/messages"
    graph.post(
        second_url, match=[matchers.json_params_matcher(read_receipt("wamid.S1"))], json={"success": True}
    )
    graph.post(
        second_url,
        match=[matchers.json_params_matcher({"type": "text"}, strict_match=False)],
        json=graph_ok(),
    )
    run_jobs()
    assert [c.request.url for c in graph.calls] == [second_url, second_url]


# ------------------------------------------------------------------------------------------------ clients
def test_client_mark_read_sends_meta_shape_and_reads_success(graph):
    graph.post(
        GRAPH_MESSAGES_URL,
        match=[
            matchers.json_params_matcher(read_receipt("wamid.X")),
            matchers.request_kwargs_matcher({"timeout": 0.5}),
        ],
        json={"success": True},
    )
    client = WhatsAppClient(
        access_token="t",
        phone_number_id="106540352242922",
        base_url="https://graph.test",
        api_version="v25.0",
    )
    assert client.mark_read(message_id="wamid.X", typing=True, timeout=0.5) is True


def test_console_sender_prints_the_read_receipt(caplog):
    caplog.set_level(logging.WARNING, logger="outbound")
    assert ConsoleSender(phone_number_id="1").mark_read(message_id="wamid.X", typing=True, timeout=1) is True
    assert "read receipt POST /v25.0/1/messages message_id=wamid.X typing=True" in caplog.text


def test_an_indicator_still_queued_when_the_reply_is_ready_is_never_sent(inbound, monkeypatch):
    # Every indicator thread busy (a slow Graph): this job's indicator waits in the queue. Once its reply is
    # ready it is cancelled, not sent late ("typing…" after our answer would be wrong).
    from concurrent.futures import ThreadPoolExecutor
    from dataclasses import replace
    from threading import Event

    from outbound.services import processing

    pool = ThreadPoolExecutor(max_workers=1)
    release = Event()
    pool.submit(release.wait, 5)
    monkeypatch.setattr(processing, "_typing_pool", pool)
    sent: list[str] = []

    class Sender:
        def mark_read(self, *, message_id, typing, timeout, phone_number_id=None):
            sent.append(message_id)
            return True

    job = inbound()
    config = replace(worker_config_from_settings(), sender=Sender(), typing_indicator_timeout=0.05)
    typing = processing._start_typing(job, config)
    processing._await_typing(job, typing, config)
    release.set()
    pool.shutdown(wait=True)
    assert typing is not None
    assert typing.future.cancelled()
    assert sent == []
