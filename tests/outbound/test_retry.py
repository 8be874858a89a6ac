"""The retry policy as data: Meta codes → actions, backoff with full jitter, Meta's 4^n pair-rate rule."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from outbound.exceptions import GraphError
from outbound.retry import (
    Action,
    backoff_seconds,
    graph_error_action,
    next_attempt_at,
    pair_rate_limit_seconds,
)


def error(code: int | None, http_status: int = 400) -> GraphError:
    return GraphError(http_status=http_status, code=code, message="m")


@pytest.mark.parametrize(
    ("code", "http_status", "action"),
    [
        # DESIGN.md "Graph API error policy"
        *[(c, 500, Action.RETRY) for c in (1, 2, 131000, 131016, 133004)],
        *[(c, 400, Action.RETRY) for c in (4, 80007, 131057, 130429)],
        (131056, 400, Action.PAIR_RATE_LIMIT),
        (131047, 400, Action.TEMPLATE),
        *[
            (c, 400, Action.FAIL)
            for c in (100, 131008, 131009, 131026, 131051, 132000, 132001, 132015, 132016, 131050, 368)
        ],
        *[(c, 401, Action.CONFIGURATION) for c in (190, 0, 3, 10, 200, 250, 299, 131005)],
        # No code: the HTTP status decides.
        (None, 500, Action.RETRY),
        (None, 503, Action.RETRY),
        (None, 429, Action.RETRY),
        (None, 401, Action.CONFIGURATION),
        (None, 403, Action.CONFIGURATION),
        (None, 400, Action.FAIL),
        (None, 404, Action.FAIL),
        # An unknown code: other 4xx fail, 5xx retry.
        (999999, 400, Action.FAIL),
        (999999, 502, Action.RETRY),
    ],
)
def test_policy_table(code, http_status, action):
    assert graph_error_action(error(code, http_status)) is action


def test_code_wins_over_http_status():
    # Meta says to build on the code: a 100 inside a 500 is still the request's fault.
    assert graph_error_action(error(100, 500)) is Action.FAIL
    assert graph_error_action(error(131000, 400)) is Action.RETRY


@given(attempts=st.integers(1, 30), seed=st.integers(0, 2**32))
def test_full_jitter_stays_within_floor_and_ceiling(attempts, seed):
    base, cap = 30.0, 3600.0
    delay = backoff_seconds(attempts=attempts, base=base, cap=cap, rng=random.Random(seed))
    ceiling = min(cap, base * 2 ** (attempts - 1))
    assert 1.0 <= delay <= ceiling


def test_jitter_spreads_delays():
    rng = random.Random(7)
    delays = {round(backoff_seconds(attempts=4, base=30, cap=3600, rng=rng), 3) for _ in range(50)}
    assert len(delays) > 40
    assert max(delays) <= 240


def test_cap():
    for seed in range(100):
        assert backoff_seconds(attempts=40, base=30, cap=60, rng=random.Random(seed)) <= 60


def test_floor_of_one_second():
    class Zero(random.Random):
        def uniform(self, a, b):
            return 0.0

    assert backoff_seconds(attempts=1, base=30, cap=3600, rng=Zero()) == 1.0


def test_retry_after_is_a_floor():
    for seed in range(50):
        assert backoff_seconds(attempts=1, base=30, cap=3600, retry_after=45, rng=random.Random(seed)) >= 45


def test_retry_after_beyond_the_cap_still_wins():
    # The provider said "not before": retrying sooner only earns another 429.
    assert backoff_seconds(attempts=1, base=30, cap=60, retry_after=120) >= 120


def test_base_zero_makes_retries_due_at_once_but_honours_retry_after():
    assert backoff_seconds(attempts=5, base=0, cap=3600) == 0
    assert backoff_seconds(attempts=5, base=0, cap=3600, retry_after=3) == 3


@pytest.mark.parametrize(("attempts", "seconds"), [(1, 1), (2, 4), (3, 16), (4, 64), (5, 256)])
def test_pair_rate_limit_is_four_to_the_n(attempts, seconds):
    assert pair_rate_limit_seconds(attempts=attempts, cap=3600) == seconds


def test_pair_rate_limit_cap():
    assert pair_rate_limit_seconds(attempts=20, cap=3600) == 3600


def test_next_attempt_at():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert next_attempt_at(now=now, delay_seconds=1.5) == now + timedelta(seconds=1.5)
