"""Django's PostgreSQL backend with a health check that needs no round trip while the connection is quiet.

`CONN_HEALTH_CHECKS` makes Django send `SELECT 1` before the first query of every request (and of every worker
job) on a reused connection, so that one PostgreSQL closed (a restart, `pg_terminate_backend`, an idle
timeout, a pooler's) is replaced instead of failing the request. That round trip was a tenth of a webhook
POST's CPU. A server that closes a connection says so on its socket: an error message ("terminating
connection due to administrator command") and the end of the stream, both of which make the socket readable.
An idle connection that nobody LISTENs on has nothing to read. So the check first looks at the socket without
waiting (one `poll`, as urllib3 does before reusing an HTTP connection): nothing there, the connection is kept
as it is; anything there (or a connection psycopg already knows is broken), Django's own check runs (`SELECT 1`)
and decides, so a connection that only received a notification is not thrown away.

What neither check sees is a connection whose peer vanished without a word (a silently dropped route): the
next statement fails on it; the webhook answers 503 (Meta redelivers) and a worker gives the job back.

Selected in config/settings.py for every PostgreSQL `DATABASE_URL` (ENGINE `outbound.postgresql`).
"""

from __future__ import annotations

import select
from typing import Any

import psycopg
from django.db.backends.postgresql import base
from psycopg import pq


class DatabaseWrapper(base.DatabaseWrapper):
    def close_if_health_check_failed(self) -> None:
        if (
            self.connection is not None
            and self.health_check_enabled  # type: ignore[attr-defined]  # (not in django-stubs)
            and not self.health_check_done  # type: ignore[has-type]
            and _quiet(self.connection)
        ):
            self.health_check_done = True
            return
        super().close_if_health_check_failed()


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
