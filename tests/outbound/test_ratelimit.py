"""SendRateLimiter with a fake clock: never more than N sends in any one-second window."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from outbound.ratelimit import SendRateLimiter, SharedSendRateLimiter
from outbound.worker_config import SEND_RATE_WINDOW_SECONDS, worker_config_from_settings


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def max_in_any_window(times: list[float], window: float = 1.0) -> int:
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= window - 1e-9:
            start += 1
        best = max(best, end - start + 1)
    return best


@given(
    rate=st.sampled_from([1, 2, 5, 80, 0.5, 2.5, 7.9, 1.5]),
    gaps=st.lists(st.floats(0, 0.7), min_size=1, max_size=120),
)
@settings(max_examples=150, deadline=None)
def test_never_more_than_the_rate_in_any_second(rate, gaps):
    clock = FakeClock()
    limiter = SendRateLimiter(rate, clock=clock, sleep=clock.sleep)
    times = []
    for gap in gaps:
        clock.now += gap
        limiter.acquire()
        times.append(clock.now)
    assert max_in_any_window(times) <= max(1, math.floor(rate))


def test_a_burst_is_spread_over_seconds():
    clock = FakeClock()
    limiter = SendRateLimiter(3, clock=clock, sleep=clock.sleep)
    times = []
    for _ in range(7):
        limiter.acquire()
        times.append(clock.now)
    assert times[:3] == [1000.0] * 3
    assert times[3] >= 1001.0
    assert times[6] >= 1002.0
    assert max_in_any_window(times) == 3


def test_under_the_rate_nobody_waits():
    clock = FakeClock()
    limiter = SendRateLimiter(80, clock=clock, sleep=clock.sleep)
    for _ in range(80):
        limiter.acquire()
    assert clock.sleeps == []


def test_half_a_send_per_second_means_one_every_two_seconds():
    clock = FakeClock()
    limiter = SendRateLimiter(0.5, clock=clock, sleep=clock.sleep)
    limiter.acquire()
    limiter.acquire()
    assert clock.now >= 1002.0


@pytest.mark.parametrize("rate", [0, -1])
def test_rate_must_be_positive(rate):
    with pytest.raises(ValueError, match="positive"):
        SendRateLimiter(rate)


@pytest.mark.django_db
def test_limiter_from_settings_spaces_windows_with_headroom(settings):
    # Headroom for the jitter between our clock and Meta's (bench.run_all found a 20/s limit putting 25-29
    # sends into one second at the fake Graph with an exact 1 s window).
    settings.OUTBOUND_MAX_SENDS_PER_SECOND = 20
    limiter = worker_config_from_settings().rate_limiter
    if isinstance(limiter, SharedSendRateLimiter):  # PostgreSQL: the same headroom between the shared slots
        limiter._sleep = lambda seconds: None
        slots = [limiter.acquire() for _ in range(60)]
        gaps = [later - earlier for earlier, later in zip(slots, slots[20:], strict=False)]
        assert min(gaps) >= SEND_RATE_WINDOW_SECONDS - 1e-6
        assert SEND_RATE_WINDOW_SECONDS > 1.05
        return
    clock = FakeClock()
    start = clock.now
    limiter._clock, limiter._sleep = clock, clock.sleep
    times = []
    for _ in range(60):
        limiter.acquire()
        times.append(clock.now - start)
    assert times[:20] == [0.0] * 20
    # Each send is at least the window (1 s + headroom) after the send 20 places before it.
    gaps = [later - earlier for earlier, later in zip(times, times[20:], strict=False)]
    assert min(gaps) >= SEND_RATE_WINDOW_SECONDS > 1.05
    # ...and the headroom is not a throttle: still 20 sends per window.
    assert times[20] < 1.2
