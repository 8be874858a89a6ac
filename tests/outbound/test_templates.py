"""Template health (§12.5): template webhooks recorded, the admin index flag, jobs that need a template Meta
stopped fail with that reason before any Graph call, and `check_whatsapp_template` against a fake Graph."""

from __future__ import annotations

import io
import json
import re
from datetime import UTC, datetime

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from bench.fakes import FakeGraph, FaultPlan, graph_error
from outbound.models import OutboundJob, WhatsAppTemplate
from outbound.services.templates import template_refusal
from tests.conftest import load, status_payload
from tests.outbound.conftest import GRAPH_MESSAGES_URL, graph_err, graph_ok, make_due, run_jobs

pytestmark = pytest.mark.django_db
S = OutboundJob.Status
T = WhatsAppTemplate
LATE = 25 * 60  # minutes: the customer's window has closed, so the template is needed


def status_event(event: str, *, reason: str | None = None, name: str = "reply_follow_up") -> dict:
    payload = load("template_status_update.json")
    value = payload["entry"][0]["changes"][0]["value"]
    value.update(event=event, reason=reason, message_template_name=name)
    return payload


# ------------------------------------------------------------------------------------------------ webhooks
def test_status_and_category_webhooks_are_upserted(webhook):
    assert webhook(status_event("PAUSED", reason="LOW_QUALITY")).status_code == 200
    row = T.objects.get()
    assert (row.name, row.language, row.status, row.reason, row.template_id, row.source) == (
        "reply_follow_up",
        "en_US",
        "PAUSED",
        "LOW_QUALITY",
        "1234567",
        T.Source.WEBHOOK,
    )
    assert webhook(status_event("APPROVED")).status_code == 200
    assert webhook(load("template_category_update.json")).status_code == 200
    row = T.objects.get()
    assert (row.status, row.reason, row.category) == ("APPROVED", "", "MARKETING")
    assert row.approved


def test_template_webhooks_of_another_business_account_are_ignored(webhook, settings):
    settings.WHATSAPP_BUSINESS_ACCOUNT_ID = "999"
    assert webhook(status_event("DISABLED")).status_code == 200
    assert T.objects.count() == 0
    settings.WHATSAPP_BUSINESS_ACCOUNT_ID = "102290129340398"
    assert webhook(status_event("DISABLED")).status_code == 200
    assert T.objects.get().status == "DISABLED"


@pytest.mark.parametrize(
    ("before", "event", "after"),
    [
        ("APPROVED", "FLAGGED", "APPROVED"),  # low quality, still sent
        ("APPROVED", "LOCKED", "APPROVED"),
        ("APPROVED", "UNLOCKED", "APPROVED"),
        ("PAUSED", "REINSTATED", "APPROVED"),
        ("REJECTED", "IN_APPEAL", "REJECTED"),
        ("ARCHIVED", "UNARCHIVED", ""),  # unknown until checked: never blocking
        ("APPROVED", "PENDING_DELETION", "PENDING_DELETION"),
    ],
)
def test_template_events_that_are_not_statuses_do_not_block_the_template(webhook, before, event, after):
    assert webhook(status_event(before)).status_code == 200
    assert webhook(status_event(event)).status_code == 200
    assert T.objects.get().status == after
    refused = template_refusal(name="reply_follow_up", language="en_US")
    assert (refused is None) == (after in ("APPROVED", ""))


# ------------------------------------------------------------------------------------------------ admin index
def test_admin_index_says_prominently_when_the_fallback_template_is_paused(admin_client, webhook):
    index = reverse("admin:index")
    html = admin_client.get(index).content.decode()
    assert 'id="template-health-unknown"' in html
    assert 'id="template-health"' not in html
    webhook(status_event("PAUSED", reason="LOW_QUALITY"))
    html = admin_client.get(index).content.decode()
    assert 'class="module template-unhealthy" id="template-health"' in html
    assert "The fallback template is not approved" in html
    assert "reply_follow_up" in html
    assert "PAUSED" in html
    assert "LOW_QUALITY" in html
    # The flag comes before the other modules of the page.
    assert html.index('id="template-health"') < html.index('id="waiting-for-person"')
    webhook(status_event("APPROVED"))
    html = admin_client.get(index).content.decode()
    assert 'id="template-health"' not in html
    assert 'id="template-health-unknown"' not in html


def test_another_templates_status_raises_no_flag(admin_client, webhook):
    webhook(status_event("REJECTED", name="some_marketing_template"))
    assert 'id="template-health"' not in admin_client.get(reverse("admin:index")).content.decode()


# ------------------------------------------------------------------------------------------------ the worker
def test_a_job_needing_a_paused_template_fails_with_the_reason_and_no_graph_call(
    inbound, webhook, graph, fake_openai
):
    webhook(status_event("PAUSED", reason="LOW_QUALITY"))
    job = inbound(minutes_ago=LATE)
    out = run_jobs()
    row = OutboundJob.objects.get(pk=job.pk)
    assert (row.status, row.attempts, row.send_as) == (S.FAILED, 1, OutboundJob.SendAs.TEMPLATE)
    assert "the template “reply_follow_up” (en_US) is PAUSED (LOW_QUALITY)" in row.error_log
    assert "check_whatsapp_template" in row.error_log
    assert "failed=1" in out
    assert list(graph.calls) == []
    assert fake_openai.requests == []


def test_132015_from_meta_records_the_pause_and_spares_the_next_jobs_a_graph_call(
    inbound, graph, fake_openai
):
    first = inbound(minutes_ago=LATE)
    graph.post(GRAPH_MESSAGES_URL, status=400, json=graph_err(132015, "Template is paused"))
    run_jobs()
    assert OutboundJob.objects.get(pk=first.pk).status == S.FAILED
    row = T.objects.get(name="reply_follow_up", language="en_US")
    assert (row.status, row.source) == ("PAUSED", T.Source.SEND_ERROR)
    second = inbound(minutes_ago=LATE, wa_id="15550009999")
    run_jobs()
    assert "is PAUSED" in OutboundJob.objects.get(pk=second.pk).error_log
    assert len(graph.calls) == 1


def test_132016_records_the_template_disabled(inbound, graph, fake_openai):
    inbound(minutes_ago=LATE)
    graph.post(GRAPH_MESSAGES_URL, status=400, json=graph_err(132016, "Template is disabled"))
    run_jobs()
    assert T.objects.get().status == "DISABLED"


def test_an_approved_template_is_sent_and_a_staff_retry_after_approval_goes(
    inbound, webhook, graph, fake_openai
):
    webhook(status_event("DISABLED"))
    job = inbound(minutes_ago=LATE)
    run_jobs()
    assert OutboundJob.objects.get(pk=job.pk).status == S.FAILED
    webhook(status_event("APPROVED"))
    row = OutboundJob.objects.get(pk=job.pk)
    row.mark_retried_by_staff()
    make_due(row)
    graph.post(GRAPH_MESSAGES_URL, json=graph_ok("wamid.T1"))
    run_jobs()
    assert OutboundJob.objects.get(pk=job.pk).status == S.SENT
    assert json.loads(graph.calls[0].request.body)["type"] == "template"


# ------------------------------------------------------------------------------------------------ the command
@pytest.fixture
def fake_graph(settings):
    with FakeGraph(plan=FaultPlan()) as graph:
        settings.WHATSAPP_GRAPH_URL = graph.url
        settings.WHATSAPP_BUSINESS_ACCOUNT_ID = "102290129340398"
        yield graph


def check(**options) -> str:
    out = io.StringIO()
    call_command("check_whatsapp_template", stdout=out, stderr=io.StringIO(), **options)
    return out.getvalue()


def test_command_records_an_approved_template(fake_graph, settings):
    assert "“reply_follow_up” (en_US): APPROVED, category UTILITY. OK." in check()
    row = T.objects.get()
    assert (row.status, row.category, row.source, row.template_id) == (
        "APPROVED",
        "UTILITY",
        T.Source.CHECK,
        "1",
    )
    [request] = fake_graph.requests
    assert request["path"].startswith("/v25.0/102290129340398/message_templates?")
    assert "name=reply_follow_up" in request["path"]
    assert request["headers"]["Authorization"] == f"Bearer {settings.WHATSAPP_ACCESS_TOKEN}"


def test_command_exits_non_zero_for_a_paused_template_and_records_it(fake_graph):
    fake_graph.templates = [
        {
            "name": "reply_follow_up",
            "language": "en_US",
            "status": "PAUSED",
            "category": "UTILITY",
            "id": "1",
        },
        {
            "name": "reply_follow_up_v2",
            "language": "en_US",
            "status": "APPROVED",
            "category": "UTILITY",
            "id": "2",
        },
    ]
    with pytest.raises(CommandError, match=r"PAUSED.*not approved"):
        check()
    assert T.objects.get().status == "PAUSED"


def test_command_names_the_missing_language(fake_graph):
    with pytest.raises(
        CommandError, match=r"no template “reply_follow_up” in pt_BR \(languages found: en_US\)"
    ):
        check(language="pt_BR")
    assert T.objects.count() == 0


def test_command_reports_a_graph_error_without_the_token(fake_graph, settings):
    fake_graph.reset(
        FaultPlan(scripted=[graph_error(190, f"Invalid token {settings.WHATSAPP_ACCESS_TOKEN}")])
    )
    with pytest.raises(CommandError, match="code=190") as info:
        check()
    assert settings.WHATSAPP_ACCESS_TOKEN not in str(info.value)
    assert "WHATSAPP_BUSINESS_ACCOUNT_ID" in str(info.value)


def test_command_reports_an_unreachable_graph(settings):
    settings.WHATSAPP_GRAPH_URL = "http://127.0.0.1:9"
    settings.WHATSAPP_BUSINESS_ACCOUNT_ID = "1"
    with pytest.raises(CommandError, match="could not reach the Graph API"):
        check()


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ("WHATSAPP_BUSINESS_ACCOUNT_ID", "WHATSAPP_BUSINESS_ACCOUNT_ID"),
        ("WHATSAPP_ACCESS_TOKEN", "WHATSAPP_ACCESS_TOKEN"),
        ("WHATSAPP_TEMPLATE_NAME", "WHATSAPP_TEMPLATE_NAME (or --name)"),
    ],
)
def test_command_names_the_missing_setting(settings, setting, named):
    settings.WHATSAPP_BUSINESS_ACCOUNT_ID = "102290129340398"
    setattr(settings, setting, "")
    with pytest.raises(CommandError, match="set " + re.escape(named)):
        check()


def test_132015_in_a_failed_status_webhook_records_the_pause(inbound, graph, fake_openai, webhook):
    job = inbound(minutes_ago=LATE)
    graph.post(GRAPH_MESSAGES_URL, json=graph_ok("wamid.TPL1", message_status="accepted"))
    run_jobs()
    assert OutboundJob.objects.get(pk=job.pk).status == S.SENT
    ts = int(datetime.now(tz=UTC).timestamp())
    assert (
        webhook(
            status_payload(wamid="wamid.TPL1", status="failed", timestamp=ts, error_code=132015)
        ).status_code
        == 200
    )
    row = T.objects.get(name="reply_follow_up", language="en_US")
    assert (row.status, row.source) == ("PAUSED", T.Source.SEND_ERROR)
    assert "132015" in row.reason
