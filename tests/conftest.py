"""Shared fixtures: signed webhook POSTs, payload builders, the fake OpenAI server, `responses` for Graph."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import responses
from django.conf import settings
from django.test import Client
from django.urls import reverse

from bench.fakes import FakeOpenAI, FaultPlan
from webhooks.envelopes import messages_webhook, text_message_webhook
from webhooks.signatures import sign

DATA = Path(__file__).parent / "data"


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    """`@pytest.mark.postgres` (the one PostgreSQL-only marker): real row locks, concurrent connections or
    processes sharing the test database. Skipped on SQLite."""
    if settings.DATABASES["default"]["ENGINE"] in ("django.db.backends.postgresql", "outbound.postgresql"):
        return
    skip = pytest.mark.skip(reason="needs PostgreSQL: set DATABASE_URL=postgres://...")
    for item in items:
        if "postgres" in item.keywords:
            item.add_marker(skip)


# The business number of tests/settings.py and of every payload in tests/data: the one the webhook serves.
SERVED_PHONE_NUMBER_IDS = ("106540352242922",)
GRAPH_MESSAGES_URL = "https://graph.test/v25.0/106540352242922/messages"


def load(name: str) -> dict[str, Any]:
    return json.loads((DATA / name).read_text())


def text_payload(
    *,
    wamid: str,
    wa_id: str = "16505551234",
    body: str = "Hello",
    timestamp: int | datetime,
    name: str = "Sheena",
) -> dict[str, Any]:
    """A real-shaped single text message webhook (Meta's example, Cloud API webhooks)."""
    ts = int(timestamp.timestamp()) if isinstance(timestamp, datetime) else timestamp
    return text_message_webhook(wa_id=wa_id, name=name, text=body, wamid=wamid, timestamp=ts)


def status_payload(
    *,
    wamid: str,
    status: str,
    timestamp: int,
    callback_data: str | None = None,
    error_code: int | None = None,
) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": wamid,
        "status": status,
        "timestamp": str(timestamp),
        "recipient_id": "16505551234",
    }
    if callback_data is not None:
        item["biz_opaque_callback_data"] = callback_data
    if error_code is not None:
        item["errors"] = [
            {
                "code": error_code,
                "title": "error title",
                "message": "error title",
                "error_data": {"details": "error details"},
            }
        ]
    return messages_webhook(statuses=[item])


def post_signed(client: Client, payload: Any, *, secret: str | None = None, header: str | None = None) -> Any:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    signature = (
        header if header is not None else sign(body=body, app_secret=secret or settings.WHATSAPP_APP_SECRET)
    )
    return client.post(
        reverse("whatsapp-webhook"),
        data=body,
        content_type="application/json",
        HTTP_X_HUB_SIGNATURE_256=signature,
    )


@pytest.fixture
def webhook(client: Client):
    """POST a payload signed with the test app secret; returns the response."""
    return lambda payload, **kwargs: post_signed(client, payload, **kwargs)


@pytest.fixture
def graph() -> Iterator[responses.RequestsMock]:
    """`responses` for the Graph API: nothing leaves the process; unmatched requests, and registered ones that
    were never called, fail the test."""
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        yield mock


@pytest.fixture
def fake_openai(settings) -> Iterator[FakeOpenAI]:
    """A real OpenAI-compatible HTTP server on loopback, wired into settings."""
    server = FakeOpenAI(plan=FaultPlan())
    server.start()
    settings.OPENAI_BASE_URL = f"{server.url}/v1"
    settings.OPENAI_TIMEOUT = 2.0
    try:
        yield server
    finally:
        server.stop()


T0 = 1_750_000_000  # a fixed Meta timestamp (Unix seconds)


def at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def counts() -> tuple[int, int, int]:
    """How many contacts, inbound messages and jobs are stored."""
    from outbound.models import Contact, InboundMessage, OutboundJob

    return Contact.objects.count(), InboundMessage.objects.count(), OutboundJob.objects.count()


@pytest.fixture
def no_network(graph, fake_openai):
    """Fail the test if the request reaches the Graph API or OpenAI."""
    yield
    assert list(graph.calls) == []
    assert fake_openai.requests == []


@pytest.fixture
def webhook_log(caplog):
    caplog.set_level(logging.INFO, logger="webhooks")
    caplog.set_level(logging.INFO, logger="outbound")
    return caplog


def batch_payload(
    messages: list[dict[str, Any]], *, contacts: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """One change carrying `messages`; `contacts` defaults to one profile per distinct sender."""
    payload = text_payload(wamid="wamid.unused", timestamp=1)
    value = payload["entry"][0]["changes"][0]["value"]
    senders = dict.fromkeys(m.get("from") for m in messages if isinstance(m, dict) and m.get("from"))
    value["contacts"] = (
        contacts
        if contacts is not None
        else [{"profile": {"name": f"Name {s}"}, "wa_id": s} for s in senders]
    )
    value["messages"] = messages
    return payload


def text_message(
    *, wamid: str, wa_id: str = "16505551234", body: str = "Hello", timestamp: int | datetime
) -> dict[str, Any]:
    """One inbound text message object (as in Meta's webhook examples)."""
    ts = int(timestamp.timestamp()) if isinstance(timestamp, datetime) else timestamp
    return {"from": wa_id, "id": wamid, "timestamp": str(ts), "type": "text", "text": {"body": body}}


@pytest.fixture
def no_batch_fallback(caplog):
    """Fail the test if a POST was stored through the one-at-a-time fallback (a bug the view's 200 hides)."""
    caplog.set_level(logging.INFO, logger="webhooks")
    yield
    # At teardown `caplog.text` holds the teardown's records only: the test's own are the "call" phase's.
    assert not [r for r in caplog.get_records("call") if "webhook_batch_failed" in r.getMessage()]
