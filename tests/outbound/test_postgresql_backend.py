"""The PostgreSQL backend's health check (outbound/postgresql/base.py): no round trip while the connection is
quiet, Django's `SELECT 1` whenever anything arrived on its socket, a closed connection replaced."""

from __future__ import annotations

import select
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from django.db import DEFAULT_DB_ALIAS, connections

from outbound.postgresql.base import DatabaseWrapper

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def wrapper() -> Iterator[Any]:
    """A connection of its own to the test database, as a web or worker process holds one between requests."""
    conn = connections.create_connection(DEFAULT_DB_ALIAS)
    assert isinstance(conn, DatabaseWrapper)
    assert conn.settings_dict["CONN_HEALTH_CHECKS"]
    conn.ensure_connection()
    try:
        yield conn
    finally:
        conn.close()


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


def next_request(conn: Any) -> int:
    """What Django does between two requests (`close_old_connections`), then the request's first query."""
    conn.close_if_unusable_or_obsolete()
    with conn.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return int(cursor.fetchone()[0])


def other(conn: Any) -> psycopg.Connection[Any]:
    params = conn.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    return psycopg.connect(**{k: v for k, v in params.items() if k != "prepare_threshold"}, autocommit=True)


def wait_readable(conn: Any, seconds: float = 5.0) -> None:
    poller = select.poll()
    poller.register(conn.connection.pgconn.socket, select.POLLIN)
    assert poller.poll(seconds * 1000), "nothing arrived on the connection's socket"


def test_a_quiet_connection_is_reused_without_a_round_trip(wrapper, round_trips):
    pid = wrapper.connection.info.backend_pid
    assert [next_request(wrapper) for _ in range(3)] == [pid] * 3
    assert round_trips == []


def test_a_connection_postgresql_closed_is_replaced_before_the_request_uses_it(wrapper, round_trips):
    pid = wrapper.connection.info.backend_pid
    with other(wrapper) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", [pid]).fetchone() == (True,)
    wait_readable(wrapper)  # PostgreSQL's "terminating connection" message, then the end of the stream
    new_pid = next_request(wrapper)
    assert new_pid != pid
    assert round_trips == [1]  # the socket had something to say: Django's check ran, and failed


def test_a_connection_that_only_received_a_notification_is_kept(wrapper, round_trips):
    pid = wrapper.connection.info.backend_pid
    with wrapper.cursor() as cursor:
        cursor.execute("LISTEN backend_test")
    with other(wrapper) as admin:
        admin.execute("NOTIFY backend_test")
    wait_readable(wrapper)
    assert next_request(wrapper) == pid
    assert round_trips == [1]  # checked the Django way, found usable


def test_a_connection_psycopg_knows_is_closed_is_not_called_quiet(wrapper, round_trips):
    wrapper.connection.close()
    pid = next_request(wrapper)
    assert pid > 0
    # Django's own check ran on the closed connection (and replaced it).
    assert round_trips == [1]
