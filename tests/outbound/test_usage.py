"""Token usage and cost: read from OpenAI's `usage`, stored per job by the worker, priced by settings, shown."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal
from types import SimpleNamespace

import pytest
from django.urls import reverse
from django.utils import timezone

from outbound.checks import check_prices
from outbound.models import OutboundJob
from outbound.replies import OpenAIReplyGenerator, Turn
from outbound.usage import Prices, TokenUsage, token_cost
from tests.factories import make_job, make_timed_job
from tests.outbound.conftest import GRAPH_MESSAGES_URL, graph_err, graph_ok, make_due, run_jobs

PRICES = Prices(input=Decimal("0.40"), cached_input=Decimal("0.10"), output=Decimal("1.60"))


def test_usage_is_read_from_a_dict_or_the_sdk_object():
    raw = {"prompt_tokens": 1200, "completion_tokens": 80, "prompt_tokens_details": {"cached_tokens": 1024}}
    assert TokenUsage.from_openai(raw) == TokenUsage(1200, 80, 1024)
    sdk = SimpleNamespace(prompt_tokens=30, completion_tokens=7, prompt_tokens_details=None)
    assert TokenUsage.from_openai(sdk) == TokenUsage(30, 7, 0)


@pytest.mark.parametrize(
    "raw", [None, {}, {"prompt_tokens": "12", "completion_tokens": 3}, {"completion_tokens": 3}]
)
def test_missing_or_malformed_usage_is_none(raw):
    assert TokenUsage.from_openai(raw) is None


def test_cached_tokens_never_exceed_the_prompt():
    raw = {"prompt_tokens": 10, "completion_tokens": 1, "prompt_tokens_details": {"cached_tokens": 50}}
    assert TokenUsage.from_openai(raw) == TokenUsage(10, 1, 10)


def test_cost_bills_cached_input_at_the_cached_price():
    # 1,000,000 input of which 400,000 cached, 100,000 output:
    # 600,000 x 0.40 + 400,000 x 0.10 + 100,000 x 1.60, per million = 0.24 + 0.04 + 0.16.
    cost = token_cost(
        input_tokens=1_000_000, output_tokens=100_000, cached_input_tokens=400_000, prices=PRICES
    )
    assert cost == Decimal("0.44")
    assert token_cost(input_tokens=0, output_tokens=0, cached_input_tokens=0, prices=PRICES) == 0


def test_the_generator_returns_the_calls_usage(fake_openai):
    fake_openai.prompt_tokens, fake_openai.cached_tokens, fake_openai.completion_tokens = 900, 512, 33
    generator = OpenAIReplyGenerator.from_settings(
        api_key="sk-test", base_url=f"{fake_openai.url}/v1", model="gpt-test", timeout=2.0
    )
    reply = generator.generate(system_prompt="Be brief.", conversation=[Turn("user", "Hi")])
    assert reply.usage == TokenUsage(input_tokens=900, output_tokens=33, cached_input_tokens=512)


@pytest.mark.django_db
def test_the_worker_stores_tokens_and_the_timeline_and_the_job_page_shows_the_cost(
    inbound, graph, fake_openai, admin_client, settings
):
    settings.OPENAI_PRICE_INPUT_PER_MTOK = Decimal("2")
    settings.OPENAI_PRICE_CACHED_INPUT_PER_MTOK = Decimal("1")
    settings.OPENAI_PRICE_OUTPUT_PER_MTOK = Decimal("8")
    fake_openai.prompt_tokens, fake_openai.cached_tokens, fake_openai.completion_tokens = 1000, 200, 50
    job = inbound()
    graph.post(GRAPH_MESSAGES_URL, json=graph_ok())
    run_jobs()
    job.refresh_from_db()
    assert job.status == OutboundJob.Status.SENT
    assert (job.input_tokens, job.cached_input_tokens, job.output_tokens) == (1000, 200, 50)
    received = job.inbound_message.received_at
    assert received <= job.first_claimed_at <= job.generated_at <= job.sent_at
    # 800 x 2 + 200 x 1 + 50 x 8 = 2200 per million.
    assert job.estimated_cost() == Decimal("0.0022")
    page = admin_client.get(reverse("admin:outbound_outboundjob_change", args=[job.pk])).content.decode()
    assert "1,000 input, 200 of them cached; 50 output" in page
    assert "0.002200 at the configured prices" in page


@pytest.mark.django_db
@pytest.mark.parametrize("unusable", ["refusal", "length"])
def test_an_unusable_answer_still_counts_its_tokens_on_every_attempt(
    inbound, graph, fake_openai, settings, unusable
):
    # A refusal or a cut-off answer is paid for (a cut-off one is the longest): each attempt adds its tokens,
    # the retries and the handoff after the last one alike.
    settings.OUTBOUND_MAX_ATTEMPTS = 2
    settings.OUTBOUND_RETRY_BASE_SECONDS = 0
    settings.OUTBOUND_HANDOFF_MESSAGE = ""  # the handoff ends the job without a send
    fake_openai.prompt_tokens, fake_openai.cached_tokens, fake_openai.completion_tokens = 700, 0, 4000
    if unusable == "refusal":
        fake_openai.refusal = "I can't help with that."
    else:
        fake_openai.finish_reason = "length"
    job = inbound()
    run_jobs()
    job.refresh_from_db()
    assert (job.status, job.input_tokens, job.output_tokens) == (OutboundJob.Status.PENDING, 700, 4000)
    make_due(job)
    run_jobs()
    job.refresh_from_db()
    assert job.status == OutboundJob.Status.HANDED_OFF
    assert len(fake_openai.requests) == 2
    assert (job.input_tokens, job.output_tokens) == (1400, 8000)


@pytest.mark.django_db
def test_a_permanent_send_failure_records_its_phase_and_metas_code(inbound, graph, fake_openai):
    job = inbound()
    graph.post(GRAPH_MESSAGES_URL, json=graph_err(131026, "Message undeliverable"), status=400)
    run_jobs()
    job.refresh_from_db()
    assert (job.status, job.failure_phase, job.failure_code) == (OutboundJob.Status.FAILED, "send", 131026)
    # The failed attempt's tokens were paid for and stay counted.
    assert job.input_tokens == fake_openai.prompt_tokens


@pytest.mark.django_db
def test_a_job_without_usage_says_so(admin_client):
    job = make_job()
    page = admin_client.get(reverse("admin:outbound_outboundjob_change", args=[job.pk])).content.decode()
    assert "None recorded" in page


@pytest.mark.django_db
def test_the_job_page_draws_its_timeline(admin_client):
    now = timezone.now()
    job = make_timed_job(
        received_at=now - timedelta(minutes=5), claimed_after=0.4, generated_after=2.5, sent_after=3
    )
    OutboundJob.objects.filter(pk=job.pk).update(
        delivery_status=OutboundJob.Delivery.READ, delivery_updated_at=now - timedelta(minutes=1)
    )
    page = admin_client.get(reverse("admin:outbound_outboundjob_change", args=[job.pk])).content.decode()
    [svg] = re.findall(r'<svg class="chart chart-timeline".*?</svg>', page, re.S)
    assert f'<title id="job-{job.pk}-timeline-title">Timeline of job {job.pk}</title>' in svg
    for step in ("received", "claimed", "generated", "sent", "delivered", "read"):
        assert f">{step}</text>" in svg
    assert "+400 ms" in svg  # received → claimed
    assert "+2.1 s" in svg  # claimed → generated
    assert "+4 min" in svg  # sent → read (delivered has no time of its own once read)
    assert svg.count('class="step-done"') == 6


@pytest.mark.django_db
def test_a_pending_jobs_timeline_shows_the_steps_to_come(admin_client):
    job = make_job()
    page = admin_client.get(reverse("admin:outbound_outboundjob_change", args=[job.pk])).content.decode()
    assert page.count('class="step-open"') == 5


@pytest.mark.parametrize("value", ["abc", "-1", "NaN", ""])
def test_a_price_that_is_not_one_is_a_check_error_naming_it(settings, value):
    settings.OPENAI_PRICE_OUTPUT_PER_MTOK = value
    [error] = check_prices()
    assert error.id == "outbound.E010"
    assert "OPENAI_PRICE_OUTPUT_PER_MTOK" in error.msg


def test_good_prices_pass_the_check(settings):
    settings.OPENAI_PRICE_INPUT_PER_MTOK = " 2.5 "
    assert check_prices() == []
    assert Prices.from_settings().input == Decimal("2.5")
