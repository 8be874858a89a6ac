"""The admin index's charts: drawn from the database with data and without, in a fixed number of queries."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from outbound.chart_data import hour_start
from outbound.dashboard import admin_dashboard, reply_latency_buckets
from outbound.models import Contact, OutboundJob
from tests.factories import make_job, make_timed_job

pytestmark = pytest.mark.django_db
INDEX = reverse("admin:index")
S = OutboundJob.Status
CHART_IDS = [
    "replies-24h",
    "replies-14d",
    "latency-24h",
    "failures-code",
    "failures-phase",
    "handoffs-14d",
    "tokens-14d",
    "cost-14d",
]


def charts_in(page: str) -> list[str]:
    return re.findall(r'<figure class="chart-figure[^"]*" id="chart-([a-z0-9-]+)">', page)


def test_the_index_draws_every_chart_with_no_data(admin_client):
    page = admin_client.get(INDEX).content.decode()
    assert charts_in(page) == CHART_IDS
    assert page.count('role="img"') == len(CHART_IDS)
    assert "No reply was sent in the last 24 hours." in page
    assert "No failure in the last 14 days." in page
    assert 'id="cost-per-reply">Estimated cost per reply: <strong>—</strong>' in page


def seed(now):
    # Replies received 10 and 30 minutes ago (latency 3 s and 40 s), one sent yesterday, failures, a handoff.
    make_timed_job(
        received_at=now - timedelta(minutes=10),
        claimed_after=1,
        generated_after=2,
        sent_after=3,
        input_tokens=1000,
        output_tokens=100,
    )
    make_timed_job(
        received_at=now - timedelta(minutes=30),
        claimed_after=10,
        generated_after=30,
        sent_after=40,
        input_tokens=3000,
        output_tokens=300,
    )
    make_timed_job(received_at=now - timedelta(days=1), sent_after=5, generated_after=4, kind="HANDOFF")
    make_job(status=S.FAILED, failure_phase="send", failure_code=131026)
    make_job(status=S.FAILED, failure_phase="generate")
    Contact.objects.update(handoff_requested_at=now)


def test_the_index_draws_the_data(admin_client, settings):
    settings.OPENAI_PRICE_INPUT_PER_MTOK = Decimal("1")
    settings.OPENAI_PRICE_CACHED_INPUT_PER_MTOK = Decimal("0")
    settings.OPENAI_PRICE_OUTPUT_PER_MTOK = Decimal("10")
    seed(timezone.now())
    page = admin_client.get(INDEX).content.decode()
    assert charts_in(page) == CHART_IDS
    assert "3 sent and 2 failed in all" in page  # the 14-day chart's description
    assert "2 sent and 2 failed in all" in page  # the 24-hour chart's
    assert "131026: 1; no code: 1." in page
    assert "generate: 1; send: 1." in page
    assert "1 handoffs in 14 days; 1 conversations wait for a person now." in page
    # (1000 + 100 x 10 + 3000 + 300 x 10) per million over two model calls.
    assert "Estimated cost per reply: <strong>0.004000</strong>" in page


def test_latency_percentiles_per_hour_on_this_database():
    # At :45 past an hour, both replies (received 10 and 30 minutes before) were sent within that hour.
    now = hour_start(timezone.now()) - timedelta(minutes=15)
    seed(now)
    buckets = reply_latency_buckets(start=hour_start(now) - timedelta(hours=23), now=now)
    assert len(buckets) == 24
    assert [b.replies for b in buckets] == [0] * 23 + [2]
    last = buckets[-1]
    # percentile_cont on PostgreSQL, the same interpolation in Python on SQLite: 3 s and 40 s.
    assert last.p50 == pytest.approx(21.5)
    assert last.p95 == pytest.approx(3 + 0.95 * 37)
    assert last.waiting == pytest.approx(5.5)  # medians of (1, 10), (1, 20), (1, 10)
    assert last.generating == pytest.approx(10.5)
    assert last.sending == pytest.approx(5.5)


def test_the_index_query_count_does_not_grow_with_the_data(admin_client, django_assert_max_num_queries):
    admin_client.get(INDEX)  # session and permissions warmed
    with django_assert_max_num_queries(20) as empty:
        admin_client.get(INDEX)
    now = timezone.now()
    seed(now)
    for i in range(5):
        make_timed_job(
            received_at=now - timedelta(hours=i, minutes=5), claimed_after=1, generated_after=2, sent_after=3
        )
    with django_assert_max_num_queries(len(empty.captured_queries)):
        admin_client.get(INDEX)


def test_the_dashboard_itself_runs_seven_queries(django_assert_num_queries):
    seed(timezone.now())
    with django_assert_num_queries(7):
        admin_dashboard()


def test_staff_without_job_permission_see_no_charts(client, django_user_model):
    user = django_user_model.objects.create_user("viewer", password="pw-0123456789", is_staff=True)
    client.force_login(user)
    page = client.get(INDEX).content.decode()
    assert 'id="charts"' not in page
