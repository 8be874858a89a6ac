"""/metrics: Prometheus' text format read from the database, behind a bearer token, off without one."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.checks import Warning
from django.urls import reverse
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from outbound.checks import check_metrics_token
from outbound.models import Contact, OutboundJob, WorkerHeartbeat
from tests.factories import make_job, make_timed_job

pytestmark = pytest.mark.django_db
URL = reverse("metrics")
TOKEN = "metrics-token-0123456789abcdef"
S = OutboundJob.Status


@pytest.fixture
def token(settings):
    settings.METRICS_TOKEN = TOKEN
    return TOKEN


def scrape(client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get(URL, headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_off_without_a_token(client, settings):
    settings.METRICS_TOKEN = ""
    assert client.get(URL, headers={"Authorization": "Bearer anything"}).status_code == 404


@pytest.mark.parametrize(
    "header", [None, "", "Bearer", "Basic dXNlcjpwYXNz", f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}"]
)
def test_a_missing_or_wrong_token_is_refused_with_a_reason(client, token, header):
    headers = {"Authorization": header} if header is not None else {}
    response = client.get(URL, headers=headers)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert b"bearer" in response.content.lower()
    assert TOKEN.encode() not in response.content


def test_empty_database_parses(client, token):
    samples = scrape(client)
    assert samples[("whatsapp_jobs", (("status", "FAILED"),))] == 0
    assert samples[("whatsapp_oldest_due_job_age_seconds", ())] == 0
    assert samples[("whatsapp_worker_last_run_timestamp_seconds", ())] == 0
    assert samples[("whatsapp_reply_latency_seconds_count", ())] == 0
    assert samples[("whatsapp_reply_latency_seconds_bucket", (("le", "+Inf"),))] == 0


def test_figures_come_from_the_database(client, token, settings):
    settings.OPENAI_PRICE_INPUT_PER_MTOK = Decimal("1")
    settings.OPENAI_PRICE_CACHED_INPUT_PER_MTOK = Decimal("0")
    settings.OPENAI_PRICE_OUTPUT_PER_MTOK = Decimal("10")
    now = timezone.now()
    # Two replies sent in the last hour: 3 s and 40 s after their message arrived.
    make_timed_job(
        received_at=now - timedelta(minutes=10),
        claimed_after=1,
        generated_after=2,
        sent_after=3,
        input_tokens=1000,
        output_tokens=100,
    )
    make_timed_job(
        received_at=now - timedelta(minutes=30), claimed_after=10, generated_after=30, sent_after=40
    )
    # One sent two days ago: outside every window.
    make_timed_job(received_at=now - timedelta(days=2), sent_after=5)
    make_job(status=S.FAILED, failure_phase="send", failure_code=131026)
    make_job(status=S.FAILED, failure_phase="generate")
    make_job(status=S.PENDING, next_attempt_at=now - timedelta(seconds=90))
    beat = WorkerHeartbeat.objects.create(worker_id="w", last_finished_at=now - timedelta(seconds=20))
    Contact.objects.update(handoff_requested_at=now)

    samples = scrape(client)
    assert samples[("whatsapp_jobs", (("status", "SENT"),))] == 3
    assert samples[("whatsapp_jobs", (("status", "FAILED"),))] == 2
    assert 89 <= samples[("whatsapp_oldest_due_job_age_seconds", ())] < 120
    assert samples[("whatsapp_replies_sent", (("window", "1h"),))] == 2
    assert samples[("whatsapp_replies_sent", (("window", "5m"),))] == 0
    assert samples[("whatsapp_replies_sent", (("window", "24h"),))] == 2
    assert (
        samples[("whatsapp_reply_failures", (("code", "131026"), ("phase", "send"), ("window", "1h")))] == 1
    )
    assert samples[("whatsapp_reply_failures", (("code", ""), ("phase", "generate"), ("window", "24h")))] == 1
    assert samples[("whatsapp_worker_last_run_timestamp_seconds", ())] == pytest.approx(
        beat.last_finished_at.timestamp()
    )
    assert samples[("whatsapp_conversations_waiting_for_person", ())] == 1
    # Latency histogram: cumulative buckets, count and sum.
    assert samples[("whatsapp_reply_latency_seconds_count", ())] == 2
    assert samples[("whatsapp_reply_latency_seconds_sum", ())] == pytest.approx(43)
    assert samples[("whatsapp_reply_latency_seconds_bucket", (("le", "2.0"),))] == 0
    assert samples[("whatsapp_reply_latency_seconds_bucket", (("le", "5.0"),))] == 1
    assert samples[("whatsapp_reply_latency_seconds_bucket", (("le", "60.0"),))] == 2
    assert samples[("whatsapp_model_tokens", (("kind", "input"),))] == 1000
    assert samples[("whatsapp_model_tokens", (("kind", "output"),))] == 100
    # 1000 x 1 + 100 x 10 per million.
    assert samples[("whatsapp_model_estimated_cost", ())] == pytest.approx(0.002)


def test_every_process_answers_the_same(client, token):
    # No process-local state: two scrapes with a change in between see the database, not a counter.
    first = scrape(client)[("whatsapp_jobs", (("status", "PENDING"),))]
    make_job(status=S.PENDING)
    assert scrape(client)[("whatsapp_jobs", (("status", "PENDING"),))] == first + 1


@pytest.mark.parametrize("value", ["tiny-tok3n", "dev-verify-token"])
def test_a_weak_token_is_a_warning_with_debug_off(settings, value):
    settings.DEBUG = False
    settings.METRICS_TOKEN = value
    [warning] = check_metrics_token()
    assert isinstance(warning, Warning)
    assert warning.id == "outbound.W010"
    assert value not in warning.msg


def test_a_strong_token_or_none_passes(settings):
    settings.DEBUG = False
    settings.METRICS_TOKEN = TOKEN
    assert check_metrics_token() == []
    settings.METRICS_TOKEN = ""
    assert check_metrics_token() == []
