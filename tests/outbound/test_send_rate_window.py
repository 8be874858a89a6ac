"""The worker's send limiter keeps headroom under OUTBOUND_MAX_SENDS_PER_SECOND for the jitter between our
clock and Meta's (found by bench.run_all: a 20/s limit put 25-29 sends into one second at the fake Graph)."""

from outbound.services import SEND_RATE_WINDOW_SECONDS, outbound_config_from_settings


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_limiter_from_settings_spaces_windows_with_headroom(settings):
    settings.OUTBOUND_MAX_SENDS_PER_SECOND = 20
    limiter = outbound_config_from_settings().rate_limiter
    clock = FakeClock()
    limiter._clock, limiter._sleep = clock, clock.sleep
    times = []
    for _ in range(60):
        limiter.acquire()
        times.append(clock.now)
    assert times[:20] == [0.0] * 20
    # Each send is at least the window (1 s + headroom) after the send 20 places before it.
    gaps = [later - earlier for earlier, later in zip(times, times[20:], strict=False)]
    assert min(gaps) >= SEND_RATE_WINDOW_SECONDS > 1.05
    # ...and the headroom is not a throttle: still 20 sends per window.
    assert times[20] < 1.2
