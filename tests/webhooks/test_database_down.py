"""The webhook while PostgreSQL is unreachable: 503 so that Meta redelivers, nothing half-stored, and the
redelivery once it is back creates the job exactly once.

In process: the connection's settings are pointed at a closed port (a database that is down), then back.
Through gunicorn: the Procfile's web process started with a DATABASE_URL on a dead port.
"""

from __future__ import annotations

import contextlib
import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import timedelta

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


def test_gunicorn_with_the_database_down_answers_503_then_a_healthy_server_stores_the_redelivery(tmp_path):
    body = json.dumps(
        text_payload(wamid="wamid.DOWN2", timestamp=timezone.now() - timedelta(seconds=5))
    ).encode()
    db = connection.settings_dict
    live = f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    dead = f"postgres://{db['USER']}@127.0.0.1:{closed_port()}/{db['NAME']}"

    def post(base: str) -> int:
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
