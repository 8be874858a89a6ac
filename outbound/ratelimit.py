"""Send limiters: never more than N sends in any one-second window.

`SendRateLimiter` counts one process's sends (its threads share it): SQLite, one machine. On PostgreSQL
`SharedSendRateLimiter` holds the limit of a business number for every process and host at once.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol


class SendLimiter(Protocol):
    def acquire(self) -> object:
        """Block until one more send fits under the limit."""
        ...


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


class SharedSendRateLimiter:
    """The limit of one business number shared by every worker process and host, through PostgreSQL.

    Meta counts sends per business number, whoever makes them, so one process cannot know what the others
    send. Each send instead reserves the number's next slot in `SendSchedule` with one atomic statement: the
    slot is the later of "now" and the row's `next_send_at`, and the row moves on by one interval
    (`window / capacity`, as in `SendRateLimiter`). Slots are therefore at least one interval apart on the
    database's clock, which every host shares, so no `window` holds more than `capacity` of them however many
    workers run; a worker sleeps until its slot. The price of exactness is pacing: a burst leaves evenly
    spread over the window instead of all at once (80 ready replies take the window to go, not a moment).
    The row lock lasts one statement; nothing is held while sleeping or sending.
    """

    _RESERVE = """
        INSERT INTO {table} AS s (phone_number_id, next_send_at)
        VALUES (%(key)s, clock_timestamp() + make_interval(secs => %(interval)s))
        ON CONFLICT (phone_number_id) DO UPDATE
            SET next_send_at = GREATEST(s.next_send_at, clock_timestamp()) + make_interval(secs => %(interval)s)
        RETURNING EXTRACT(EPOCH FROM s.next_send_at)::float8 - %(interval)s,
                  EXTRACT(EPOCH FROM s.next_send_at - clock_timestamp())::float8 - %(interval)s
    """

    def __init__(
        self,
        max_per_second: float,
        *,
        key: str,
        window: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if max_per_second <= 0:
            raise ValueError("max_per_second must be positive")
        capacity = max(1, int(max_per_second))
        self.interval = window * max(1.0, capacity / max_per_second) / capacity
        self._key = key
        self._sleep = sleep

    def acquire(self) -> float:
        """Reserve the next slot, sleep until it comes; return the slot (database clock, Unix seconds)."""
        from django.db import connection

        from outbound.models import SendSchedule

        with connection.cursor() as cursor:
            cursor.execute(
                self._RESERVE.format(table=connection.ops.quote_name(SendSchedule._meta.db_table)),
                {"key": self._key, "interval": self.interval},
            )
            slot, wait = cursor.fetchone()
        if wait > 0:
            self._sleep(wait)
        return float(slot)
