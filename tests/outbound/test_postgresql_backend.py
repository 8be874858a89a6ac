"""The PostgreSQL backend's `reconnecting_once` (outbound/postgresql/base.py): no health-check round trip while
the connection is quiet, Django's `SELECT 1` whenever anything arrived on its socket, one more try on a new
connection when a connection that looked quiet was dead; everything else keeps Django's check."""

from __future__ import annotations

import select
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from django.db import DEFAULT_DB_ALIAS, OperationalError, connection, connections, transaction
from django.utils import timezone

from outbound.models import InboundMessage, OutboundJob
from outbound.postgresql import base
from outbound.postgresql.base import DatabaseWrapper, reconnecting_once
from tests.conftest import post_signed, text_payload

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def round_trips(monkeypatch) -> list[int]:
    """Each `SELECT 1` health check Django runs (its `is_usable`)."""
    calls: list[int] = []
    original = DatabaseWrapper.is_usable

    def counted(self: Any) -> bool:
        calls.append(1)
        return bool(original(self))

    monkeypatch.setattr(DatabaseWrapper, "is_usable", counted)
    return calls


def backend_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return int(cursor.fetchone()[0])


def counted(work: Callable[[], Any]) -> tuple[Callable[[], Any], list[int]]:
    runs: list[int] = []

    def run() -> Any:
        runs.append(1)
        return work()

    return run, runs


def next_request() -> None:
    """What Django does between two requests or two worker jobs (`close_old_connections`)."""
    connection.close_if_unusable_or_obsolete()


def terminate(pid: int) -> None:
    """pg_terminate_backend from a connection of its own, and wait until that backend is gone."""
    with psycopg.connect(**{**_admin_params(), "dbname": "postgres"}, autocommit=True) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", [pid]).fetchone() == (True,)
        deadline = time.monotonic() + 10
        while admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone():
            assert time.monotonic() < deadline
            time.sleep(0.02)


def readable_soon() -> bool:
    poller = select.poll()
    poller.register(connection.connection.pgconn.socket, select.POLLIN)
    return bool(poller.poll(5000))


def test_the_backend_is_selected_for_postgresql():
    assert isinstance(connections[DEFAULT_DB_ALIAS], DatabaseWrapper)
    assert connection.settings_dict["CONN_HEALTH_CHECKS"]


def test_a_quiet_connection_is_reused_without_a_round_trip(round_trips):
    pid = backend_pid()
    for _ in range(3):
        next_request()
        assert reconnecting_once(backend_pid) == pid
    assert round_trips == []


def test_outside_it_django_checks_as_always(round_trips):
    # The worker and the admin: Django's SELECT 1 before a reused connection's first query.
    pid = backend_pid()
    next_request()
    assert backend_pid() == pid
    assert round_trips == [1]


def test_a_connection_postgresql_closed_is_replaced_before_the_work_runs(round_trips):
    pid = backend_pid()
    terminate(pid)
    assert readable_soon()  # PostgreSQL's "terminating connection" message, then the end of the stream
    next_request()
    work, runs = counted(backend_pid)
    assert reconnecting_once(work) != pid
    assert (runs, round_trips) == ([1], [1])  # the socket spoke: Django's check ran, failed, reconnected


def test_a_connection_that_only_received_a_notification_is_kept(round_trips):
    pid = backend_pid()
    with connection.cursor() as cursor:
        cursor.execute("LISTEN backend_test")
    with psycopg.connect(**_admin_params(), autocommit=True) as admin:
        admin.execute("NOTIFY backend_test")
    assert readable_soon()
    next_request()
    assert reconnecting_once(backend_pid) == pid
    assert round_trips == [1]  # checked the Django way, found usable


def test_a_dead_connection_that_looked_quiet_costs_one_more_try_on_a_new_one(round_trips, monkeypatch):
    # A peer gone without a word (a failover to a moved address answers with a reset): nothing on the socket.
    pid = backend_pid()
    terminate(pid)
    monkeypatch.setattr(base, "_quiet", lambda conn: True)
    next_request()
    work, runs = counted(backend_pid)
    assert reconnecting_once(work) != pid
    assert (runs, round_trips) == ([1, 1], [])


def test_an_error_of_a_live_connection_is_not_retried():
    def too_slow() -> None:
        with connection.cursor() as cursor:
            cursor.execute("SET statement_timeout = 10")
            try:
                cursor.execute("SELECT pg_sleep(1)")
            finally:
                cursor.execute("RESET statement_timeout")

    backend_pid()
    work, runs = counted(too_slow)
    with pytest.raises(OperationalError):
        reconnecting_once(work)
    assert runs == [1]


def test_inside_a_transaction_of_the_callers_it_only_runs_the_work(round_trips, monkeypatch):
    monkeypatch.setattr(base, "_quiet", lambda conn: pytest.fail("the socket is not consulted"))
    with transaction.atomic():
        work, runs = counted(backend_pid)
        reconnecting_once(work)
    assert runs == [1]


def test_the_webhook_stores_a_post_whose_connection_died_quietly(client, monkeypatch):
    # Through the real view: the first statement fails on the dead connection, the second try stores it once.
    backend_pid()
    terminate(connection.connection.info.backend_pid)
    monkeypatch.setattr(base, "_quiet", lambda conn: True)
    response = post_signed(client, text_payload(wamid="wamid.QUIET1", timestamp=timezone.now()))
    assert response.status_code == 200
    assert InboundMessage.objects.filter(wamid="wamid.QUIET1").count() == 1
    assert OutboundJob.objects.filter(inbound_message__wamid="wamid.QUIET1").count() == 1


def _admin_params() -> dict[str, Any]:
    db = connection.settings_dict
    return {
        "host": db["HOST"] or "127.0.0.1",
        "port": db["PORT"] or 5432,
        "user": db["USER"],
        "dbname": db["NAME"],
    }
