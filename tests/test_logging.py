"""What an operator's log holds for a whole flow: one line per transition, and never a token or message text."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from django.conf import settings
from django.core.management import call_command
from django.utils import timezone

from outbound.models import OutboundJob
from tests.conftest import GRAPH_MESSAGES_URL, status_payload, text_payload

CUSTOMER_TEXT = "My order SECRET-ORDER-7731 has not arrived, please call me"


@pytest.mark.django_db
def test_a_full_flow_logs_no_tokens_and_no_message_text_at_info(
    webhook, graph, fake_openai, caplog, settings
):
    settings.OUTBOUND_RETRY_BASE_SECONDS = 0  # the retry below is due at once
    caplog.set_level(logging.INFO)
    now = timezone.now()

    assert (
        webhook(
            text_payload(wamid="wamid.IN1", body=CUSTOMER_TEXT, timestamp=now - timedelta(minutes=1))
        ).status_code
        == 200
    )
    # The first send meets a Meta outage, the retry goes through.
    graph.post(
        GRAPH_MESSAGES_URL,
        status=503,
        json={"error": {"message": "Service unavailable", "code": 2, "fbtrace_id": "AbC"}},
    )
    graph.post(GRAPH_MESSAGES_URL, json={"messaging_product": "whatsapp", "messages": [{"id": "wamid.OUT1"}]})
    call_command("run_outbound_jobs", max_runtime=10, until_idle=True)
    call_command("run_outbound_jobs", max_runtime=10, until_idle=True)
    assert (
        webhook(
            status_payload(wamid="wamid.OUT1", status="delivered", timestamp=int(now.timestamp()))
        ).status_code
        == 200
    )

    job = OutboundJob.objects.get()
    assert (job.status, job.delivery_status, job.attempts) == (OutboundJob.Status.SENT, "delivered", 2)
    lines = [r.getMessage() for r in caplog.records if r.levelno <= logging.INFO]
    # The log is useful: every transition has its line with the ids.
    transitions = [line for line in lines if line.startswith("job_transition")]
    assert [line.split()[1] for line in transitions] == [
        "event=claim",
        "event=generated",
        "event=send_started",
        "event=retry",
        "event=claim",
        "event=send_started",
        "event=sent",
    ]
    assert all(f"job_id={job.pk} contact_id={job.contact_id}" in line for line in transitions)
    # ...and holds nothing private.
    forbidden = {
        "customer text": "SECRET-ORDER-7731",
        "reply text": fake_openai.reply,
        "reply start": fake_openai.reply[:20],
        "access token": settings.WHATSAPP_ACCESS_TOKEN,
        "app secret": settings.WHATSAPP_APP_SECRET,
        "OpenAI key": settings.OPENAI_API_KEY,
        "verify token": settings.WHATSAPP_VERIFY_TOKEN,
    }
    for what, value in forbidden.items():
        leaking = [line for line in lines if value in line]
        assert not leaking, f"{what} logged at INFO: {leaking}"


def test_the_loggers_are_configured_for_stdout_at_log_level():
    # Production reads the same LOGGING: our apps at LOG_LEVEL (INFO by default), everything else WARNING.
    assert settings.LOGGING["loggers"]["outbound"]["level"] == settings.LOG_LEVEL
    assert settings.LOGGING["loggers"]["webhooks"]["level"] == settings.LOG_LEVEL
    assert settings.LOGGING["root"] == {"handlers": ["stdout"], "level": "WARNING"}
