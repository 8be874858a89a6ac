"""The one-statement ingest on PostgreSQL (`outbound.services.ingest_sql`): what the ORM path stores, in one
round trip, with the same guarantees. The rest of the ingest suite runs through it too on PostgreSQL."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.db import connection, connections, transaction

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
    text_message,
    text_payload,
)
from webhooks.payloads import parse_webhook

pytestmark = pytest.mark.postgres


SECOND_NUMBER = "111222333444555"


def parse(payload: dict[str, Any]):
    return parse_webhook(payload, phone_number_ids=(*SERVED_PHONE_NUMBER_IDS, SECOND_NUMBER))


def to_second_number(payload: dict[str, Any]) -> dict[str, Any]:
    payload["entry"][0]["changes"][0]["value"]["metadata"]["phone_number_id"] = SECOND_NUMBER
    return payload


# Ids, keys and the times of storing differ between two runs by nature; every other column is compared.
VOLATILE = {"id", "key", "created_at", "updated_at", "received_at", "next_attempt_at"}


def columns(model: Any) -> list[str]:
    return [f.attname for f in model._meta.concrete_fields if f.attname not in VOLATILE]


def every_column() -> tuple[list[tuple[Any, ...]], ...]:
    """Every column of every row, ids replaced by what they point at (the sender's number, the wamid)."""
    contacts = list(
        Contact.objects.order_by("phone_number_id", "wa_id", "user_id").values_list(*columns(Contact))
    )
    message_columns = [c for c in columns(InboundMessage) if c != "contact_id"]
    messages = list(
        InboundMessage.objects.order_by("wamid").values_list(
            *message_columns, "contact__wa_id", "contact__user_id"
        )
    )
    job_columns = [c for c in columns(OutboundJob) if c not in ("contact_id", "inbound_message_id")]
    jobs = list(
        OutboundJob.objects.order_by("inbound_message__wamid").values_list(
            *job_columns, "inbound_message__wamid"
        )
    )
    return contacts, messages, jobs


def snapshot() -> tuple[list[tuple[Any, ...]], ...]:
    """Everything stored, without ids and receipt times (which differ between two runs by nature)."""
    contacts = list(
        Contact.objects.order_by("phone_number_id", "wa_id", "user_id").values_list(
            "phone_number_id", "wa_id", "user_id", "profile_name", "last_inbound_at"
        )
    )
    messages = list(
        InboundMessage.objects.order_by("wamid").values_list(
            "wamid",
            "contact__phone_number_id",
            "contact__wa_id",
            "type",
            "text",
            "needs_reply",
            "timestamp",
            "raw",
        )
    )
    jobs = list(
        OutboundJob.objects.order_by("inbound_message__wamid").values_list(
            "inbound_message__wamid",
            "contact__wa_id",
            "status",
            "send_as",
            "content",
            "attempts",
            "claim_token",
            "delivery_status",
            "error_log",
        )
    )
    return contacts, messages, jobs


def _by_user_id(wamid: str, user_id: str, timestamp: int) -> dict[str, Any]:
    message = {
        "from_user_id": user_id,
        "id": wamid,
        "timestamp": str(timestamp),
        "type": "text",
        "text": {"body": "x"},
    }
    return batch_payload([message], contacts=[{"profile": {"name": "Kim"}, "user_id": user_id}])


SEQUENCE = [
    text_payload(wamid="wamid.1", timestamp=T0, name="First"),
    text_payload(wamid="wamid.1", timestamp=T0, name="First"),  # redelivered
    text_payload(wamid="wamid.0", timestamp=T0 - 50, name="Older"),  # an older message, later
    text_payload(wamid="wamid.2", timestamp=T0 + 10, name=""),  # no name: keeps the one known
    batch_payload(
        [
            text_message(wamid="wamid.3", timestamp=T0 + 30),
            text_message(wamid="wamid.4", wa_id="4915100000", timestamp=T0 + 20),
            text_message(wamid="wamid.5", timestamp=T0 + 25),  # older than wamid.3 in the same POST
            text_message(wamid="wamid.3", timestamp=T0 + 30),  # twice in one POST
        ]
    ),
    load("message_types.json"),  # numbers with user ids: learned by the contacts that had none
    # Known by a user id alone, then with the number too (the statement refuses; the ORM path learns it).
    _by_user_id("wamid.U1", "US.9", T0 + 40),
    batch_payload(
        [text_message(wamid="wamid.U2", wa_id="4915199999", timestamp=T0 + 41)],
        contacts=[{"profile": {"name": "Kim"}, "wa_id": "4915199999", "user_id": "US.9"}],
    ),
    _by_user_id("wamid.U3", "US.10", T0 + 42),
    # The same customers writing to a second business number: other conversations, other contacts.
    to_second_number(text_payload(wamid="wamid.N2-1", timestamp=T0 + 43, name="Second")),
    to_second_number(_by_user_id("wamid.N2-2", "US.9", T0 + 44)),
    # Known by a user id alone and, separately, by number alone; then both: the statement refuses (UNIQUE
    # number and user id), the ORM path merges the two into one contact.
    _by_user_id("wamid.M1", "US.M", T0 + 50),
    batch_payload([text_message(wamid="wamid.M2", wa_id="4915177777", timestamp=T0 + 51)]),
    batch_payload(
        [text_message(wamid="wamid.M3", wa_id="4915177777", timestamp=T0 + 52)],
        contacts=[{"profile": {"name": "Merged"}, "wa_id": "4915177777", "user_id": "US.M"}],
    ),
]


@pytest.mark.django_db
def test_the_one_statement_path_stores_exactly_what_the_orm_path_stores(monkeypatch):
    for payload in SEQUENCE:
        assert ingest_sql.fits(parse(payload).messages)
        webhook_ingest(parsed=parse(payload))
    assert Contact.objects.get(wa_id="972987654321").user_id == "US.13491208655302741918"
    fast, fast_columns = snapshot(), every_column()
    assert all(fast)
    OutboundJob.objects.all().delete()
    InboundMessage.objects.all().delete()
    Contact.objects.all().delete()
    monkeypatch.setattr(ingest_sql, "fits", lambda messages: False)
    for payload in SEQUENCE:
        webhook_ingest(parsed=parse(payload))
    assert snapshot() == fast
    assert every_column() == fast_columns
    contact = Contact.objects.get(wa_id="16505551234", phone_number_id="106540352242922")
    assert (contact.profile_name, contact.last_inbound_at) == ("Name 16505551234", at(T0 + 30))
    assert Contact.objects.get(user_id="US.9", phone_number_id="106540352242922").wa_id == "4915199999"
    assert Contact.objects.filter(phone_number_id=SECOND_NUMBER).count() == 2
    merged = Contact.objects.get(user_id="US.M")
    assert (merged.wa_id, merged.profile_name, merged.inbound_messages.count()) == ("4915177777", "Merged", 3)


@pytest.mark.django_db
def test_one_message_is_one_statement(webhook, django_assert_num_queries):
    # SAVEPOINT and RELEASE are the test's transaction; in production the statement is its own transaction.
    with django_assert_num_queries(3) as captured:
        assert webhook(text_payload(wamid="wamid.A", timestamp=T0)).status_code == 200
    assert "pg_notify" in captured.captured_queries[1]["sql"]
    assert counts() == (1, 1, 1)


@pytest.mark.django_db
def test_mixed_senders_and_big_replays_take_the_orm_path():
    by_user_id = parse(_by_user_id("wamid.U", "US.7", T0)).messages
    by_number = parse(text_payload(wamid="wamid.N", timestamp=T0)).messages
    assert ingest_sql.fits(by_user_id)
    assert ingest_sql.fits(by_number)
    assert not ingest_sql.fits(by_user_id + by_number)
    many = batch_payload(
        [
            text_message(wamid=f"wamid.M{i}", wa_id=f"49{i:08d}", timestamp=T0)
            for i in range(ingest_sql.MAX_MESSAGES + 1)
        ]
    )
    assert not ingest_sql.fits(parse(many).messages)
    assert ingest_sql.fits(parse(many).messages[:-1])
    assert webhook_ingest(parsed=parse(many)).jobs == ingest_sql.MAX_MESSAGES + 1


@pytest.mark.django_db
def test_a_message_the_database_refuses_costs_only_itself(webhook, webhook_log):
    # A real refusal by PostgreSQL (a CHECK constraint, in this test's transaction only), on the one-statement
    # path: the batch fails whole, then each message alone; the poisoned one is logged, the others stored.
    with connection.cursor() as cursor:
        cursor.execute(
            "ALTER TABLE webhooks_inboundmessage ADD CONSTRAINT poison CHECK (wamid <> 'wamid.POISON')"
        )
    payload = batch_payload(
        [
            text_message(wamid="wamid.G1", timestamp=T0),
            text_message(wamid="wamid.POISON", wa_id="222", timestamp=T0 + 1),
            text_message(wamid="wamid.G2", wa_id="333", timestamp=T0 + 2),
        ]
    )
    assert webhook(payload).status_code == 200
    assert set(InboundMessage.objects.values_list("wamid", flat=True)) == {"wamid.G1", "wamid.G2"}
    assert OutboundJob.objects.count() == 2
    assert not Contact.objects.filter(wa_id="222").exists()  # its statement was undone whole
    assert "webhook_item_failed kind=message wamid=wamid.POISON error=IntegrityError" in webhook_log.text


@pytest.mark.django_db(transaction=True)
def test_a_newer_message_committed_while_the_statement_waits_keeps_its_name():
    # A racing POST holds the contact's row with a newer message; this POST's statement waits for the row,
    # then decides on the committed row (not on what it saw when it started): the name stays the newer one.
    webhook_ingest(parsed=parse(text_payload(wamid="wamid.1", timestamp=T0, name="First")))
    holding, release = threading.Event(), threading.Event()

    def racer() -> None:
        try:
            with transaction.atomic():
                Contact.objects.filter(wa_id="16505551234").update(
                    profile_name="Racer", last_inbound_at=at(T0 + 100)
                )
                holding.set()
                release.wait(10)
        finally:
            connections.close_all()

    thread = threading.Thread(target=racer)
    thread.start()
    assert holding.wait(10)
    threading.Timer(0.5, release.set).start()
    webhook_ingest(parsed=parse(text_payload(wamid="wamid.2", timestamp=T0 + 50, name="Slower")))
    thread.join(10)
    contact = Contact.objects.get()
    assert (contact.profile_name, contact.last_inbound_at) == ("Racer", at(T0 + 100))
    assert InboundMessage.objects.count() == 2


@pytest.mark.django_db(transaction=True)
def test_outside_a_transaction_a_refused_statement_falls_back_to_the_orm_path_cleanly():
    # Production runs the statement in autocommit: the UNIQUE clash undoes it alone, and the ORM path learns
    # the number on the contact that was known by its user id.
    webhook_ingest(parsed=parse(_by_user_id("wamid.U1", "US.9", T0)))
    assert not connection.in_atomic_block
    second = batch_payload(
        [text_message(wamid="wamid.U2", wa_id="4915199999", timestamp=T0 + 1)],
        contacts=[{"profile": {"name": "Kim"}, "wa_id": "4915199999", "user_id": "US.9"}],
    )
    result = webhook_ingest(parsed=parse(second))
    assert (result.new_messages, result.jobs) == (1, 1)
    assert list(Contact.objects.values_list("wa_id", "user_id")) == [("4915199999", "US.9")]
    assert counts() == (1, 2, 2)


@pytest.mark.django_db
def test_a_one_message_post_fits_psycopgs_parse_cache():
    # psycopg parses a statement's placeholders on every execution unless the text and its parameters are
    # within these limits (then once per process): a fifth of a POST's CPU. A field added to a model with a
    # per-row value, or a longer statement, must not silently push the common POST over them.
    from psycopg import _queries

    for by in ("wa_id", "user_id"):
        statement = ingest_sql._statement(by, 1, 1)
        assert len(statement.encode()) <= _queries.MAX_CACHED_STATEMENT_LENGTH
        assert statement.count("%s") <= _queries.MAX_CACHED_STATEMENT_PARAMS
    assert ingest_sql.store_messages(parse(text_payload(wamid="wamid.C", timestamp=T0)).messages) == (1, 1)


def test_a_column_given_but_not_declared_is_refused_not_dropped():
    # media_fields() gaining a column that _GIVEN lacks would store the default instead of the value.
    with pytest.raises(ValueError, match="media_status"):
        ingest_sql._row(InboundMessage, {"wamid": "w", "media_status": "ready"}, None, connection)
