"""The webhook while PostgreSQL is unreachable: 503 so that Meta redelivers, nothing half-stored, and the
redelivery once it is back creates the job exactly once.

In process: the connection's settings are pointed at a closed port (a database that is down), then back.
Through gunicorn: the Procfile's web process started with a DATABASE_URL on a dead port; and a live one whose
connection PostgreSQL closes between two POSTs (a restart): the next POST is stored on a new connection.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import timedelta

import psycopg
import pytest
from django.db import connection
from django.utils import timezone

from bench import harness
from outbound.models import InboundMessage, OutboundJob
from tests.conftest import post_signed, text_payload
from webhooks.signatures import sign

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def database_down() -> Iterator[None]:
    """While inside, every new connection to the default database is refused (a closed port)."""
    connection.close()
    saved = connection.settings_dict["HOST"], connection.settings_dict["PORT"]
    connection.settings_dict["HOST"], connection.settings_dict["PORT"] = "127.0.0.1", closed_port()
    try:
        yield
    finally:
        connection.close()
        connection.settings_dict["HOST"], connection.settings_dict["PORT"] = saved


def test_webhook_answers_503_while_the_database_is_down_and_the_redelivery_stores_once(client):
    payload = text_payload(wamid="wamid.DOWN1", timestamp=timezone.now() - timedelta(seconds=5))
    with database_down():
        first = post_signed(client, payload)
        retry = post_signed(client, payload)
    assert (first.status_code, retry.status_code) == (503, 503)
    assert InboundMessage.objects.count() == 0

    # Meta redelivers (twice, as it may): one message, one job.
    assert post_signed(client, payload).status_code == 200
    assert post_signed(client, payload).status_code == 200
    assert InboundMessage.objects.filter(wamid="wamid.DOWN1").count() == 1
    assert OutboundJob.objects.filter(inbound_message__wamid="wamid.DOWN1").count() == 1


def post_to(base: str, body: bytes) -> int:
    req = urllib.request.Request(  # noqa: S310 (loopback)
        f"{base}/webhooks/whatsapp/",
        data=body,
        headers={
            "Content-Type": "application/json",
            "X-Hub-Signature-256": sign(body=body, app_secret=harness.APP_SECRET),
        },
    )
    try:
        with urllib.request.urlopen(req, timeout=20) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def live_url() -> str:
    db = connection.settings_dict
    return f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def test_gunicorn_with_the_database_down_answers_503_then_a_healthy_server_stores_the_redelivery(tmp_path):
    body = json.dumps(
        text_payload(wamid="wamid.DOWN2", timestamp=timezone.now() - timedelta(seconds=5))
    ).encode()
    db = connection.settings_dict
    live = live_url()
    dead = f"postgres://{db['USER']}@127.0.0.1:{closed_port()}/{db['NAME']}"

    def post(base: str) -> int:
        return post_to(base, body)

    port = closed_port()
    with harness.gunicorn(
        env=harness.production_env(database_url=dead), port=port, workers=1, logdir=tmp_path / "down"
    ) as base:
        assert post(base) == 503
    with harness.gunicorn(
        env=harness.production_env(database_url=live), port=port, workers=1, logdir=tmp_path / "up"
    ) as base:
        assert post(base) == 200
        assert post(base) == 200
    assert InboundMessage.objects.filter(wamid="wamid.DOWN2").count() == 1
    assert OutboundJob.objects.filter(inbound_message__wamid="wamid.DOWN2").count() == 1


def test_gunicorn_replaces_a_connection_postgresql_closed_between_two_posts(tmp_path):
    # The web process keeps its connection between requests (CONN_MAX_AGE). PostgreSQL closing it (a restart,
    # pg_terminate_backend) must not cost the next POST a 503: the health check sees it and reconnects.
    def body(wamid: str) -> bytes:
        return json.dumps(text_payload(wamid=wamid, timestamp=timezone.now() - timedelta(seconds=5))).encode()

    connection.ensure_connection()
    ours = connection.connection.info.backend_pid
    with harness.gunicorn(
        env=harness.production_env(database_url=live_url()), port=closed_port(), workers=1, logdir=tmp_path
    ) as base:
        assert post_to(base, body("wamid.KEPT1")) == 200
        with psycopg.connect(harness.with_db_name(live_url(), "postgres"), autocommit=True) as admin:
            others = "FROM pg_stat_activity WHERE datname = %s AND pid <> %s"
            params = [connection.settings_dict["NAME"], ours]
            assert (
                admin.execute(f"SELECT count(pg_terminate_backend(pid)) {others}", params).fetchone()[0] >= 1
            )
            deadline = time.monotonic() + 10
            while (
                admin.execute(f"SELECT count(*) {others}", params).fetchone()[0]
                and time.monotonic() < deadline
            ):
                time.sleep(0.05)
        assert post_to(base, body("wamid.KEPT2")) == 200
    assert InboundMessage.objects.filter(wamid__in=["wamid.KEPT1", "wamid.KEPT2"]).count() == 2
    assert OutboundJob.objects.filter(inbound_message__wamid="wamid.KEPT2").count() == 1
