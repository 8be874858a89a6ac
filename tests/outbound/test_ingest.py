"""The ingest (outbound.services.ingest): a parsed webhook becomes contacts, messages and jobs, once.

Most tests deliver through the real webhook view (`webhook` fixture), as Meta would; the view's own HTTP
contract is tested in tests/webhooks/test_views.py.
"""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any
from unittest import mock

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from outbound.models import Contact, InboundMessage, OutboundJob
from outbound.services import ingest_sql
from outbound.services.ingest import webhook_ingest
from tests.conftest import (
    SERVED_PHONE_NUMBER_IDS,
    T0,
    at,
    batch_payload,
    counts,
    load,
    post_signed,
    status_payload,
    text_message,
    text_payload,
)
from tests.factories import make_sent_job
from webhooks.payloads import parse_webhook


@pytest.mark.django_db
def test_ingest_counts_new_messages_and_jobs():
    parsed = parse_webhook(load("message_types.json"), phone_number_ids=SERVED_PHONE_NUMBER_IDS)
    result = webhook_ingest(parsed=parsed)
    assert (result.messages, result.new_messages, result.jobs) == (14, 14, 12)
    again = webhook_ingest(parsed=parsed)
    assert (again.messages, again.new_messages, again.jobs) == (14, 0, 0)
    assert (InboundMessage.objects.count(), OutboundJob.objects.count()) == (14, 12)


@pytest.mark.django_db
def test_ingest_counts_statuses():
    make_sent_job(wa_message_id="wamid.OUT")
    parsed = parse_webhook(
        status_payload(wamid="wamid.OUT", status="read", timestamp=T0),
        phone_number_ids=SERVED_PHONE_NUMBER_IDS,
    )
    parsed.statuses += parse_webhook(
        status_payload(wamid="wamid.NOPE", status="read", timestamp=T0),
        phone_number_ids=SERVED_PHONE_NUMBER_IDS,
    ).statuses
    result = webhook_ingest(parsed=parsed)
    assert result.statuses is not None
    assert (result.statuses.applied, result.statuses.unknown, result.statuses.settled) == (1, 1, 0)


@pytest.mark.django_db(transaction=True)
@pytest.mark.postgres
def test_racing_redeliveries_store_once():
    # Meta delivers concurrently and retries to every subscribed app: the same POST can arrive twice at once.
    payload = batch_payload(
        [text_message(wamid=f"wamid.R{i}", wa_id=f"3900000{i:03d}", timestamp=T0 + i) for i in range(30)]
    )
    barrier = threading.Barrier(4)
    statuses = []

    def deliver() -> None:
        try:
            barrier.wait()
            statuses.append(post_signed(Client(), payload).status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=deliver) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # The later deliveries wait on the first one's unique keys, then insert nothing.
    assert statuses == [200, 200, 200, 200]
    assert Contact.objects.count() == 30
    assert InboundMessage.objects.count() == 30
    assert OutboundJob.objects.count() == 30
    assert OutboundJob.objects.filter(status=OutboundJob.Status.PENDING).count() == 30


# ---------------------------------------------------------------------------------------------- inbound
@pytest.mark.django_db
def test_inbound_text_creates_contact_message_and_pending_job(webhook, no_network):
    before = timezone.now()
    assert webhook(load("message_text.json")).status_code == 200
    contact = Contact.objects.get()
    assert contact.wa_id == "16505551234"
    assert contact.user_id is None
    assert contact.profile_name == "Sheena Nelson"
    assert contact.last_inbound_at == at(1749416383)  # Meta's timestamp, not our receipt time
    message = InboundMessage.objects.get()
    assert message.wamid == "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA="
    assert message.contact == contact
    assert message.type == InboundMessage.Type.TEXT
    assert message.text == "Does it come in another color?"
    assert message.needs_reply is True
    assert message.timestamp == at(1749416383)
    assert message.raw == load("message_text.json")["entry"][0]["changes"][0]["value"]["messages"][0]
    job = OutboundJob.objects.get()
    assert job.status == OutboundJob.Status.PENDING
    assert (job.contact, job.inbound_message) == (contact, message)
    assert job.attempts == 0
    assert job.content == ""
    assert before <= job.next_attempt_at <= timezone.now()
    assert job.claim_token is None


@pytest.mark.django_db
def test_user_id_is_stored_when_meta_sends_it(webhook):
    assert webhook(load("message_types.json")).status_code == 200
    contact = Contact.objects.get()
    assert (contact.wa_id, contact.user_id, contact.profile_name) == (
        "972987654321",
        "US.13491208655302741918",
        "Sheena Nelson",
    )


@pytest.mark.django_db
def test_user_id_learned_later_fills_the_same_contact(webhook):
    assert webhook(text_payload(wamid="wamid.1", wa_id="972987654321", timestamp=T0)).status_code == 200
    assert Contact.objects.get().user_id is None
    assert webhook(load("message_types.json")).status_code == 200
    contact = Contact.objects.get()
    assert contact.user_id == "US.13491208655302741918"
    assert contact.inbound_messages.count() == 15


@pytest.mark.django_db
def test_sender_known_only_by_user_id(webhook):
    message = {
        "from_user_id": "US.777",
        "id": "wamid.BS",
        "timestamp": str(T0),
        "type": "text",
        "text": {"body": "hi"},
    }
    payload = batch_payload([message], contacts=[{"profile": {"name": "Kim"}, "user_id": "US.777"}])
    assert webhook(payload).status_code == 200
    contact = Contact.objects.get()
    assert (contact.wa_id, contact.user_id, contact.profile_name) == (None, "US.777", "Kim")
    assert OutboundJob.objects.get().contact == contact


@pytest.mark.django_db
def test_phone_number_learned_later_fills_the_username_contact(webhook):
    message = {
        "from_user_id": "US.9",
        "id": "wamid.U1",
        "timestamp": str(T0),
        "type": "text",
        "text": {"body": "a"},
    }
    webhook(batch_payload([message], contacts=[{"profile": {"name": "Kim"}, "user_id": "US.9"}]))
    later = batch_payload(
        [text_message(wamid="wamid.U2", wa_id="4915100000", timestamp=T0 + 5)],
        contacts=[{"profile": {"name": "Kim"}, "wa_id": "4915100000", "user_id": "US.9"}],
    )
    assert webhook(later).status_code == 200
    contact = Contact.objects.get()
    assert (contact.wa_id, contact.user_id, contact.last_inbound_at) == ("4915100000", "US.9", at(T0 + 5))
    assert set(contact.inbound_messages.values_list("wamid", flat=True)) == {"wamid.U1", "wamid.U2"}


@pytest.mark.django_db
def test_one_person_by_number_and_by_user_id_in_one_post_is_one_contact_with_the_newest_time(
    webhook, no_batch_fallback
):
    by_number = text_message(wamid="wamid.P1", wa_id="4915100000", timestamp=T0)
    by_user_id = {"from_user_id": "US.9", "id": "wamid.P2", "timestamp": str(T0 + 100), "type": "text"}
    payload = batch_payload(
        [by_number, by_user_id],
        contacts=[{"profile": {"name": "Kim"}, "wa_id": "4915100000", "user_id": "US.9"}],
    )
    assert webhook(payload).status_code == 200
    contact = Contact.objects.get()
    assert (contact.wa_id, contact.user_id) == ("4915100000", "US.9")
    assert contact.last_inbound_at == at(T0 + 100)
    assert OutboundJob.objects.filter(contact=contact).count() == 2


@pytest.mark.django_db
def test_last_inbound_at_moves_forward(webhook):
    webhook(text_payload(wamid="wamid.1", timestamp=T0, name="Old name"))
    webhook(text_payload(wamid="wamid.2", timestamp=T0 + 60, name="New name"))
    contact = Contact.objects.get()
    assert contact.last_inbound_at == at(T0 + 60)
    assert contact.profile_name == "New name"


@pytest.mark.django_db
def test_older_message_arriving_later_never_moves_last_inbound_at_back(webhook):
    assert webhook(text_payload(wamid="wamid.new", timestamp=T0 + 3600)).status_code == 200
    assert webhook(text_payload(wamid="wamid.old", timestamp=T0)).status_code == 200
    contact = Contact.objects.get()
    assert contact.last_inbound_at == at(T0 + 3600)
    assert InboundMessage.objects.count() == 2
    assert OutboundJob.objects.count() == 2


@pytest.mark.django_db
def test_older_message_later_in_the_same_post_never_moves_last_inbound_at_back(webhook):
    messages = [
        text_message(wamid="wamid.new", timestamp=T0 + 3600),
        text_message(wamid="wamid.old", timestamp=T0),
    ]
    assert webhook(batch_payload(messages)).status_code == 200
    assert Contact.objects.get().last_inbound_at == at(T0 + 3600)


@pytest.mark.django_db
def test_many_contacts_in_one_post(webhook, no_network):
    messages = [
        text_message(wamid=f"wamid.{i}", wa_id=f"4470000{i:04d}", timestamp=T0 + i) for i in range(50)
    ]
    assert webhook(batch_payload(messages)).status_code == 200
    assert counts() == (50, 50, 50)
    contact = Contact.objects.get(wa_id="44700000007")
    assert contact.profile_name == "Name 44700000007"
    assert contact.last_inbound_at == at(T0 + 7)
    job = OutboundJob.objects.get(inbound_message__wamid="wamid.7")
    assert job.contact == contact
    assert job.inbound_message.contact == contact


def _many_contacts(n: int, *, offset: int) -> dict[str, Any]:
    return batch_payload(
        [
            text_message(wamid=f"wamid.Q{offset + i}", wa_id=f"3360{offset + i:07d}", timestamp=T0 + i)
            for i in range(n)
        ]
    )


@pytest.mark.django_db
def test_one_post_is_a_fixed_handful_of_bulk_statements(webhook, django_assert_max_num_queries):
    # SAVEPOINT/RELEASE + contacts insert, select, update + messages select, insert, select + jobs insert.
    with django_assert_max_num_queries(9) as one:
        assert webhook(_many_contacts(1, offset=0)).status_code == 200
    with django_assert_max_num_queries(9) as many:
        assert webhook(_many_contacts(200, offset=1000)).status_code == 200
    assert len(one.captured_queries) == len(many.captured_queries)
    assert counts() == (201, 201, 201)


@pytest.mark.django_db
def test_a_redelivered_post_takes_no_more_statements(webhook, django_assert_max_num_queries):
    payload = _many_contacts(200, offset=0)
    webhook(payload)
    with django_assert_max_num_queries(9):
        assert webhook(payload).status_code == 200
    assert counts() == (200, 200, 200)


@pytest.mark.django_db
def test_six_day_old_backlog_is_stored_in_full(webhook, no_network):
    # After an outage Meta replays up to 7 days; the worker, not the webhook, decides what still gets an answer.
    six_days_ago = timezone.now() - timedelta(days=6)
    messages = [
        text_message(
            wamid=f"wamid.B{i}", wa_id=f"4912345{i:04d}", timestamp=six_days_ago + timedelta(minutes=i)
        )
        for i in range(20)
    ]
    assert webhook(batch_payload(messages)).status_code == 200
    assert counts() == (20, 20, 20)
    assert set(OutboundJob.objects.values_list("status", flat=True)) == {OutboundJob.Status.PENDING}
    contact = Contact.objects.get(wa_id="49123450003")
    assert contact.last_inbound_at == (six_days_ago + timedelta(minutes=3)).replace(microsecond=0)


# ---------------------------------------------------------------------------------------------- dedup
@pytest.mark.django_db
def test_same_post_five_times_stores_once(webhook, no_network):
    payload = load("message_text.json")
    for _ in range(5):
        assert webhook(payload).status_code == 200
    assert counts() == (1, 1, 1)


@pytest.mark.django_db
def test_same_message_in_two_different_posts_gets_one_job(webhook):
    first = batch_payload([text_message(wamid="wamid.A", timestamp=T0)])
    second = batch_payload(
        [
            text_message(wamid="wamid.B", wa_id="222", timestamp=T0 + 1),
            text_message(wamid="wamid.A", timestamp=T0),
        ]
    )
    assert webhook(first).status_code == 200
    assert webhook(second).status_code == 200
    assert InboundMessage.objects.filter(wamid="wamid.A").count() == 1
    assert OutboundJob.objects.filter(inbound_message__wamid="wamid.A").count() == 1
    assert counts() == (2, 2, 2)


@pytest.mark.django_db
def test_same_wamid_twice_within_one_post_is_one(webhook):
    messages = [text_message(wamid="wamid.D", timestamp=T0), text_message(wamid="wamid.D", timestamp=T0)]
    assert webhook(batch_payload(messages)).status_code == 200
    assert counts() == (1, 1, 1)


@pytest.mark.django_db
def test_same_wamid_in_two_entries_of_one_post_is_one(webhook):
    payload = text_payload(wamid="wamid.D", timestamp=T0)
    payload["entry"].append(text_payload(wamid="wamid.D", timestamp=T0)["entry"][0])
    assert webhook(payload).status_code == 200
    assert counts() == (1, 1, 1)


@pytest.mark.django_db
def test_redelivery_does_not_reopen_an_answered_message(webhook):
    payload = text_payload(wamid="wamid.IN", timestamp=T0)
    make_sent_job(inbound_wamid="wamid.IN")
    assert webhook(payload).status_code == 200
    job = OutboundJob.objects.get()
    assert job.status == OutboundJob.Status.SENT
    assert InboundMessage.objects.count() == 1


# ---------------------------------------------------------------------------------------------- message types
# wamid → (stored type, needs a reply)
FIXTURE_TYPES = {
    "wamid.reply-text": ("text", True),
    "wamid.image": ("image", True),
    "wamid.voice": ("audio", True),
    "wamid.video": ("video", True),
    "wamid.document": ("document", True),
    "wamid.sticker": ("sticker", True),
    "wamid.button-reply": ("interactive", True),
    "wamid.list-reply": ("interactive", True),
    "wamid.template-button": ("button", True),
    "wamid.reaction": ("reaction", False),
    "wamid.location": ("location", True),
    "wamid.contacts": ("contacts", True),
    "wamid.unsupported": ("unsupported", True),
    "wamid.system": ("system", False),
}


@pytest.mark.django_db
def test_every_message_type_is_stored_and_only_some_get_a_job(webhook, no_network):
    assert webhook(load("message_types.json")).status_code == 200
    stored = {m.wamid: (m.type, m.needs_reply) for m in InboundMessage.objects.all()}
    assert stored == FIXTURE_TYPES
    answered = set(OutboundJob.objects.values_list("inbound_message__wamid", flat=True))
    assert answered == {wamid for wamid, (_, needs) in FIXTURE_TYPES.items() if needs}
    assert "wamid.reaction" not in answered
    assert "wamid.system" not in answered


@pytest.mark.django_db
def test_stored_text_is_what_a_model_can_use(webhook):
    webhook(load("message_types.json"))
    texts = dict(InboundMessage.objects.values_list("wamid", "text"))
    assert texts["wamid.reply-text"] == "replied text"
    assert texts["wamid.voice"] == "[The customer sent a voice message, which this service cannot open.]"
    assert texts["wamid.image"].endswith("Caption: my receipt")
    assert texts["wamid.button-reply"] == "Change"
    assert texts["wamid.list-reply"] == "Priority Mail Express (Next Day to 2 Days)"
    assert texts["wamid.template-button"] == "title"
    assert "Facebook HQ" in texts["wamid.location"]
    assert "John Doe" in texts["wamid.contacts"]
    assert all(texts.values())


@pytest.mark.django_db
def test_unknown_future_type_is_stored_not_answered(webhook):
    message = {
        "from": "16505551234",
        "id": "wamid.POLL",
        "timestamp": str(T0),
        "type": "poll",
        "poll": {"q": "?"},
    }
    assert webhook(batch_payload([message])).status_code == 200
    stored = InboundMessage.objects.get()
    assert (stored.type, stored.needs_reply) == (InboundMessage.Type.UNKNOWN, False)
    assert stored.raw == message
    assert "poll" in stored.text
    assert OutboundJob.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize("message_type", [*[t.value for t in InboundMessage.Type], "brand_new"])
@pytest.mark.parametrize("content", [None, 7, "str", [], {"weird": [1, {"x": None}]}])
def test_no_type_raises_whatever_its_content(webhook, message_type, content):
    message = {"from": "16505551234", "id": "wamid.T", "timestamp": str(T0), "type": message_type}
    if content is not None:
        message[message_type] = content
        message["contacts"] = content
    assert webhook(batch_payload([message])).status_code == 200
    assert InboundMessage.objects.get().wamid == "wamid.T"


# ---------------------------------------------------------------------------------------------- profile name
@pytest.mark.django_db
def test_an_older_message_never_moves_the_profile_name_back(webhook):
    assert webhook(text_payload(wamid="wamid.10", timestamp=T0 + 10, name="New")).status_code == 200
    assert webhook(text_payload(wamid="wamid.5", timestamp=T0 + 5, name="Old")).status_code == 200
    contact = Contact.objects.get()
    assert (contact.profile_name, contact.last_inbound_at) == ("New", at(T0 + 10))
    assert webhook(text_payload(wamid="wamid.20", timestamp=T0 + 20, name="Newest")).status_code == 200
    contact.refresh_from_db()
    assert (contact.profile_name, contact.last_inbound_at) == ("Newest", at(T0 + 20))
    # Meta's timestamps have 1-second resolution: a message of the same second may rename too.
    assert webhook(text_payload(wamid="wamid.20b", timestamp=T0 + 20, name="Same second")).status_code == 200
    contact.refresh_from_db()
    assert contact.profile_name == "Same second"


@pytest.mark.django_db
def test_an_older_message_redelivered_with_an_older_name_keeps_the_newer_one(webhook):
    webhook(text_payload(wamid="wamid.old", timestamp=T0, name="Old"))
    webhook(text_payload(wamid="wamid.new", timestamp=T0 + 60, name="New"))
    assert webhook(text_payload(wamid="wamid.old", timestamp=T0, name="Old")).status_code == 200
    assert Contact.objects.get().profile_name == "New"


@pytest.mark.django_db
def test_an_empty_profile_name_never_blanks_a_known_one(webhook):
    webhook(text_payload(wamid="wamid.1", timestamp=T0, name="Kim"))
    assert webhook(text_payload(wamid="wamid.2", timestamp=T0 + 60, name="")).status_code == 200
    contact = Contact.objects.get()
    assert (contact.profile_name, contact.last_inbound_at) == ("Kim", at(T0 + 60))


@pytest.mark.django_db
def test_the_name_is_decided_on_the_row_not_on_what_the_post_read(webhook, monkeypatch):
    # A racing POST stores a newer message between this POST's read of the contact and its update: the
    # database still holds the newer name (the decision is the UPDATE's, not Python's). The ORM path reads
    # the contact first; the one-statement path on PostgreSQL reads nothing (test_ingest_sql.py races it).
    monkeypatch.setattr(ingest_sql, "fits", lambda messages: False)
    webhook(text_payload(wamid="wamid.1", timestamp=T0, name="First"))
    real_filter = Contact.objects.filter

    def racing_filter(*args: Any, **kwargs: Any) -> Any:
        rows = list(real_filter(*args, **kwargs).order_by("pk"))  # this POST reads the contact (at T0) ...
        real_filter().update(profile_name="Racer", last_inbound_at=at(T0 + 100))  # ... then the racer commits
        return mock.Mock(order_by=lambda *_: rows)

    with mock.patch.object(Contact.objects, "filter", side_effect=racing_filter):
        assert webhook(text_payload(wamid="wamid.2", timestamp=T0 + 50, name="Slower")).status_code == 200
    contact = Contact.objects.get()
    assert (contact.profile_name, contact.last_inbound_at) == ("Racer", at(T0 + 100))
