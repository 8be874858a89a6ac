"""Marketing preferences (§12.4): the `user_preferences` webhook, and error 131050 on a send, synchronous or
reported later by a status webhook."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from outbound.models import Contact, OutboundJob
from tests.conftest import load, status_payload
from tests.outbound.conftest import GRAPH_MESSAGES_URL, graph_err, graph_ok, run_jobs
from webhooks.envelopes import text_message_webhook

pytestmark = pytest.mark.django_db
S = OutboundJob.Status
STOPPED_AT = datetime.fromtimestamp(1731705721, tz=UTC)

FIRST = "106540352242922"  # the number of tests/settings.py and of tests/data/user_preferences.json
SECOND = "111222333444555"
OTHER = "999888777666555"  # a number of the same app that this service does not serve
CUSTOMER = "16505551234"
BSUID = "US.13491208655302741918"


def preference(
    value: str,
    timestamp: int,
    *,
    number: str = FIRST,
    wa_id: str | None = CUSTOMER,
    user_id: str | None = None,
) -> dict:
    """Meta's `user_preferences` webhook for one customer of business number `number`."""
    payload = load("user_preferences.json")
    change = payload["entry"][0]["changes"][0]["value"]
    change["metadata"]["phone_number_id"] = number
    item = change["user_preferences"][0]
    item.update(value=value, timestamp=timestamp)
    item.pop("wa_id")
    item.update({k: v for k, v in {"wa_id": wa_id, "user_id": user_id}.items() if v})
    return payload


def write(webhook, *, to: str, wamid: str, minutes_ago: float) -> Contact:
    """The customer writes to business number `to`, through the signed webhook POST."""
    when = int((timezone.now() - timedelta(minutes=minutes_ago)).timestamp())
    payload = text_message_webhook(
        wa_id=CUSTOMER, name="Sheena", text="Hello", wamid=wamid, timestamp=when, phone_number_id=to
    )
    assert webhook(payload).status_code == 200
    return Contact.objects.get(phone_number_id=to, wa_id=CUSTOMER)


@pytest.fixture
def two_numbers(settings):
    settings.WHATSAPP_PHONE_NUMBER_ID = f"{FIRST}, {SECOND}"


def test_user_preferences_webhook_is_recorded_on_a_new_contact(webhook):
    assert webhook(load("user_preferences.json")).status_code == 200
    contact = Contact.objects.get(wa_id="16505551234")
    assert contact.phone_number_id == FIRST
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


@pytest.mark.usefixtures("two_numbers", "no_batch_fallback")
def test_a_preference_is_recorded_only_on_the_conversation_of_its_number(webhook):
    # The customer wrote to both numbers, the second longer ago (the contacts' default order puts it last).
    on_second = write(webhook, to=SECOND, wamid="wamid.B1", minutes_ago=10)
    on_first = write(webhook, to=FIRST, wamid="wamid.A1", minutes_ago=1)

    assert webhook(preference("stop", 1731705721, number=SECOND)).status_code == 200

    on_first.refresh_from_db()
    on_second.refresh_from_db()
    assert (on_second.marketing_preference, on_second.marketing_preference_at) == ("stop", STOPPED_AT)
    assert (on_first.marketing_preference, on_first.marketing_preference_at) == ("", None)

    # A later "resume" from the first number changes that conversation only.
    assert webhook(preference("resume", 1731705800, number=FIRST)).status_code == 200
    on_first.refresh_from_db()
    on_second.refresh_from_db()
    assert (on_first.marketing_preference, on_second.marketing_preference) == ("resume", "stop")
    assert Contact.objects.count() == 2


@pytest.mark.usefixtures("two_numbers", "no_batch_fallback")
def test_an_unknown_customers_preference_creates_the_contact_of_its_number_which_they_write_to_later(
    webhook,
):
    write(webhook, to=FIRST, wamid="wamid.A1", minutes_ago=5)

    assert webhook(preference("stop", 1731705721, number=SECOND)).status_code == 200

    created = Contact.objects.get(phone_number_id=SECOND)
    assert (created.wa_id, created.marketing_preference, created.marketing_preference_at) == (
        CUSTOMER,
        "stop",
        STOPPED_AT,
    )
    assert Contact.objects.get(phone_number_id=FIRST).marketing_preference == ""
    assert not Contact.objects.filter(phone_number_id="").exists()
    # The customer writes to that number later: the same contact, the preference kept.
    assert write(webhook, to=SECOND, wamid="wamid.B1", minutes_ago=1).pk == created.pk
    created.refresh_from_db()
    assert created.marketing_preference == "stop"
    assert Contact.objects.count() == 2


@pytest.mark.usefixtures("two_numbers", "no_batch_fallback")
def test_a_preference_for_a_number_not_served_is_ignored(webhook, webhook_log):
    on_first = write(webhook, to=FIRST, wamid="wamid.A1", minutes_ago=1)

    assert webhook(preference("stop", 1731705721, number=OTHER)).status_code == 200

    on_first.refresh_from_db()
    assert on_first.marketing_preference == ""
    assert list(Contact.objects.values_list("pk", flat=True)) == [on_first.pk]
    assert f"phone_number_id='{OTHER}' is not a number this service serves" in webhook_log.text
    assert "1 preferences ignored" in webhook_log.text


@pytest.mark.usefixtures("no_batch_fallback")
def test_a_preference_with_number_and_bsuid_attaches_to_the_contact_known_by_either(webhook):
    by_number = Contact.objects.create(phone_number_id=FIRST, wa_id=CUSTOMER)
    by_bsuid_elsewhere = Contact.objects.create(phone_number_id=SECOND, user_id=BSUID)

    assert webhook(preference("stop", 1731705721, user_id=BSUID)).status_code == 200

    by_number.refresh_from_db()
    by_bsuid_elsewhere.refresh_from_db()
    assert (by_number.user_id, by_number.marketing_preference) == (BSUID, "stop")
    assert (by_bsuid_elsewhere.wa_id, by_bsuid_elsewhere.marketing_preference) == (None, "")
    assert Contact.objects.count() == 2

    # By BSUID alone, later: the same contact.
    assert webhook(preference("resume", 1731705800, wa_id=None, user_id=BSUID)).status_code == 200
    by_number.refresh_from_db()
    assert by_number.marketing_preference == "resume"
    assert Contact.objects.count() == 2


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


@pytest.mark.usefixtures("two_numbers")
def test_131050_is_recorded_on_the_failed_jobs_own_conversation_only(webhook, graph, fake_openai):
    on_first = write(webhook, to=FIRST, wamid="wamid.A1", minutes_ago=1)
    on_second = write(webhook, to=SECOND, wamid="wamid.B1", minutes_ago=2)
    graph.post(f"https://graph.test/v25.0/{FIRST}/messages", json=graph_ok("wamid.OUT-A"))
    graph.post(
        f"https://graph.test/v25.0/{SECOND}/messages",
        status=400,
        json=graph_err(131050, "Unable to deliver message", details="stopped"),
    )

    run_jobs()

    on_first.refresh_from_db()
    on_second.refresh_from_db()
    assert OutboundJob.objects.get(contact=on_second).status == S.FAILED
    assert (on_second.marketing_preference, on_first.marketing_preference) == ("stop", "")


@pytest.mark.usefixtures("two_numbers")
def test_131050_in_a_status_webhook_is_recorded_on_the_jobs_own_conversation_only(
    webhook, graph, fake_openai
):
    on_first = write(webhook, to=FIRST, wamid="wamid.A1", minutes_ago=1)
    on_second = write(webhook, to=SECOND, wamid="wamid.B1", minutes_ago=2)
    graph.post(f"https://graph.test/v25.0/{FIRST}/messages", json=graph_ok("wamid.OUT-A"))
    graph.post(f"https://graph.test/v25.0/{SECOND}/messages", json=graph_ok("wamid.OUT-B"))
    run_jobs()
    failed = status_payload(
        wamid="wamid.OUT-B", status="failed", timestamp=int(timezone.now().timestamp()), error_code=131050
    )
    failed["entry"][0]["changes"][0]["value"]["metadata"]["phone_number_id"] = SECOND

    assert webhook(failed).status_code == 200

    on_first.refresh_from_db()
    on_second.refresh_from_db()
    assert (on_second.marketing_preference, on_first.marketing_preference) == ("stop", "")


def test_admin_shows_and_filters_the_marketing_preference(admin_client, webhook):
    webhook(load("user_preferences.json"))
    contact = Contact.objects.get()
    page = admin_client.get(reverse("admin:outbound_contact_change", args=[contact.pk])).content.decode()
    assert "The customer stopped marketing messages" in page
    changelist = reverse("admin:outbound_contact_changelist")
    assert contact.wa_id in admin_client.get(f"{changelist}?marketing=stop").content.decode()
    assert contact.wa_id not in admin_client.get(f"{changelist}?marketing=resume").content.decode()
