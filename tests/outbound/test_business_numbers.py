"""Several business numbers (issue 14): every number in WHATSAPP_PHONE_NUMBER_ID served with the one token; a
conversation is (business number, customer), answered from the number it was written to, with its own
24-hour window and history; the send limit is per number; other numbers' webhooks are ignored."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from responses import matchers

from outbound.models import Contact, EchoMessage, InboundMessage, OutboundJob, SendSchedule
from outbound.ratelimit import SharedSendRateLimiter
from outbound.services.handoff import contact_staff_reply
from outbound.worker_config import worker_config_from_settings
from tests.factories import make_contact, make_job
from tests.outbound.conftest import graph_ok, is_postgres, run_jobs
from webhooks.envelopes import echoes_webhook, text_message_webhook

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("no_batch_fallback")]
S = OutboundJob.Status

FIRST = "106540352242922"
SECOND = "111222333444555"
OTHER = "999888777666555"  # a number of the same app that this service does not serve
CUSTOMER = "16505551234"


def url(number: str) -> str:
    return f"https://graph.test/v25.0/{number}/messages"


@pytest.fixture(autouse=True)
def two_numbers(settings):
    settings.WHATSAPP_PHONE_NUMBER_ID = f"{FIRST}, {SECOND}"


def write(webhook, *, to: str, text: str, wamid: str, minutes_ago: float = 1, wa_id: str = CUSTOMER):
    """The customer writes to business number `to`, through the signed webhook POST."""
    when = int((timezone.now() - timedelta(minutes=minutes_ago)).timestamp())
    payload = text_message_webhook(
        wa_id=wa_id, name="Sheena", text=text, wamid=wamid, timestamp=when, phone_number_id=to
    )
    response = webhook(payload)
    assert response.status_code == 200
    return OutboundJob.objects.filter(inbound_message__wamid=wamid).first()


def sent_to(graph, number: str) -> list[dict]:
    return [json.loads(c.request.body) for c in graph.calls if c.request.url == url(number)]


def test_the_same_customer_writing_to_two_numbers_is_two_conversations_each_answered_from_its_number(
    webhook, graph, fake_openai
):
    first = write(webhook, to=FIRST, text="Hello first shop", wamid="wamid.A1")
    second = write(webhook, to=SECOND, text="Hello second shop", wamid="wamid.B1")
    graph.post(url(FIRST), json=graph_ok("wamid.OUT-A"))
    graph.post(url(SECOND), json=graph_ok("wamid.OUT-B"))

    run_jobs()

    contacts = Contact.objects.order_by("phone_number_id")
    assert [(c.phone_number_id, c.wa_id) for c in contacts] == [(FIRST, CUSTOMER), (SECOND, CUSTOMER)]
    assert first.contact_id != second.contact_id
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.status, first.wa_message_id) == (S.SENT, "wamid.OUT-A")
    assert (second.status, second.wa_message_id) == (S.SENT, "wamid.OUT-B")
    [to_first] = sent_to(graph, FIRST)
    [to_second] = sent_to(graph, SECOND)
    assert to_first["context"] == {"message_id": "wamid.A1"}
    assert to_second["context"] == {"message_id": "wamid.B1"}
    assert to_first["to"] == to_second["to"] == f"+{CUSTOMER}"
    # One token for every number.
    assert {c.request.headers["Authorization"] for c in graph.calls} == {
        "Bearer EAAtestaccesstoken0123456789abcdef"
    }
    # Each conversation's history is its own: the model answering the second number never sees the first.
    prompts = [json.dumps(r["body"]["messages"]) for r in fake_openai.requests]
    assert len(prompts) == 2
    for prompt in prompts:
        assert ("Hello first shop" in prompt) != ("Hello second shop" in prompt)


def test_each_number_has_its_own_24_hour_window(webhook, graph, fake_openai):
    # Written to the first number 30 hours ago (closed), to the second a minute ago (open).
    old = write(webhook, to=FIRST, text="Anyone there?", wamid="wamid.OLD", minutes_ago=60 * 30)
    new = write(webhook, to=SECOND, text="Hi!", wamid="wamid.NEW")
    graph.post(
        url(FIRST),
        json=graph_ok("wamid.T"),
        match=[matchers.json_params_matcher({"type": "template"}, strict_match=False)],
    )
    graph.post(
        url(SECOND),
        json=graph_ok("wamid.X"),
        match=[matchers.json_params_matcher({"type": "text"}, strict_match=False)],
    )

    run_jobs()

    old.refresh_from_db()
    new.refresh_from_db()
    assert (old.status, old.send_as) == (S.SENT, OutboundJob.SendAs.TEMPLATE)
    assert (new.status, new.send_as) == (S.SENT, OutboundJob.SendAs.TEXT)
    assert old.contact.last_inbound_at < new.contact.last_inbound_at - timedelta(hours=29)


def test_a_webhook_for_a_number_not_served_is_logged_answered_200_and_stores_nothing(
    webhook, webhook_log, no_network
):
    assert write(webhook, to=OTHER, text="Hello", wamid="wamid.ELSEWHERE") is None
    assert (Contact.objects.count(), InboundMessage.objects.count(), OutboundJob.objects.count()) == (0, 0, 0)
    assert f"phone_number_id='{OTHER}' is not a number this service serves" in webhook_log.text


def test_a_staff_reply_leaves_from_the_conversations_number(graph, admin_user):
    contact = make_contact(phone_number_id=SECOND, last_inbound_at=timezone.now() - timedelta(minutes=3))
    make_contact(phone_number_id=FIRST)  # the same customer on the first number: not this conversation
    graph.post(url(SECOND), json=graph_ok("wamid.STAFF"))
    job = contact_staff_reply(contact=contact, author=admin_user, text="A person here.")

    run_jobs()

    job.refresh_from_db()
    assert (job.status, job.contact_id) == (S.SENT, contact.pk)
    assert sent_to(graph, SECOND)[0]["text"]["body"] == "A person here."


def test_an_echo_from_one_numbers_business_app_pauses_only_that_conversation(webhook):
    on_first = make_contact(phone_number_id=FIRST)
    on_second = make_contact(phone_number_id=SECOND)
    echo = {
        "from": "15550783881",
        "to": CUSTOMER,
        "id": "wamid.ECHO1",
        "timestamp": str(int(timezone.now().timestamp())),
        "type": "text",
        "text": {"body": "Owner here"},
    }
    assert webhook(echoes_webhook(echoes=[echo], phone_number_id=SECOND)).status_code == 200
    on_first.refresh_from_db()
    on_second.refresh_from_db()
    assert EchoMessage.objects.get().contact_id == on_second.pk
    assert on_second.bot_paused_at is not None
    assert on_first.bot_paused_at is None


def test_the_send_limit_is_per_number():
    config = worker_config_from_settings()
    first, second = config.limiter_for(FIRST), config.limiter_for(SECOND)
    assert first is config.rate_limiter  # the default number's
    assert second is not first
    assert config.limiter_for(SECOND) is second  # made once per number
    if is_postgres():
        assert isinstance(second, SharedSendRateLimiter)
        assert (first._key, second._key) == (FIRST, SECOND)


@pytest.mark.postgres
def test_on_postgresql_each_number_reserves_its_own_send_slots(webhook, graph, fake_openai):
    write(webhook, to=FIRST, text="a", wamid="wamid.S1")
    write(webhook, to=SECOND, text="b", wamid="wamid.S2", wa_id="4915100000")
    graph.post(url(FIRST), json=graph_ok("wamid.O1"))
    graph.post(url(SECOND), json=graph_ok("wamid.O2"))
    run_jobs()
    assert set(SendSchedule.objects.values_list("phone_number_id", flat=True)) == {FIRST, SECOND}


def test_the_admin_shows_and_filters_by_number(admin_client):
    make_contact(phone_number_id=FIRST, name="On first")
    make_contact(phone_number_id=SECOND, name="On second")
    Contact.objects.create(phone_number_id="123450000000000", wa_id="1", profile_name="Retired number")
    page = admin_client.get(reverse("admin:outbound_contact_changelist"), {"number": SECOND})
    assert page.status_code == 200
    body = page.content.decode()
    assert "On second" in body
    assert "On first" not in body
    assert "business number" in body
    assert "123450000000000 (not configured)" in body
    jobs = admin_client.get(reverse("admin:outbound_outboundjob_changelist"), {"number": FIRST})
    assert jobs.status_code == 200
    messages = admin_client.get(reverse("admin:outbound_inboundmessage_changelist"), {"number": FIRST})
    assert messages.status_code == 200


def test_the_admin_job_list_filters_by_the_contacts_number(admin_client):
    on_first = make_job(contact=make_contact(phone_number_id=FIRST), text="first shop question")
    on_second = make_job(contact=make_contact(phone_number_id=SECOND), text="second shop question")
    page = admin_client.get(reverse("admin:outbound_outboundjob_changelist"), {"number": SECOND})
    ids = [job.pk for job in page.context["cl"].result_list]
    assert ids == [on_second.pk]
    assert on_first.pk not in ids
    page = admin_client.get(reverse("admin:outbound_inboundmessage_changelist"), {"number": FIRST})
    assert [m.pk for m in page.context["cl"].result_list] == [on_first.inbound_message_id]
    detail = admin_client.get(reverse("admin:outbound_outboundjob_change", args=[on_second.pk]))
    assert SECOND in detail.content.decode()
