"""A sliding-window limiter: never more than N sends in any one-second window, shared by a run's threads."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable


class SendRateLimiter:
    """Blocks `acquire()` until a send fits under `max_per_second` within the last second."""

    def __init__(
        self,
        max_per_second: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        window: float = 1.0,
    ) -> None:
        if max_per_second <= 0:
            raise ValueError("max_per_second must be positive")
        # A rate under one (0.5/s) becomes one send per 2 s window. Above one, a fraction is rounded down
        # (2.5/s → 2 per second): shrinking the window instead would let two windows' worth into one second.
        self._capacity = max(1, int(max_per_second))
        self._window = window * max(1.0, self._capacity / max_per_second)
        self._sent: deque[float] = deque()
        self._lock = threading.Lock()
        self._clock = clock
        self._sleep = sleep

    def acquire(self) -> None:
        while True:
            with self._lock:
                now = self._clock()
                while self._sent and now - self._sent[0] >= self._window:
                    self._sent.popleft()
                if len(self._sent) < self._capacity:
                    self._sent.append(now)
                    return
                wait = self._window - (now - self._sent[0])
            self._sleep(max(wait, 0.001))
