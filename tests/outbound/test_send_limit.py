"""One send limit per business number for every worker: slots reserved through PostgreSQL, counted at Meta."""

from __future__ import annotations

import itertools
import threading

import pytest
from django.db import connections

from bench import harness
from outbound.models import SendSchedule
from outbound.ratelimit import SendRateLimiter, SharedSendRateLimiter
from outbound.worker_config import SEND_RATE_WINDOW_SECONDS, worker_config_from_settings
from tests.outbound.conftest import is_postgres
from tests.outbound.test_worker_processes import fakes, report, run_to_completion, worker_env

__all__ = ["fakes"]  # the fixture, shared with the other process tests


@pytest.mark.django_db
def test_the_limiter_is_shared_on_postgresql_and_per_process_on_sqlite(settings):
    settings.OUTBOUND_MAX_SENDS_PER_SECOND = 20
    limiter = worker_config_from_settings().rate_limiter
    if is_postgres():
        assert isinstance(limiter, SharedSendRateLimiter)
        assert limiter.interval == pytest.approx(SEND_RATE_WINDOW_SECONDS / 20)
    else:
        assert isinstance(limiter, SendRateLimiter)


@pytest.mark.parametrize(("rate", "interval"), [(80, 1.1 / 80), (2.5, 1.1 / 2), (0.5, 2.2), (1, 1.1)])
def test_the_interval_between_slots_keeps_the_per_process_limiters_rounding(rate, interval):
    # 2.5/s is two per window (never three in a second); 0.5/s one per 2.2 s.
    assert SharedSendRateLimiter(rate, key="1", window=1.1).interval == pytest.approx(interval)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_slots_from_many_limiters_on_many_connections_are_one_interval_apart():
    # Three "processes" (limiters with their own connections, on threads) reserve for one number; a fourth
    # number is independent. The slots are on the database's clock, so this is exact, not a timing.
    slots: dict[str, list[float]] = {"A": [], "B": []}
    lock = threading.Lock()

    def reserve(key: str, count: int) -> None:
        limiter = SharedSendRateLimiter(50, key=key, window=1.0, sleep=lambda _: None)
        try:
            for _ in range(count):
                slot = limiter.acquire()
                with lock:
                    slots[key].append(slot)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=reserve, args=("A", 20)) for _ in range(3)]
    threads.append(threading.Thread(target=reserve, args=("B", 5)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    a = sorted(slots["A"])
    assert len(a) == 60
    assert min(later - earlier for earlier, later in itertools.pairwise(a)) >= 0.02 - 1e-6
    # At most 50 slots in any one-second window, and the other number did not wait for this one.
    assert max(sum(1 for t in a if start <= t < start + 1.0) for start in a) <= 50
    assert len(slots["B"]) == 5
    # One row per number, whatever the number of sends.
    assert SendSchedule.objects.count() == 2


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_limiter_sleeps_until_its_slot():
    waits: list[float] = []
    limiter = SharedSendRateLimiter(10, key="106540352242922", window=1.0, sleep=waits.append)
    first = limiter.acquire()
    second = limiter.acquire()
    assert second - first == pytest.approx(0.1, abs=1e-3)
    assert len(waits) == 1
    assert 0.05 < waits[0] <= 0.1


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_three_worker_processes_together_stay_under_one_limit_at_meta(fakes, tmp_path):
    graph, openai = fakes
    harness.seed_jobs(45, prefix="7")
    env = worker_env(graph, openai, OUTBOUND_MAX_SENDS_PER_SECOND="10")
    results = run_to_completion(env, tmp_path, processes=3, concurrency=4)

    assert [r.returncode for r in results] == [0, 0, 0], results[0].stdout[-2000:]
    claimed = [int(r.stdout.rsplit("claimed=", 1)[1].split()[0]) for r in results]
    peak = graph.max_in_any_window(1.0)
    report("three workers, one limit of 10/s", claimed_per_worker=claimed, peak_in_any_second=peak)
    assert harness.job_counts() == {"SENT": 45}
    assert sorted(set(graph.sends_per_job().values())) == [1]
    assert min(claimed) > 0  # all three sent: the limit held across processes, not inside one
    # Per-process limiters let 3 x 10 into one second here; the shared one never more than 10.
    assert peak <= 10
