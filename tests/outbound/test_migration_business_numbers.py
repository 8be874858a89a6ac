"""Migration 0007 (several business numbers): the rows of a one-number deployment belong to its number.

From the schema before (0006, `wa_id` and `user_id` unique outright) with rows in it, migrating forward gives
every contact the first number of WHATSAPP_PHONE_NUMBER_ID (Meta's example number when none is set), keeps
every row and foreign key, and makes the ids unique per number. Backwards drops the number again, and refuses
(rolling back) once the same customer has written to two numbers.
"""

from __future__ import annotations

import pytest
from django.db import IntegrityError, connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

BEFORE = [("outbound", "0006_send_schedule")]
AFTER = [("outbound", "0007_business_numbers")]


def migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


@pytest.fixture(autouse=True)
def _latest_schema_afterwards():
    """Every later test expects the full schema: leave the database migrated to the end, pass or fail."""
    yield
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())


def old_rows(apps):
    Contact = apps.get_model("outbound", "Contact")
    InboundMessage = apps.get_model("outbound", "InboundMessage")
    OutboundJob = apps.get_model("outbound", "OutboundJob")
    now = timezone.now()
    by_number = Contact.objects.create(wa_id="16505551234", profile_name="Sheena", last_inbound_at=now)
    by_user_id = Contact.objects.create(user_id="US.9", profile_name="Kim", last_inbound_at=now)
    message = InboundMessage.objects.create(
        wamid="wamid.OLD", contact=by_number, type="text", text="Hi", needs_reply=True, timestamp=now, raw={}
    )
    job = OutboundJob.objects.create(contact=by_number, inbound_message=message, next_attempt_at=now)
    return by_number.pk, by_user_id.pk, job.pk


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("configured", "expected"),
    [
        ("111222333444555, 106540352242922", "111222333444555"),
        ("106540352242922", "106540352242922"),
        # None configured on a development database (DEBUG): Meta's example number, which simulate_inbound sent to.
        ("", "106540352242922"),
    ],
)
def test_existing_contacts_belong_to_the_first_configured_number(settings, configured, expected):
    settings.WHATSAPP_PHONE_NUMBER_ID = configured
    settings.DEBUG = True
    by_number, by_user_id, job = old_rows(migrate(BEFORE))

    apps = migrate(AFTER)

    Contact = apps.get_model("outbound", "Contact")
    assert sorted(Contact.objects.values_list("pk", "phone_number_id", "wa_id", "user_id")) == [
        (by_number, expected, "16505551234", None),
        (by_user_id, expected, None, "US.9"),
    ]
    assert apps.get_model("outbound", "OutboundJob").objects.get(pk=job).contact_id == by_number
    # Now the same customer may write to a second number: another contact.
    Contact.objects.create(phone_number_id="999888777666555", wa_id="16505551234")
    with pytest.raises(IntegrityError):
        Contact.objects.create(phone_number_id=expected, wa_id="16505551234")


@pytest.mark.django_db(transaction=True)
def test_backwards_and_forwards_again_keeps_the_rows(settings):
    settings.WHATSAPP_PHONE_NUMBER_ID = "106540352242922"
    by_number, by_user_id, _ = old_rows(migrate(BEFORE))
    migrate(AFTER)
    apps = migrate(BEFORE)
    Contact = apps.get_model("outbound", "Contact")
    assert sorted(Contact.objects.values_list("pk", flat=True)) == sorted([by_number, by_user_id])
    with pytest.raises(IntegrityError):  # unique outright again
        Contact.objects.create(wa_id="16505551234")
    apps = migrate(AFTER)
    assert set(apps.get_model("outbound", "Contact").objects.values_list("phone_number_id", flat=True)) == {
        "106540352242922"
    }


@pytest.mark.django_db(transaction=True)
def test_backwards_is_refused_once_a_customer_has_two_conversations(settings):
    settings.WHATSAPP_PHONE_NUMBER_ID = "106540352242922,111222333444555"
    migrate(BEFORE)
    apps = migrate(AFTER)
    Contact = apps.get_model("outbound", "Contact")
    Contact.objects.create(phone_number_id="106540352242922", wa_id="16505551234")
    Contact.objects.create(phone_number_id="111222333444555", wa_id="16505551234")
    with pytest.raises(IntegrityError):
        migrate(BEFORE)
    assert Contact.objects.count() == 2


@pytest.mark.django_db(transaction=True)
def test_without_a_configured_number_in_production_the_migration_refuses_and_changes_nothing(settings):
    # A release container migrating without its secrets: the example number would split every conversation.
    settings.DEBUG = False
    settings.WHATSAPP_PHONE_NUMBER_ID = ""
    old_rows(migrate(BEFORE))
    with pytest.raises(RuntimeError, match="set WHATSAPP_PHONE_NUMBER_ID"):
        migrate(AFTER)
    with connection.cursor() as cursor:
        columns = [c.name for c in connection.introspection.get_table_description(cursor, "webhooks_contact")]
    assert "phone_number_id" not in columns
    settings.WHATSAPP_PHONE_NUMBER_ID = "111222333444555"
    apps = migrate(AFTER)
    assert set(apps.get_model("outbound", "Contact").objects.values_list("phone_number_id", flat=True)) == {
        "111222333444555"
    }


@pytest.mark.django_db(transaction=True)
def test_an_empty_production_database_migrates_without_a_number(settings):
    settings.DEBUG = False
    settings.WHATSAPP_PHONE_NUMBER_ID = ""
    migrate(BEFORE)
    migrate(AFTER)
