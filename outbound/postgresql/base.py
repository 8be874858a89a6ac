"""Django's PostgreSQL backend, and a way for an idempotent write to skip the connection health check's round trip.

`CONN_HEALTH_CHECKS` makes Django send `SELECT 1` before the first query of every request (and of every worker
job) on a reused connection, so that one PostgreSQL closed (a restart, `pg_terminate_backend`, a pooler's idle
timeout, a failover) is replaced instead of failing the request. For the webhook, that round trip was a tenth
of a POST's CPU.

`reconnecting_once` runs an idempotent piece of work (the webhook's ingest: a redelivered message stores
nothing twice) without that round trip, and still never fails it because of a stale connection:

- it first looks at the socket without waiting (one `poll`, as urllib3 does before reusing an HTTP
  connection). A server that closed the connection has said so there (an error message, the end of the
  stream); then, or when psycopg already knows the connection is broken, Django's own check runs and decides;
- a connection that looked quiet but was dead all the same (its peer vanished without a word and answers the
  next packet with a reset, as after a failover to a moved address) fails the work's first statement: the
  connection is closed and the work runs once more, on a new one.

Everything else (the worker, the admin) keeps Django's check as it is. Selected in config/settings.py for
every PostgreSQL `DATABASE_URL` (ENGINE `outbound.postgresql`).
"""

from __future__ import annotations

import select
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
from django.db import DEFAULT_DB_ALIAS, InterfaceError, OperationalError, connections
from django.db.backends.postgresql import base
from psycopg import pq

T = TypeVar("T")


class DatabaseWrapper(base.DatabaseWrapper):
    # Set by `reconnecting_once` for the work it runs: a quiet socket is enough of a health check.
    trust_quiet_socket = False

    def close_if_health_check_failed(self) -> None:
        if (
            self.trust_quiet_socket
            and self.connection is not None
            and self.health_check_enabled  # type: ignore[attr-defined]  # (not in django-stubs)
            and not self.health_check_done  # type: ignore[has-type]
            and _quiet(self.connection)
        ):
            self.health_check_done = True
            return
        super().close_if_health_check_failed()


def reconnecting_once(work: Callable[[], T], *, using: str = DEFAULT_DB_ALIAS) -> T:
    """`work()` with a quiet connection trusted as it is; if it fails on a dead connection, once more on a new
    one. `work` must be safe to repeat (it may have committed before the connection broke) and must not run
    inside a transaction of the caller's. On SQLite, or another backend, simply `work()`."""
    conn = connections[using]
    if not isinstance(conn, DatabaseWrapper) or conn.in_atomic_block:
        return work()
    reused = conn.connection is not None
    conn.trust_quiet_socket = True
    try:
        return work()
    except (OperationalError, InterfaceError):
        if not reused or (conn.connection is not None and not conn.connection.closed):
            raise  # a new connection failing, or a live one refusing: the database's answer, not staleness
        conn.close()
    finally:
        conn.trust_quiet_socket = False
    return work()


def _quiet(connection: psycopg.Connection[Any]) -> bool:
    """Open, idle, and nothing waiting to be read on its socket (no error, no end of stream, no notice)."""
    if connection.closed or connection.broken or not hasattr(select, "poll"):
        return False
    if connection.info.transaction_status != pq.TransactionStatus.IDLE:
        return False
    try:
        poller = select.poll()  # not select(): a process may hold descriptors above FD_SETSIZE
        poller.register(connection.pgconn.socket, select.POLLIN)
        return not poller.poll(0)
    except (OSError, ValueError, psycopg.Error):
        return False
