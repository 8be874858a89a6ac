"""The Worker under concurrency and signals: threads and processes on one batch, SIGTERM in --loop.

Process tests run `manage.py run_outbound_jobs` against the real fake servers (bench/fakes.py) and the test
database; they count accepted sends per job key at the fake Graph. Waits have generous deadlines and are
never the thing asserted.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import responses
from django.conf import settings
from django.db import OperationalError, connection, connections, transaction
from django.urls import reverse
from django.utils import timezone

from bench.fakes import FakeGraph, FakeOpenAI, FaultPlan
from outbound import worker as worker_module
from outbound.models import OutboundJob, WorkerHeartbeat
from outbound.whatsapp import SendResult
from outbound.worker import Worker
from outbound.worker_config import worker_config_from_settings
from tests.outbound.conftest import GRAPH_MESSAGES_URL, graph_ok
from webhooks.envelopes import messages_webhook, text_message

S = OutboundJob.Status
MANAGE = Path(__file__).resolve().parents[2] / "manage.py"


def many_messages_payload(*, count: int, first: int = 0, per_contact: int = 1) -> dict:
    """One webhook POST carrying `count` text messages from count/per_contact customers."""
    now = int(timezone.now().timestamp()) - 60
    contacts, messages = [], []
    for i in range(first, first + count):
        wa_id = f"4420{i // per_contact:07d}"
        contacts.append({"profile": {"name": f"C{i}"}, "wa_id": wa_id})
        messages.append(
            text_message(
                wa_id=wa_id, wamid=f"wamid.BULK{i}", text=f"message {i}", timestamp=now + i % per_contact
            )
        )
    return messages_webhook(messages=messages, contacts=contacts)


def counting_graph(mock: responses.RequestsMock) -> Counter[str]:
    """Accept every send and count them per job key (biz_opaque_callback_data)."""
    import json

    sends: Counter[str] = Counter()
    lock = threading.Lock()

    def accept(request):
        key = json.loads(request.body)["biz_opaque_callback_data"].split(":")[0]
        with lock:
            sends[key] += 1
            n = sum(sends.values())
        return 200, {}, json.dumps(graph_ok(f"wamid.OUT{n}"))

    mock.add_callback(responses.POST, GRAPH_MESSAGES_URL, callback=accept)
    return sends


def run_worker_threads(count: int) -> Counter[str]:
    """Run `count` Workers at once on threads against a counting Graph mock; return the sends per job key."""
    errors: list[BaseException] = []

    def work() -> None:
        try:
            Worker(config=worker_config_from_settings(), stale_seconds=300, max_runtime=120).run()
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        sends = counting_graph(mock)
        threads = [threading.Thread(target=work) for _ in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []
    return sends


def subprocess_env(graph: FakeGraph, openai: FakeOpenAI) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="tests.settings",
        TEST_WHATSAPP_GRAPH_URL=graph.url,
        TEST_OPENAI_BASE_URL=f"{openai.url}/v1",
        TEST_DATABASE_NAME=str(connection.settings_dict["NAME"]),
        PYTHONUNBUFFERED="1",
    )
    return env


def wait_until(predicate, *, deadline: float = 60.0) -> None:
    end = time.monotonic() + deadline
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("gave up waiting")
        time.sleep(0.05)


# ------------------------------------------------------------------------------------------------ in-process
@pytest.mark.django_db
def test_one_crashing_job_does_not_stop_the_run(inbound, graph, fake_openai):
    broken = inbound(wa_id="15552000001")
    fine = inbound(wa_id="15552000002")
    config = worker_config_from_settings()
    real = config.sender

    class Flaky:
        def send_text(self, *, to, body, reply_to, callback_data) -> SendResult:
            if to.wa_id == broken.contact.wa_id:
                raise RuntimeError("sender bug")
            return real.send_text(to=to, body=body, reply_to=reply_to, callback_data=callback_data)

        send_template = real.send_template

    config.sender = Flaky()
    graph.post(GRAPH_MESSAGES_URL, json=graph_ok())
    summary = Worker(config=config, stale_seconds=300, max_runtime=30).run()
    assert summary.claimed == 2
    assert OutboundJob.objects.get(pk=fine.pk).status == S.SENT
    row = OutboundJob.objects.get(pk=broken.pk)
    assert "RuntimeError: sender bug" in row.error_log
    # It crashed after the send had started: never blindly repeated.
    assert row.send_started_at is not None
    assert row.status == S.READY_TO_SEND


def fail_once(real, *, on_call: int = 1):
    """`real`, except that its `on_call`-th call raises what a lost database connection raises."""
    calls = 0
    failed = threading.Event()

    def call(*args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == on_call:
            failed.set()
            raise OperationalError("server closed the connection unexpectedly")
        return real(*args, **kwargs)

    call.failed = failed  # type: ignore[attr-defined]
    return call


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("failing", ["recover", "claimable", "heartbeat"])
def test_a_loop_worker_outlives_a_database_error_while_idle(
    inbound, graph, fake_openai, monkeypatch, caplog, failing
):
    caplog.set_level(logging.WARNING, logger="outbound")
    if failing == "recover":
        # Call 1 is the run's start; call 2 is the idle cycle's look for stale claims.
        flaky = fail_once(worker_module.outbound_jobs_recover, on_call=2)
        monkeypatch.setattr(worker_module, "outbound_jobs_recover", flaky)
    elif failing == "claimable":
        flaky = fail_once(worker_module.outbound_jobs_claimable_exist)
        monkeypatch.setattr(worker_module, "outbound_jobs_claimable_exist", flaky)
    else:
        flaky = fail_once(Worker._heartbeat)
        monkeypatch.setattr(Worker, "_heartbeat", flaky)
    graph.post(GRAPH_MESSAGES_URL, json=graph_ok())
    outcomes: list[str] = []
    errors: list[BaseException] = []

    def done(job: OutboundJob, outcome: str) -> None:
        outcomes.append(outcome)
        worker.stop()

    worker = Worker(
        config=worker_config_from_settings(),
        stale_seconds=300,
        loop=True,
        idle_sleep=0.05,
        on_job_done=done,
    )

    def work() -> None:
        try:
            worker.run()
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    thread = threading.Thread(target=work)
    thread.start()
    try:
        assert flaky.failed.wait(20)
        job = inbound()
        thread.join(30)
    finally:
        worker.stop()
        thread.join(30)
    assert errors == []
    assert outcomes == ["sent"]
    assert OutboundJob.objects.get(pk=job.pk).status == S.SENT
    down = [r for r in caplog.records if r.getMessage().startswith("database_unavailable")]
    assert len(down) == 1
    assert any(r.getMessage().startswith("database_available again") for r in caplog.records)


@pytest.mark.django_db
def test_without_loop_a_database_error_still_ends_the_run(inbound, fake_openai, monkeypatch):
    inbound()
    monkeypatch.setattr(
        worker_module, "outbound_jobs_recover", fail_once(worker_module.outbound_jobs_recover)
    )
    with pytest.raises(OperationalError):
        Worker(config=worker_config_from_settings(), stale_seconds=300, max_runtime=30).run()


@pytest.mark.django_db
def test_a_busy_run_keeps_the_heartbeat_fresh_for_healthz(
    inbound, graph, fake_openai, monkeypatch, settings, client
):
    # A backlog that takes longer than OUTBOUND_HEALTH_MAX_AGE_SECONDS must not turn /healthz red.
    monkeypatch.setattr(worker_module, "HEARTBEAT_INTERVAL_SECONDS", 0.2, raising=False)
    settings.OUTBOUND_HEALTH_MAX_AGE_SECONDS = 1
    fake_openai.plan.latency = 0.2
    for i in range(10):
        inbound(wa_id=f"1555300{i:04d}")
    graph.post(GRAPH_MESSAGES_URL, json=graph_ok())
    seen: list[tuple[float, int, object]] = []
    started = time.monotonic()

    def observe(job: OutboundJob, outcome: str) -> None:
        status = client.get(reverse("healthz")).status_code
        beat = WorkerHeartbeat.objects.values_list("last_finished_at", flat=True).first()
        seen.append((time.monotonic() - started, status, beat))

    summary = Worker(
        config=worker_config_from_settings(), stale_seconds=300, max_runtime=60, on_job_done=observe
    ).run()
    assert summary.sent == 10
    late = [(status, beat) for elapsed, status, beat in seen if elapsed > 1.2]
    assert late, "the backlog must outlast the health limit for this test to mean anything"
    assert {status for status, _ in late} == {200}
    beats = [beat for _, _, beat in seen if beat is not None]
    assert len(set(beats)) >= 2
    assert beats == sorted(beats)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_run_waits_out_rows_another_claimer_holds_instead_of_ending(inbound, graph, fake_openai):
    # Another claimer's transaction holds the only due job's row for a moment (as its SKIP LOCKED candidate):
    # the claim comes back empty, but the job is due, so the run must not end as if nothing were.
    job = inbound()
    graph.post(GRAPH_MESSAGES_URL, json=graph_ok())
    locked, release = threading.Event(), threading.Event()

    def other_claimer() -> None:
        with transaction.atomic():
            OutboundJob.objects.select_for_update().get(pk=job.pk)
            locked.set()
            release.wait(10)
        connections.close_all()

    holder = threading.Thread(target=other_claimer)
    holder.start()
    assert locked.wait(10)
    threading.Timer(0.5, release.set).start()
    summary = Worker(config=worker_config_from_settings(), stale_seconds=300, max_runtime=20).run()
    holder.join()
    assert summary.sent == 1
    assert OutboundJob.objects.get(pk=job.pk).status == S.SENT


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_four_worker_threads_send_every_job_exactly_once(webhook, fake_openai):
    assert webhook(many_messages_payload(count=200)).status_code == 200
    assert OutboundJob.objects.filter(status=S.PENDING).count() == 200
    sends = run_worker_threads(4)
    assert OutboundJob.objects.filter(status=S.SENT).count() == 200
    keys = {str(k) for k in OutboundJob.objects.values_list("key", flat=True)}
    assert set(sends) == keys
    assert set(sends.values()) == {1}
    assert len(fake_openai.requests) == 200


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_threads_on_bursts_fold_without_deadlocks(webhook, fake_openai):
    # 40 customers with 3 messages each: the claimers fold and lock the same contacts' rows concurrently.
    assert webhook(many_messages_payload(count=120, per_contact=3)).status_code == 200
    sends = run_worker_threads(4)
    assert OutboundJob.objects.filter(status=S.SENT).count() == 40
    assert OutboundJob.objects.filter(status=S.SUPERSEDED).count() == 80
    assert sum(sends.values()) == 40
    assert set(sends.values()) == {1}
    # The one reply per customer answers the newest message.
    for job in OutboundJob.objects.filter(status=S.SENT).select_related("inbound_message"):
        assert int(job.inbound_message.wamid.removeprefix("wamid.BULK")) % 3 == 2


# ------------------------------------------------------------------------------------------------ processes
@pytest.fixture
def fake_servers():
    graph = FakeGraph(plan=FaultPlan()).start()
    openai = FakeOpenAI(plan=FaultPlan()).start()
    yield graph, openai
    graph.stop()
    openai.stop()


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_three_worker_processes_send_every_job_exactly_once(webhook, fake_servers):
    graph, openai = fake_servers
    assert webhook(many_messages_payload(count=300)).status_code == 200
    env = subprocess_env(graph, openai)
    # Files, not pipes: a pipe nobody drains yet (communicate() reads one process at a time) would block a
    # worker's log write inside its claim transaction, holding row locks the others then wait out.
    with contextlib.ExitStack() as files:
        logs = [(files.enter_context(tempfile.TemporaryFile("w+")), files.enter_context(tempfile.TemporaryFile("w+")))
                for _ in range(3)]  # fmt: skip
        workers = [
            subprocess.Popen(
                [
                    sys.executable,
                    str(MANAGE),
                    "run_outbound_jobs",
                    "--concurrency",
                    "4",
                    "--max-runtime",
                    "120",
                    "--until-idle",
                ],
                env=env,
                stdout=out,
                stderr=err,
                text=True,
            )
            for out, err in logs
        ]
        for worker in workers:
            worker.wait(timeout=300)
        outputs = []
        for out, err in logs:
            out.seek(0)
            err.seek(0)
            outputs.append((out.read(), err.read()))
    for worker, (out, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err
        assert "run_outbound_jobs claimed=" in out
    assert OutboundJob.objects.filter(status=S.SENT).count() == 300
    sends = graph.sends_per_job()
    assert set(sends) == {str(k) for k in OutboundJob.objects.values_list("key", flat=True)}
    assert set(sends.values()) == {1}
    claimed = [int(out.split("claimed=")[1].split()[0]) for out, _ in outputs]
    assert sum(claimed) == 300


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_sigterm_in_loop_finishes_the_jobs_in_flight_and_exits_zero(webhook, fake_servers):
    graph, openai = fake_servers
    openai.plan.latency = 0.5
    assert webhook(many_messages_payload(count=6)).status_code == 200
    worker = subprocess.Popen(
        [
            sys.executable,
            str(MANAGE),
            "run_outbound_jobs",
            "--loop",
            "--idle-sleep",
            "0.2",
            "--concurrency",
            "2",
        ],
        env=subprocess_env(graph, openai),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: len(openai.requests) >= 1 or worker.poll() is not None)
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.communicate()
    assert worker.returncode == 0, err
    assert "SIGTERM" in err
    assert "run_outbound_jobs claimed=" in out
    # Whatever was taken before the signal was finished: nothing is left holding a claim.
    assert OutboundJob.objects.filter(claim_token__isnull=False).count() == 0
    sent = OutboundJob.objects.filter(status=S.SENT).count()
    assert sent >= 1
    assert sent + OutboundJob.objects.filter(status=S.PENDING).count() == 6
    assert len(graph.accepted()) == sent
    assert settings.OUTBOUND_STALE_SECONDS > 0
