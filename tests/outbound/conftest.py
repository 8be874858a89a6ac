"""Helpers for the outbound worker tests: inbound messages, Graph answers, runs."""

from __future__ import annotations

import io
import itertools
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from outbound.models import OutboundJob
from tests.conftest import GRAPH_MESSAGES_URL, text_payload

_wamids = itertools.count(1)


def is_postgres() -> bool:
    return connection.vendor == "postgresql"


def graph_ok(wamid: str = "wamid.OUT1", **extra: Any) -> dict[str, Any]:
    """Meta's success answer to a send (Cloud API send reference)."""
    return {
        "messaging_product": "whatsapp",
        "contacts": [{"input": "+16505551234", "wa_id": "16505551234"}],
        "messages": [{"id": wamid, **extra}],
    }


def graph_err(code: int, message: str = "error", *, details: str = "", fbtrace_id: str = "AbCdEf123") -> dict:
    """Meta's error body (Graph API error reference)."""
    return {
        "error": {
            "message": f"(#{code}) {message}",
            "type": "OAuthException",
            "code": code,
            "error_data": {"messaging_product": "whatsapp", "details": details or message},
            "fbtrace_id": fbtrace_id,
        }
    }


@pytest.fixture
def inbound(webhook):
    """Deliver one customer text through the real webhook view; returns its job."""

    def deliver(
        *,
        body: str = "Hello",
        at: datetime | None = None,
        minutes_ago: float = 1,
        wa_id: str = "16505551234",
        name: str = "Sheena",
        wamid: str | None = None,
    ) -> OutboundJob:
        wamid = wamid or f"wamid.IN{next(_wamids)}"
        when = at or timezone.now() - timedelta(minutes=minutes_ago)
        response = webhook(text_payload(wamid=wamid, wa_id=wa_id, body=body, timestamp=when, name=name))
        assert response.status_code == 200
        return OutboundJob.objects.get(inbound_message__wamid=wamid)

    return deliver


def run_jobs(*args: str, **options: Any) -> str:
    """One real `run_outbound_jobs` run; returns what it printed."""
    out = io.StringIO()
    options.setdefault("max_runtime", 30)
    # The run ends when nothing is due (a cron run would stay for its window, waiting for new messages).
    options.setdefault("until_idle", True)
    call_command("run_outbound_jobs", *args, stdout=out, stderr=io.StringIO(), **options)
    return out.getvalue()


def make_due(job: OutboundJob) -> None:
    """Let a retried job's backoff pass without waiting for it."""
    OutboundJob.objects.filter(pk=job.pk).update(next_attempt_at=timezone.now() - timedelta(seconds=1))


__all__ = ["GRAPH_MESSAGES_URL", "graph_err", "graph_ok", "is_postgres", "make_due", "run_jobs"]
