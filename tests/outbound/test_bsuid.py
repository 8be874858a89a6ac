"""Business-scoped user ids (BSUID, meta-whatsapp-api.md §9): every shape Meta sends, through the signed webhook.

Customers with a username may come without a phone number (`from_user_id`, `contacts[].user_id`, statuses'
`recipient_user_id`); a customer known one way and later the other stays one contact; `user_changed_user_id`
re-keys the contact and keeps its history.
"""

from __future__ import annotations

import copy
import json
from datetime import timedelta

import pytest
from django.utils import timezone

from outbound.models import Contact, InboundMessage, OutboundJob
from tests.conftest import DATA, T0, at, batch_payload, load, text_payload
from tests.factories import make_job
from tests.outbound.conftest import GRAPH_MESSAGES_URL, graph_ok, run_jobs
from webhooks.payloads import parse_webhook

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("no_batch_fallback")]
S = OutboundJob.Status

BSUID = "US.13491208655302741918"
NEW_BSUID = "US.20000000000000000001"
NUMBER = "4915100000"


def fixture(name: str, *, at_seconds: int | None = None) -> dict:
    """A payload from tests/data, its message timestamp moved to `at_seconds` when given."""
    payload = load(name)
    if at_seconds is not None:
        for message in payload["entry"][0]["changes"][0]["value"].get("messages", []):
            message["timestamp"] = str(at_seconds)
    return payload


def phone_only(wamid: str, timestamp: int) -> dict:
    return text_payload(wamid=wamid, wa_id=NUMBER, timestamp=timestamp, name="Kim")


def test_every_bsuid_fixture_parses(settings):
    served = ("106540352242922",)
    username = parse_webhook(load("bsuid_message_username.json"), phone_number_ids=served)
    [message] = username.messages
    assert (message.wa_id, message.user_id, message.profile_name) == (None, BSUID, "Kim")
    both = parse_webhook(load("bsuid_message_with_number.json"), phone_number_ids=served)
    assert (both.messages[0].wa_id, both.messages[0].user_id) == (NUMBER, BSUID)
    status = parse_webhook(load("bsuid_status_without_contacts.json"), phone_number_ids=served)
    assert [(s.wamid, s.status) for s in status.statuses] == [("wamid.OUT-BSUID", "delivered")]
    assert status.skipped == []
    change = parse_webhook(load("bsuid_user_changed_user_id.json"), phone_number_ids=served)
    [system] = change.messages
    assert (system.type, system.user_id, system.new_user_id, system.needs_reply) == (
        "system",
        BSUID,
        NEW_BSUID,
        False,
    )
    assert sorted(p.name for p in DATA.glob("bsuid_*.json")) == [
        "bsuid_message_username.json",
        "bsuid_message_with_number.json",
        "bsuid_status_without_contacts.json",
        "bsuid_user_changed_user_id.json",
    ]


@pytest.mark.parametrize(
    "system",
    [
        # The old BSUID only in the body, the new one as system.user_id.
        {"body": f"User Kim changed from {BSUID} to {NEW_BSUID}", "user_id": NEW_BSUID},
        # Both only in the body.
        {"body": f"User Kim changed from {BSUID} to {NEW_BSUID}."},
        # The old one as previous_user_id.
        {"body": "User Kim changed their user id", "previous_user_id": BSUID, "user_id": NEW_BSUID},
    ],
)
def test_user_changed_user_id_without_from_user_id_is_read_from_what_meta_gives(system):
    payload = fixture("bsuid_user_changed_user_id.json")
    message = payload["entry"][0]["changes"][0]["value"]["messages"][0]
    del message["from_user_id"]
    message["system"] = {**system, "type": "user_changed_user_id"}
    [parsed] = parse_webhook(payload, phone_number_ids=("106540352242922",)).messages
    assert (parsed.user_id, parsed.new_user_id) == (BSUID, NEW_BSUID)


def test_a_username_customer_without_a_number_is_answered_by_recipient(webhook, graph, fake_openai):
    payload = fixture("bsuid_message_username.json", at_seconds=int(timezone.now().timestamp()) - 60)
    assert webhook(payload).status_code == 200
    contact = Contact.objects.get()
    assert (contact.wa_id, contact.user_id, contact.profile_name) == (None, BSUID, "Kim")
    graph.post(GRAPH_MESSAGES_URL, json=graph_ok("wamid.OUT-BSUID"))
    run_jobs()
    [call] = graph.calls
    body = json.loads(call.request.body)
    assert body["recipient"] == BSUID
    assert "to" not in body
    assert OutboundJob.objects.get().status == S.SENT


def test_a_status_without_contacts_for_a_bsuid_recipient_is_applied(webhook):
    contact = Contact.objects.create(phone_number_id="106540352242922", user_id=BSUID, profile_name="Kim")
    job = make_job(contact=contact, status=S.SENT, wa_message_id="wamid.OUT-BSUID", content="Hi")
    assert webhook(load("bsuid_status_without_contacts.json")).status_code == 200
    job.refresh_from_db()
    assert job.delivery_status == "delivered"


def test_known_by_bsuid_then_by_number_too_is_one_contact(webhook):
    webhook(fixture("bsuid_message_username.json", at_seconds=T0))
    webhook(fixture("bsuid_message_with_number.json", at_seconds=T0 + 10))
    contact = Contact.objects.get()
    assert (contact.wa_id, contact.user_id, contact.last_inbound_at) == (NUMBER, BSUID, at(T0 + 10))
    assert contact.inbound_messages.count() == 2


def test_known_by_number_then_by_bsuid_too_is_one_contact(webhook):
    webhook(phone_only("wamid.PHONE", T0))
    webhook(fixture("bsuid_message_with_number.json", at_seconds=T0 + 10))
    contact = Contact.objects.get()
    assert (contact.wa_id, contact.user_id) == (NUMBER, BSUID)
    # And by BSUID alone afterwards: still that contact.
    webhook(fixture("bsuid_message_username.json", at_seconds=T0 + 20))
    assert Contact.objects.get().inbound_messages.count() == 3


def test_known_separately_by_bsuid_and_by_number_then_both_merges_into_one_with_all_history(webhook):
    webhook(fixture("bsuid_message_username.json", at_seconds=T0))
    first = Contact.objects.get()
    webhook(phone_only("wamid.PHONE", T0 + 5))
    assert Contact.objects.count() == 2  # nothing says yet that they are one person
    webhook(fixture("bsuid_message_with_number.json", at_seconds=T0 + 10))

    contact = Contact.objects.get()
    assert contact.pk == first.pk  # the older contact stays
    assert (contact.wa_id, contact.user_id, contact.last_inbound_at) == (NUMBER, BSUID, at(T0 + 10))
    assert InboundMessage.objects.filter(contact=contact).count() == 3
    assert OutboundJob.objects.filter(contact=contact).count() == 3
    assert OutboundJob.objects.exclude(contact=contact).count() == 0


def test_a_paused_contact_merged_away_keeps_the_pause(webhook):
    webhook(fixture("bsuid_message_username.json", at_seconds=T0))
    webhook(phone_only("wamid.PHONE", T0 + 5))
    by_number = Contact.objects.get(wa_id=NUMBER)
    Contact.objects.filter(pk=by_number.pk).update(
        bot_paused_at=timezone.now(), bot_human_at=timezone.now(), bot_pause_reason="STAFF_ACTION"
    )
    webhook(fixture("bsuid_message_with_number.json", at_seconds=T0 + 10))
    contact = Contact.objects.get()
    assert contact.bot_pause_reason == "STAFF_ACTION"
    assert contact.bot_paused(now=timezone.now())


def test_a_number_now_used_by_another_bsuid_is_not_merged(webhook):
    # The number belongs to a contact with another BSUID: the two stay apart (and the phone number decides).
    Contact.objects.create(phone_number_id="106540352242922", wa_id=NUMBER, user_id="US.OTHER")
    webhook(fixture("bsuid_message_username.json", at_seconds=T0))
    webhook(fixture("bsuid_message_with_number.json", at_seconds=T0 + 10))
    assert Contact.objects.count() == 2
    assert Contact.objects.get(user_id=BSUID).wa_id is None
    assert Contact.objects.get(user_id="US.OTHER").inbound_messages.count() == 1


def test_user_changed_user_id_rekeys_the_contact_and_keeps_its_history(webhook):
    webhook(fixture("bsuid_message_username.json", at_seconds=T0))
    contact = Contact.objects.get()
    change = fixture("bsuid_user_changed_user_id.json", at_seconds=T0 + 10)
    assert webhook(change).status_code == 200

    contact.refresh_from_db()
    assert contact.user_id == NEW_BSUID
    assert list(contact.inbound_messages.order_by("timestamp").values_list("type", flat=True)) == [
        "text",
        "system",
    ]
    assert OutboundJob.objects.count() == 1  # a system notice gets no reply

    # Meta redelivers the system message: nothing new, no contact under the old BSUID.
    assert webhook(change).status_code == 200
    assert Contact.objects.count() == 1
    # The customer writes with the new BSUID: the same conversation.
    later = fixture("bsuid_message_username.json", at_seconds=T0 + 20)
    value = later["entry"][0]["changes"][0]["value"]
    value["contacts"][0]["user_id"] = NEW_BSUID
    value["messages"][0].update(from_user_id=NEW_BSUID, id="wamid.AFTER-CHANGE")
    webhook(later)
    assert Contact.objects.get().inbound_messages.count() == 3


def test_user_changed_user_id_after_the_new_bsuid_already_wrote_merges_them(webhook):
    webhook(fixture("bsuid_message_with_number.json", at_seconds=T0))
    contact = Contact.objects.get()
    early = fixture("bsuid_message_username.json", at_seconds=T0 + 20)
    value = early["entry"][0]["changes"][0]["value"]
    value["contacts"][0]["user_id"] = NEW_BSUID
    value["messages"][0].update(from_user_id=NEW_BSUID, id="wamid.EARLY")
    webhook(early)
    assert Contact.objects.count() == 2

    webhook(fixture("bsuid_user_changed_user_id.json", at_seconds=T0 + 10))

    merged = Contact.objects.get()
    assert merged.pk == contact.pk
    assert (merged.wa_id, merged.user_id, merged.last_inbound_at) == (NUMBER, NEW_BSUID, at(T0 + 20))
    assert merged.inbound_messages.count() == 3
    assert OutboundJob.objects.filter(contact=merged).count() == 2


def test_a_bsuid_change_and_a_message_in_one_post(webhook):
    webhook(fixture("bsuid_message_username.json", at_seconds=T0))
    change = fixture("bsuid_user_changed_user_id.json", at_seconds=T0 + 10)
    after = copy.deepcopy(change["entry"][0]["changes"][0]["value"]["messages"][0])
    after.update(
        {"from_user_id": NEW_BSUID, "id": "wamid.SAME-POST", "type": "text", "text": {"body": "hi again"}}
    )
    after.pop("system")
    after["timestamp"] = str(T0 + 11)
    payload = batch_payload(
        [change["entry"][0]["changes"][0]["value"]["messages"][0], after],
        contacts=[{"profile": {"name": "Kim"}, "user_id": NEW_BSUID}],
    )
    assert webhook(payload).status_code == 200
    contact = Contact.objects.get()
    assert contact.user_id == NEW_BSUID
    assert contact.inbound_messages.count() == 3


def test_the_same_bsuid_on_two_business_numbers_is_two_conversations(webhook, settings):
    settings.WHATSAPP_PHONE_NUMBER_ID = "106540352242922,111222333444555"
    webhook(fixture("bsuid_message_username.json", at_seconds=T0))
    other = fixture("bsuid_message_username.json", at_seconds=T0 + 1)
    other["entry"][0]["changes"][0]["value"]["metadata"]["phone_number_id"] = "111222333444555"
    other["entry"][0]["changes"][0]["value"]["messages"][0]["id"] = "wamid.ON-SECOND"
    webhook(other)
    assert sorted(Contact.objects.values_list("phone_number_id", "user_id")) == [
        ("106540352242922", BSUID),
        ("111222333444555", BSUID),
    ]


def test_window_follows_the_merged_contacts_newest_message(webhook):
    now = int(timezone.now().timestamp())
    webhook(fixture("bsuid_message_username.json", at_seconds=now - 60 * 60 * 30))
    webhook(phone_only("wamid.PHONE", now - 60))
    webhook(fixture("bsuid_message_with_number.json", at_seconds=now - 120))
    contact = Contact.objects.get()
    assert contact.last_inbound_at == at(now - 60)
    assert contact.last_inbound_at > timezone.now() - timedelta(minutes=5)


def test_a_stop_in_the_same_post_as_a_bsuid_change_opts_the_customer_out(webhook):
    # The STOP comes from the new BSUID, whose contact the re-key merges into the old one: the opt-out must
    # land on the contact that remains, and the STOP's job must be the confirmation, not a model reply.
    webhook(fixture("bsuid_message_username.json", at_seconds=T0))
    change = fixture("bsuid_user_changed_user_id.json", at_seconds=T0 + 10)
    stop = copy.deepcopy(change["entry"][0]["changes"][0]["value"]["messages"][0])
    stop.update(
        {"from_user_id": NEW_BSUID, "id": "wamid.STOP-SAME-POST", "type": "text", "text": {"body": "STOP"}}
    )
    stop.pop("system")
    stop["timestamp"] = str(T0 + 11)
    payload = batch_payload(
        [change["entry"][0]["changes"][0]["value"]["messages"][0], stop],
        contacts=[{"profile": {"name": "Kim"}, "user_id": NEW_BSUID}],
    )
    assert webhook(payload).status_code == 200
    contact = Contact.objects.get()
    assert contact.user_id == NEW_BSUID
    assert contact.opted_out_at is not None
    stop_job = OutboundJob.objects.get(inbound_message__wamid="wamid.STOP-SAME-POST")
    assert stop_job.kind == OutboundJob.Kind.OPT_OUT


# Merging state: the opt-out, the marketing preference and the bot state are each taken whole from one contact.


def two_contacts_then_merge(webhook, *, by_user: dict, by_number: dict) -> Contact:
    """A contact known by BSUID only (older: it stays) and one by number only, each given `update`d state, then
    the webhook that names both: the merged contact."""
    webhook(fixture("bsuid_message_username.json", at_seconds=T0))
    webhook(phone_only("wamid.PHONE", T0 + 5))
    Contact.objects.filter(user_id=BSUID).update(**by_user)
    Contact.objects.filter(wa_id=NUMBER).update(**by_number)
    webhook(fixture("bsuid_message_with_number.json", at_seconds=T0 + 10))
    return Contact.objects.get()


def test_a_start_after_an_older_stop_on_the_other_contact_stays_opted_in(webhook):
    now = timezone.now()
    contact = two_contacts_then_merge(
        webhook,
        by_user={"opted_out_at": None, "opt_changed_at": now - timedelta(hours=1)},
        by_number={"opted_out_at": now - timedelta(days=2), "opt_changed_at": now - timedelta(days=2)},
    )
    assert (contact.opted_out_at, contact.opt_changed_at) == (None, now - timedelta(hours=1))


def test_a_stop_on_the_merged_away_contact_after_an_older_start_opts_out(webhook, django_user_model):
    now = timezone.now()
    staff = django_user_model.objects.create(username="staff")
    contact = two_contacts_then_merge(
        webhook,
        by_user={"opted_out_at": None, "opt_changed_at": now - timedelta(days=2)},
        by_number={
            "opted_out_at": now - timedelta(hours=1),
            "opted_out_by": staff,
            "opt_changed_at": now - timedelta(hours=1),
        },
    )
    assert (contact.opted_out_at, contact.opted_out_by, contact.opt_changed_at) == (
        now - timedelta(hours=1),
        staff,
        now - timedelta(hours=1),
    )


def test_a_newer_start_does_not_keep_the_older_stops_staff_member(webhook, django_user_model):
    now = timezone.now()
    staff = django_user_model.objects.create(username="staff")
    contact = two_contacts_then_merge(
        webhook,
        by_user={
            "opted_out_at": now - timedelta(days=2),
            "opted_out_by": staff,
            "opt_changed_at": now - timedelta(days=2),
        },
        by_number={"opted_out_at": None, "opted_out_by": None, "opt_changed_at": now - timedelta(hours=1)},
    )
    assert (contact.opted_out_at, contact.opted_out_by_id, contact.opt_changed_at) == (
        None,
        None,
        now - timedelta(hours=1),
    )


def test_the_newer_marketing_preference_wins_whole(webhook):
    now = timezone.now()
    contact = two_contacts_then_merge(
        webhook,
        by_user={"marketing_preference": "stop", "marketing_preference_at": now - timedelta(days=3)},
        by_number={"marketing_preference": "resume", "marketing_preference_at": now - timedelta(hours=2)},
    )
    assert (contact.marketing_preference, contact.marketing_preference_at) == (
        "resume",
        now - timedelta(hours=2),
    )


def test_the_kept_contacts_newer_marketing_preference_stays(webhook):
    now = timezone.now()
    contact = two_contacts_then_merge(
        webhook,
        by_user={"marketing_preference": "stop", "marketing_preference_at": now - timedelta(hours=2)},
        by_number={"marketing_preference": "resume", "marketing_preference_at": now - timedelta(days=3)},
    )
    assert (contact.marketing_preference, contact.marketing_preference_at) == (
        "stop",
        now - timedelta(hours=2),
    )


def test_a_pause_on_either_contact_is_kept_whole_with_the_newer_activity(webhook, django_user_model):
    now = timezone.now()
    staff = django_user_model.objects.create(username="staff")
    contact = two_contacts_then_merge(
        webhook,
        by_user={
            "bot_paused_at": now - timedelta(hours=5),
            "bot_human_at": now - timedelta(hours=5),
            "bot_pause_reason": "CUSTOMER_ASKED",
            "handoff_requested_at": now - timedelta(hours=5),
        },
        by_number={
            "bot_paused_at": now - timedelta(hours=3),
            "bot_human_at": now - timedelta(minutes=10),
            "bot_pause_reason": "STAFF_REPLY",
            "bot_paused_by": staff,
        },
    )
    # Both paused: the pause with the latest human activity, as a whole (no stale "waiting for a person").
    assert (
        contact.bot_paused_at,
        contact.bot_human_at,
        contact.bot_pause_reason,
        contact.bot_paused_by,
        contact.handoff_requested_at,
    ) == (now - timedelta(hours=3), now - timedelta(minutes=10), "STAFF_REPLY", staff, None)


def test_an_active_bot_on_the_kept_contact_does_not_undo_the_others_pause(webhook):
    now = timezone.now()
    contact = two_contacts_then_merge(
        webhook,
        by_user={},
        by_number={
            "bot_paused_at": now - timedelta(hours=1),
            "bot_human_at": now - timedelta(hours=1),
            "bot_pause_reason": "MODEL_ASKED",
            "handoff_requested_at": now - timedelta(hours=1),
        },
    )
    assert (contact.bot_pause_reason, contact.handoff_requested_at) == (
        "MODEL_ASKED",
        now - timedelta(hours=1),
    )
    assert contact.bot_paused(now=now)


def test_the_kept_contacts_newer_pause_stays_whole(webhook):
    now = timezone.now()
    contact = two_contacts_then_merge(
        webhook,
        by_user={
            "bot_paused_at": now - timedelta(minutes=30),
            "bot_human_at": now - timedelta(minutes=30),
            "bot_pause_reason": "STAFF_ACTION",
        },
        by_number={
            "bot_paused_at": now - timedelta(hours=4),
            "bot_human_at": now - timedelta(hours=4),
            "bot_pause_reason": "CUSTOMER_ASKED",
            "handoff_requested_at": now - timedelta(hours=4),
        },
    )
    assert (contact.bot_pause_reason, contact.bot_paused_at, contact.handoff_requested_at) == (
        "STAFF_ACTION",
        now - timedelta(minutes=30),
        None,
    )


def test_user_changed_user_id_merges_the_opt_state_whole(webhook):
    # The re-keyed contact (by number) opted back in after the STOP sent under the new BSUID.
    now = timezone.now()
    webhook(fixture("bsuid_message_with_number.json", at_seconds=T0))
    early = fixture("bsuid_message_username.json", at_seconds=T0 + 20)
    value = early["entry"][0]["changes"][0]["value"]
    value["contacts"][0]["user_id"] = NEW_BSUID
    value["messages"][0].update(from_user_id=NEW_BSUID, id="wamid.EARLY")
    webhook(early)
    Contact.objects.filter(wa_id=NUMBER).update(opted_out_at=None, opt_changed_at=now - timedelta(minutes=5))
    Contact.objects.filter(user_id=NEW_BSUID).update(
        opted_out_at=now - timedelta(days=1), opt_changed_at=now - timedelta(days=1)
    )
    webhook(fixture("bsuid_user_changed_user_id.json", at_seconds=T0 + 10))
    merged = Contact.objects.get()
    assert (merged.user_id, merged.opted_out_at, merged.opt_changed_at) == (
        NEW_BSUID,
        None,
        now - timedelta(minutes=5),
    )
