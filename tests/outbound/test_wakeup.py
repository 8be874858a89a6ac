"""Idle runs: a cron run stays for its window, is woken by the webhook's NOTIFY (PostgreSQL) or polls."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection, connections, transaction

from outbound.models import OutboundJob
from outbound.wakeup import JobWakeup, outbound_jobs_notify
from outbound.worker import Worker
from outbound.worker_config import worker_config_from_settings
from tests.outbound.conftest import GRAPH_MESSAGES_URL, graph_ok

S = OutboundJob.Status


@pytest.fixture
def wakeup():
    stopping = threading.Event()
    listener = JobWakeup(stopping=stopping)
    listener.start()
    yield listener, stopping
    listener.close()


def notify_then_roll_back() -> None:
    with transaction.atomic():
        outbound_jobs_notify()
        raise RuntimeError("rolled back")


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_notification_wakes_the_listener_only_when_its_transaction_commits(wakeup):
    listener, _ = wakeup
    assert listener.listening
    with pytest.raises(RuntimeError):
        notify_then_roll_back()
    assert listener.wait(0.5) is False
    with transaction.atomic():
        outbound_jobs_notify()
        # Not before the commit: a worker woken now would not see the new rows.
        assert listener.wait(0.3) is False
    started = time.monotonic()
    assert listener.wait(10) is True
    assert time.monotonic() - started < 5
    # Several notifications queued while busy are one wake-up, not one each. Each NOTIFY here commits on its
    # own (autocommit), so they reach the socket one by one: give the last one time to arrive before the wait,
    # as a worker busy with a job would (without it the test raced the third notification).
    for _ in range(3):
        outbound_jobs_notify()
    time.sleep(1.0)
    assert listener.wait(5) is True
    assert listener.wait(0.3) is False


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_listener_outlives_its_connection_being_killed(wakeup):
    listener, _ = wakeup
    pid = listener._listener.connection.info.backend_pid
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    # The broken connection is noticed and dropped (no error), the next wait listens again.
    assert listener.wait(0.5) is False
    assert listener.wait(0.1) is False
    assert listener.listening
    outbound_jobs_notify()
    assert listener.wait(10) is True


@pytest.mark.django_db(transaction=True)
def test_a_stop_ends_the_wait_at_once(wakeup):
    listener, stopping = wakeup
    threading.Timer(0.2, stopping.set).start()
    started = time.monotonic()
    assert listener.wait(30) is False
    assert time.monotonic() - started < 5


@pytest.mark.django_db(transaction=True)
def test_a_staying_run_takes_a_message_that_arrives_while_it_is_idle(inbound, graph, fake_openai):
    graph.post(GRAPH_MESSAGES_URL, json=graph_ok())
    outcomes: list[str] = []
    worker = Worker(
        config=worker_config_from_settings(),
        stale_seconds=300,
        stay=True,
        max_runtime=60,
        idle_sleep=0.1,
        on_job_done=lambda job, outcome: (outcomes.append(outcome), worker.stop()),
    )
    thread = threading.Thread(target=lambda: (worker.run(), connections.close_all()))
    thread.start()
    try:
        time.sleep(0.5)  # idle: a run that ended when nothing was due would be gone by now
        assert thread.is_alive()
        job = inbound()
        thread.join(30)
    finally:
        worker.stop()
        thread.join(30)
    assert outcomes == ["sent"]
    assert OutboundJob.objects.get(pk=job.pk).status == S.SENT


@pytest.mark.django_db(transaction=True)
def test_a_staying_run_ends_after_its_window_and_an_until_idle_run_at_once():
    started = time.monotonic()
    summary = Worker(
        config=worker_config_from_settings(), stale_seconds=300, stay=True, max_runtime=0.6, idle_sleep=5
    ).run()
    stayed = time.monotonic() - started
    assert summary.claimed == 0
    # The wait is cut to the window's end, not to a whole poll interval.
    assert 0.6 <= stayed < 4
    started = time.monotonic()
    Worker(config=worker_config_from_settings(), stale_seconds=300, max_runtime=60, idle_sleep=5).run()
    assert time.monotonic() - started < 4
