"""Marketing preferences (§12.4): the `user_preferences` webhook, and error 131050 on a send, synchronous or
reported later by a status webhook."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.urls import reverse

from outbound.models import Contact, OutboundJob
from tests.conftest import load, status_payload
from tests.outbound.conftest import GRAPH_MESSAGES_URL, graph_err, graph_ok, run_jobs

pytestmark = pytest.mark.django_db
S = OutboundJob.Status
STOPPED_AT = datetime.fromtimestamp(1731705721, tz=UTC)


def preference(value: str, timestamp: int) -> dict:
    payload = load("user_preferences.json")
    item = payload["entry"][0]["changes"][0]["value"]["user_preferences"][0]
    item.update(value=value, timestamp=timestamp)
    return payload


def test_user_preferences_webhook_is_recorded_on_a_new_contact(webhook):
    assert webhook(load("user_preferences.json")).status_code == 200
    contact = Contact.objects.get(wa_id="16505551234")
    assert (contact.marketing_preference, contact.marketing_preference_at) == ("stop", STOPPED_AT)
    assert OutboundJob.objects.count() == 0


def test_newer_preference_wins_and_an_older_one_redelivered_does_not(webhook, inbound):
    contact = inbound().contact
    assert webhook(preference("stop", 1731705721)).status_code == 200
    assert webhook(preference("resume", 1731705800)).status_code == 200
    contact.refresh_from_db()
    assert contact.marketing_preference == Contact.Marketing.RESUME
    assert webhook(preference("stop", 1731705721)).status_code == 200
    contact.refresh_from_db()
    assert contact.marketing_preference == Contact.Marketing.RESUME
    assert Contact.objects.count() == 1


def test_131050_fails_the_job_without_retry_and_records_the_preference(inbound, graph, fake_openai):
    job = inbound()
    graph.post(
        GRAPH_MESSAGES_URL, status=400, json=graph_err(131050, "Unable to deliver message", details="stopped")
    )
    out = run_jobs()
    row = OutboundJob.objects.get(pk=job.pk)
    assert (row.status, row.attempts) == (S.FAILED, 1)
    assert "code=131050" in row.error_log
    assert "failed=1" in out
    assert "retried=0" in out
    contact = Contact.objects.get(pk=job.contact_id)
    assert contact.marketing_preference == Contact.Marketing.STOP
    assert contact.marketing_preference_at is not None
    # Nothing is due: a second run sends nothing.
    run_jobs()
    assert len(graph.calls) == 1


def test_131050_reported_by_a_status_webhook_records_the_preference(inbound, graph, fake_openai, webhook):
    job = inbound()
    graph.post(GRAPH_MESSAGES_URL, json=graph_ok("wamid.SENT1"))
    run_jobs()
    ts = int(datetime.now(tz=UTC).timestamp())
    assert (
        webhook(
            status_payload(wamid="wamid.SENT1", status="failed", timestamp=ts, error_code=131050)
        ).status_code
        == 200
    )
    row = OutboundJob.objects.get(pk=job.pk)
    assert (row.delivery_status, row.delivery_error_code) == ("failed", 131050)
    assert Contact.objects.get(pk=job.contact_id).marketing_preference == Contact.Marketing.STOP


def test_admin_shows_and_filters_the_marketing_preference(admin_client, webhook):
    webhook(load("user_preferences.json"))
    contact = Contact.objects.get()
    page = admin_client.get(reverse("admin:outbound_contact_change", args=[contact.pk])).content.decode()
    assert "The customer stopped marketing messages" in page
    changelist = reverse("admin:outbound_contact_changelist")
    assert contact.wa_id in admin_client.get(f"{changelist}?marketing=stop").content.decode()
    assert contact.wa_id not in admin_client.get(f"{changelist}?marketing=resume").content.decode()
