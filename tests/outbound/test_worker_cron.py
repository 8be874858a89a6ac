"""A cron-started `run_outbound_jobs` process on PostgreSQL: it stays for its window and answers at once.

Timings are never the pass/fail line here: the run's fallback poll is set to 30 s, so an answer within 10 s
can only come from the NOTIFY sent by the webhook's transaction.
"""

from __future__ import annotations

import signal
import time

import pytest
from django.db import connection

from bench import harness
from outbound.models import OutboundJob
from outbound.wakeup import CHANNEL
from tests.outbound.test_worker_processes import fakes, report, wait_for, worker_env

__all__ = ["fakes"]  # the fixture, shared with the other process tests

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

FALLBACK_POLL_SECONDS = 30


def listening_backends() -> int:
    """Connections of other processes that LISTEN for new jobs (their last statement was the LISTEN)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query = %s",
            [f"LISTEN {CHANNEL}"],
        )
        return int(cursor.fetchone()[0])


def test_a_cron_run_with_nothing_due_stays_and_answers_a_new_message_within_seconds(fakes, tmp_path, inbound):
    graph, openai = fakes
    group = harness.ProcessGroup(tmp_path)
    args = harness.worker_args(
        concurrency=2, max_runtime=50, until_idle=False, extra=["--idle-sleep", str(FALLBACK_POLL_SECONDS)]
    )
    proc = group.start(args, env=worker_env(graph, openai), name="cron")
    try:
        wait_for(
            lambda: listening_backends() == 1 or proc.poll() is not None, timeout=30, what="the run to listen"
        )
        # Idle for a while first: the run must not have ended (the old cron run exited when nothing was due).
        time.sleep(1.0)
        assert proc.poll() is None
        posted = time.monotonic()
        job = inbound()
        wait_for(
            lambda: (
                OutboundJob.objects.filter(pk=job.pk, status=OutboundJob.Status.SENT).exists()
                or proc.poll() is not None
            ),
            timeout=25,
            what="the reply",
        )
        answered = time.monotonic() - posted
        still_running = proc.poll() is None
        proc.send_signal(signal.SIGTERM)
    finally:
        (result,) = group.wait(timeout=30)
    report("cron run woken by NOTIFY", answered_s=f"{answered:.2f}", fallback_poll_s=FALLBACK_POLL_SECONDS)
    assert still_running, result.stdout[-3000:]
    assert OutboundJob.objects.get(pk=job.pk).status == OutboundJob.Status.SENT
    assert len(graph.accepted()) == 1
    assert answered < 10, f"answered after {answered:.1f}s: the notification did not wake the run"
    # SIGTERM ends the stay early and cleanly; the summary line still comes.
    assert result.returncode == 0, result.stdout[-3000:]
    assert "run_outbound_jobs claimed=1 " in result.stdout
    assert listening_backends() == 0


def test_a_cron_run_ends_when_its_window_is_over(fakes, tmp_path):
    graph, openai = fakes
    group = harness.ProcessGroup(tmp_path)
    started = time.monotonic()
    group.start(
        harness.worker_args(concurrency=1, max_runtime=3, until_idle=False),
        env=worker_env(graph, openai),
        name="w",
    )
    (result,) = group.wait(timeout=40)
    took = time.monotonic() - started
    assert result.returncode == 0, result.stdout[-3000:]
    assert "run_outbound_jobs claimed=0 " in result.stdout
    # It stayed for its window (start-up included in `took`), and then ended by itself.
    assert took >= 3
    assert listening_backends() == 0
