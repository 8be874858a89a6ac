"""Waking idle workers when jobs arrive: LISTEN/NOTIFY on PostgreSQL, a short poll everywhere else.

Whoever creates due jobs calls `outbound_jobs_notify()` inside its transaction; PostgreSQL delivers the
notification when (and only if) that transaction commits, so a worker never wakes for rows it cannot see yet.
An idle worker waits in `JobWakeup.wait()`: on PostgreSQL it listens on its own connection (the worker's
connection runs claims and transactions, and a connection only receives notifications between them); anywhere
else, or while that connection is broken, `wait()` simply sleeps for the poll interval. A notification is only
a hint to look now: the claim query decides what is due, so a lost one costs at most one poll interval.
"""

from __future__ import annotations

import logging
import select
import threading
import time
from typing import Any

from django.db import DEFAULT_DB_ALIAS, DatabaseError, InterfaceError, connections

logger = logging.getLogger(__name__)

CHANNEL = "outbound_jobs"
# How long one blocking read of the listening socket lasts: a stop request (SIGTERM) is seen within this.
STOP_CHECK_SECONDS = 0.25


def outbound_jobs_notify(*, using: str = DEFAULT_DB_ALIAS) -> None:
    """Tell idle workers that jobs are due: on PostgreSQL a NOTIFY, delivered when this transaction commits."""
    connection = connections[using]
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"NOTIFY {CHANNEL}")


class JobWakeup:
    """An idle worker's wait: returns early when jobs were announced (PostgreSQL), else after the timeout."""

    def __init__(self, *, stopping: threading.Event, using: str = DEFAULT_DB_ALIAS) -> None:
        self._stopping = stopping
        self._using = using
        self._listener: Any = None  # a DatabaseWrapper of its own, LISTENing
        self._listens = connections[using].vendor == "postgresql"
        self._errors: tuple[type[BaseException], ...] = (DatabaseError, InterfaceError, OSError)
        if self._listens:
            import psycopg

            # The listening connection is used raw, so psycopg's own errors reach us unwrapped.
            self._errors += (psycopg.Error,)

    @property
    def listening(self) -> bool:
        return self._listener is not None

    def start(self) -> None:
        """Open the listening connection (PostgreSQL); if the database does not answer, poll until it does."""
        if not self._listens or self._listener is not None:
            return
        listener = connections.create_connection(self._using)
        try:
            listener.ensure_connection()
            listener.connection.execute(f"LISTEN {CHANNEL}")
        except self._errors:
            logger.debug("job_wakeup_listen_failed; polling until the database answers", exc_info=True)
            _close_quietly(listener)
            return
        self._listener = listener

    def wait(self, timeout: float) -> bool:
        """Block up to `timeout` seconds; True when jobs were announced, False on timeout or stop."""
        deadline = time.monotonic() + max(timeout, 0.0)
        self.start()  # again after a broken connection: one attempt per wait, so at most one per poll
        while not self._stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if self._listener is None:
                self._stopping.wait(left)
                return False
            try:
                if self._notified(min(left, STOP_CHECK_SECONDS)):
                    return True
            except self._errors as exc:
                # The server went away (restart, failover): the worker's loop notices the outage on its next
                # claim and logs it there, once; this wait falls back to sleeping and listens again next time.
                logger.debug("job_wakeup_connection_lost %s; polling", type(exc).__name__)
                self.close()
        return False

    def _notified(self, timeout: float) -> bool:
        """Wait for the socket up to `timeout`, then take every notification that arrived: one look at the
        queue answers them all.

        libpq's own calls (select, consume_input, notifies), not psycopg's `notifies(timeout=...)`: that one
        waits forever when its remaining time rounds to zero.
        """
        pgconn = self._listener.connection.pgconn
        pgconn.consume_input()
        if pgconn.notifies() is None:
            readable, _, _ = select.select([pgconn.socket], [], [], timeout)
            if not readable:
                return False
            pgconn.consume_input()  # raises when the server closed the connection
            if pgconn.notifies() is None:
                return False
        while pgconn.notifies() is not None:
            pass
        return True

    def close(self) -> None:
        """Close the listening connection (the end of a run, or after it broke)."""
        listener, self._listener = self._listener, None
        if listener is not None:
            _close_quietly(listener)


def _close_quietly(listener: Any) -> None:
    try:
        listener.close()
    except Exception:  # a broken connection closing badly changes nothing
        logger.debug("job_wakeup_close_failed", exc_info=True)
