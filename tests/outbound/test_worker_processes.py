"""Real `manage.py run_outbound_jobs` processes against the test database (PostgreSQL) and the fake servers.

Many workers at once, `kill -9` mid-generation and mid-send, the database connection killed mid-run. What
is counted is what Meta would see: accepted sends per job at the fake Graph (`sends_per_job`).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.db import connection
from django.utils import timezone
from psycopg import sql

from bench import harness
from bench.fakes import FakeGraph, FakeOpenAI, FaultPlan
from outbound.models import OutboundJob, WorkerHeartbeat
from outbound.services.ingest import webhook_ingest
from tests.conftest import SERVED_PHONE_NUMBER_IDS
from webhooks.envelopes import messages_webhook
from webhooks.payloads import parse_webhook

STALE_SECONDS = 2
UNSETTLED_LINE = "may have reached Meta"

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
]


@pytest.fixture
def fakes() -> Iterator[tuple[FakeGraph, FakeOpenAI]]:
    with FakeGraph(plan=FaultPlan(latency=0.01)) as graph, FakeOpenAI(plan=FaultPlan(latency=0.01)) as openai:
        yield graph, openai


def database_url() -> str:
    db = connection.settings_dict
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def worker_env(graph: FakeGraph, openai: FakeOpenAI, **extra: str) -> dict[str, str]:
    """tests.settings on the test database, pointed at the fakes, with a short stale period."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", str(harness.REPO)),
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": database_url(),
        "TEST_WHATSAPP_GRAPH_URL": graph.url,
        "TEST_OPENAI_BASE_URL": f"{openai.url}/v1",
        "OUTBOUND_STALE_SECONDS": str(STALE_SECONDS),
        "OPENAI_TIMEOUT": "10",
        "WHATSAPP_TIMEOUT": "10",
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


def run_to_completion(
    env: dict[str, str], logdir: Path, *, processes: int = 1, concurrency: int = 4
) -> list[harness.ProcessResult]:
    group = harness.ProcessGroup(logdir)
    for _ in range(processes):
        group.start(harness.worker_args(concurrency=concurrency, max_runtime=45), env=env, name="worker")
    return group.wait(timeout=55)


def wait_for(condition: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def job_keys() -> dict[str, int]:
    return {str(key): pk for pk, key in OutboundJob.objects.values_list("pk", "key")}


def report(name: str, **figures: Any) -> None:
    print(f"\n[{name}] " + " ".join(f"{k}={v}" for k, v in figures.items()))


# ---------------------------------------------------------------------------------------------- many workers
def test_four_workers_send_each_of_500_jobs_exactly_once(fakes, tmp_path):
    graph, openai = fakes
    harness.seed_jobs(500, prefix="4")
    results = run_to_completion(worker_env(graph, openai), tmp_path, processes=4, concurrency=4)

    assert [r.returncode for r in results] == [0, 0, 0, 0], results[0].stdout[-2000:]
    claimed = [int(r.stdout.rsplit("claimed=", 1)[1].split()[0]) for r in results]
    per_job = graph.sends_per_job()
    report("four workers", claimed_per_worker=claimed, sends=sum(per_job.values()), jobs=len(per_job))
    assert harness.job_counts() == {"SENT": 500}
    assert set(per_job) == set(job_keys())
    assert sorted(set(per_job.values())) == [1]
    assert sum(claimed) == 500
    # All four took part (SKIP LOCKED spreads the work instead of serialising it).
    assert min(claimed) > 0


# ---------------------------------------------------------------------------------------------- kill -9
def start_and_kill(env: dict[str, str], logdir: Path, *, ready: Callable[[], bool]) -> str:
    """Start one worker, SIGKILL it once `ready()` holds, return its output."""
    group = harness.ProcessGroup(logdir)
    proc = group.start(harness.worker_args(concurrency=6, max_runtime=45), env=env, name="killed")
    try:
        wait_for(lambda: ready() or proc.poll() is not None, timeout=30, what="the worker to get busy")
        assert proc.poll() is None, "the worker finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        (result,) = group.wait(timeout=10)
    assert result.returncode == -signal.SIGKILL
    return result.stdout


def test_kill_9_while_generating_loses_nothing_and_sends_once(fakes, tmp_path):
    graph, openai = fakes
    harness.seed_jobs(30, prefix="5")
    openai.reset(FaultPlan(latency=3.0))
    start_and_kill(worker_env(graph, openai), tmp_path / "a", ready=lambda: openai.arrived >= 6)
    held = OutboundJob.objects.filter(status=OutboundJob.Status.GENERATING, claim_token__isnull=False)
    assert held.count() == 6
    assert graph.arrived == 0

    openai.reset(FaultPlan(latency=0.01))
    time.sleep(STALE_SECONDS + 0.5)
    (result,) = run_to_completion(worker_env(graph, openai), tmp_path / "b")

    per_job = graph.sends_per_job()
    twice = {key: n for key, n in per_job.items() if n > 1}
    report("kill -9 generating", recovered=result.stdout.count("recovered"), twice=len(twice))
    assert result.returncode == 0, result.stdout[-2000:]
    assert harness.job_counts() == {"SENT": 30}
    assert set(per_job) == set(job_keys())
    assert twice == {}


def meta_status_webhook(request: dict[str, Any]) -> dict[str, Any]:
    """What Meta sends after accepting a message: a `sent` status echoing our biz_opaque_callback_data."""
    status = {
        "id": request["answer"]["messages"][0]["id"],
        "status": "sent",
        "timestamp": str(int(request["arrived"])),
        "recipient_id": request["body"]["to"].lstrip("+"),
        "biz_opaque_callback_data": request["body"]["biz_opaque_callback_data"],
    }
    return messages_webhook(statuses=[status])


def test_kill_9_while_sending_never_resends_a_message_that_reached_meta(fakes, tmp_path):
    graph, openai = fakes
    harness.seed_jobs(30, prefix="6")
    graph.reset(FaultPlan(latency=2.0))
    start_and_kill(worker_env(graph, openai), tmp_path / "a", ready=lambda: graph.arrived >= 6)
    # The killed worker's requests still complete at Meta: they reached it.
    wait_for(lambda: len(graph.requests) >= graph.arrived, timeout=10, what="in-flight sends to land")
    reached = graph.accepted()
    in_flight = set(
        OutboundJob.objects.filter(send_started_at__isnull=False, claim_token__isnull=False).values_list(
            "key", flat=True
        )
    )
    assert len(reached) >= 6
    assert {r["body"]["biz_opaque_callback_data"].split(":")[0] for r in reached} <= {
        str(k) for k in in_flight
    }

    # Meta's status webhooks arrive for half of them: those jobs are settled as SENT, never resent.
    settled = reached[: len(reached) // 2]
    for request in settled:
        webhook_ingest(
            parsed=parse_webhook(meta_status_webhook(request), phone_number_ids=SERVED_PHONE_NUMBER_IDS)
        )

    graph.reset(FaultPlan(latency=0.01))
    time.sleep(STALE_SECONDS + 0.5)
    (result,) = run_to_completion(worker_env(graph, openai), tmp_path / "b")
    assert result.returncode == 0, result.stdout[-2000:]

    keys = job_keys()
    sent_first = {r["body"]["biz_opaque_callback_data"].split(":")[0] for r in reached}
    sent_again = set(graph.sends_per_job())
    twice = sent_first & sent_again
    jobs = {str(job.key): job for job in OutboundJob.objects.all()}
    failed = {key for key, job in jobs.items() if job.status == OutboundJob.Status.FAILED}
    report(
        "kill -9 sending",
        reached_meta_before_kill=len(sent_first),
        settled_by_webhook=len(settled),
        failed_for_staff=len(failed),
        failed_but_never_reached_meta=len(failed - sent_first),
        sent_twice=len(twice),
    )
    assert twice == set()
    # Nothing lost: every job is SENT, or FAILED because its send may have reached Meta and nothing settled it.
    assert set(jobs) == set(keys)
    assert {job.status for job in jobs.values()} <= {OutboundJob.Status.SENT, OutboundJob.Status.FAILED}
    assert failed <= {str(k) for k in in_flight}
    for key in failed:
        assert UNSETTLED_LINE in jobs[key].error_log
    for request in settled:
        job = jobs[request["body"]["biz_opaque_callback_data"].split(":")[0]]
        assert job.status == OutboundJob.Status.SENT
        assert job.wa_message_id == request["answer"]["messages"][0]["id"]
    # Every job Meta never saw was sent exactly once by the second run, except any killed between recording
    # the send's start and the request leaving: those cannot be told apart from a lost answer, so staff decide.
    assert sent_again == set(keys) - sent_first - failed
    assert sorted(set(graph.sends_per_job().values())) == [1]


# ---------------------------------------------------------------------------------------------- database
def terminate_other_backends() -> int:
    """pg_terminate_backend on every other connection to the test database: the worker's."""
    with psycopg.connect(harness.with_db_name(database_url(), "postgres"), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> %s",
            [connection.settings_dict["NAME"], connection.connection.info.backend_pid],
        ).fetchall()
    return len(rows)


def test_database_connection_killed_mid_run_fails_loudly_or_recovers_and_next_run_finishes(fakes, tmp_path):
    graph, openai = fakes
    harness.seed_jobs(40, prefix="7")
    connection.ensure_connection()
    openai.reset(FaultPlan(latency=0.3))
    env = worker_env(graph, openai)
    group = harness.ProcessGroup(tmp_path / "a")
    proc = group.start(harness.worker_args(concurrency=4, max_runtime=45), env=env, name="cut")
    try:
        wait_for(lambda: len(graph.accepted()) >= 4 or proc.poll() is not None, timeout=30, what="sends")
        terminated = terminate_other_backends()
    finally:
        (first,) = group.wait(timeout=50)
    loud = first.returncode != 0 or "Error" in first.stdout
    # A backend killed between two statements is replaced before its next use (CONN_HEALTH_CHECKS, and the
    # worker's close_old_connections): then nothing broke, and every job must have been sent exactly once.
    clean = first.returncode == 0 and sorted(graph.sends_per_job().values()) == [1] * 40
    report("connection killed", terminated=terminated, exit=first.returncode, loud=loud, clean=clean)
    assert terminated >= 1
    # Either the run stopped with an error, or it carried on and logged what broke, or nothing broke at all.
    assert loud or clean, first.stdout[-2000:]
    assert clean or first.returncode != 0 or "Traceback" in first.stdout or "job_crashed" in first.stdout

    time.sleep(STALE_SECONDS + 0.5)
    # A job whose generation crashed on the dead connection is given back with backoff (30 s in tests.settings):
    # the next run is the one after that backoff.
    in_backoff = OutboundJob.objects.filter(next_attempt_at__gt=timezone.now()).update(
        next_attempt_at=timezone.now()
    )
    (second,) = run_to_completion(env, tmp_path / "b")
    assert second.returncode == 0, second.stdout[-2000:]
    jobs = list(OutboundJob.objects.all())
    per_job = graph.sends_per_job()
    twice = {key: n for key, n in per_job.items() if n > 1}
    failed = [job for job in jobs if job.status == OutboundJob.Status.FAILED]
    report(
        "after the next run",
        in_backoff_before=in_backoff,
        counts=harness.job_counts(),
        failed_for_staff=len(failed),
        twice=len(twice),
    )
    assert twice == {}
    assert {job.status for job in jobs} <= {OutboundJob.Status.SENT, OutboundJob.Status.FAILED}
    for job in failed:
        # Only a send cut off between Meta's acceptance and our write may be handed to staff.
        assert UNSETTLED_LINE in job.error_log
        assert per_job.get(str(job.key), 0) <= 1
    assert sum(1 for job in jobs if job.status == OutboundJob.Status.SENT) + len(failed) == 40


def allow_connections(allowed: bool) -> None:
    """Make the test database refuse (or accept again) every new connection, as while it restarts."""
    with psycopg.connect(harness.with_db_name(database_url(), "postgres"), autocommit=True) as conn:
        conn.execute(
            sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS {}").format(
                sql.Identifier(connection.settings_dict["NAME"]), sql.SQL("true" if allowed else "false")
            )
        )


def test_a_loop_worker_outlives_the_database_going_away_while_idle(fakes, tmp_path, inbound):
    graph, openai = fakes
    connection.ensure_connection()
    group = harness.ProcessGroup(tmp_path)
    args = [harness.PYTHON, "manage.py", "run_outbound_jobs", "--loop", "--idle-sleep", "0.2"]
    proc = group.start(args, env=worker_env(graph, openai), name="loop")
    try:
        wait_for(
            lambda: WorkerHeartbeat.objects.exists() or proc.poll() is not None,
            timeout=30,
            what="the worker to go idle",
        )
        allow_connections(False)
        try:
            terminated = terminate_other_backends()
            time.sleep(3)
        finally:
            allow_connections(True)
        job = inbound()
        wait_for(
            lambda: (
                OutboundJob.objects.filter(pk=job.pk, status=OutboundJob.Status.SENT).exists()
                or proc.poll() is not None
            ),
            timeout=30,
            what="the worker to answer",
        )
        alive = proc.poll() is None
        proc.send_signal(signal.SIGTERM)
    finally:
        (result,) = group.wait(timeout=30)
    report("database away while idle", terminated=terminated, exit=result.returncode)
    assert terminated >= 1
    assert alive, result.stdout[-3000:]
    assert OutboundJob.objects.get(pk=job.pk).status == OutboundJob.Status.SENT
    assert len(graph.accepted()) == 1
    assert result.returncode == 0, result.stdout[-3000:]
    assert result.stdout.count("database_unavailable") == 1, result.stdout[-3000:]
    assert "database_available again" in result.stdout
