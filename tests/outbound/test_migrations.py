"""Contact and InboundMessage moved from `webhooks` to `outbound` without moving data (outbound 0003, webhooks 0002).

From the schema of the release before the move, with rows in it, migrating forward keeps every row (same
pks, foreign keys intact, same tables) and moves the content types, so that permissions and admin history
carry over. Then back again and forward once more, as a rollback would.
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

BEFORE = [("webhooks", "0001_initial"), ("outbound", "0002_claim_order_index")]
AFTER = [
    ("webhooks", "0002_move_contacts_and_messages_to_outbound"),
    ("outbound", "0003_move_contacts_and_messages"),
]


def migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


@pytest.fixture(autouse=True)
def _latest_schema_afterwards():
    """Leave the database at the newest migration (AFTER is not the newest once later migrations exist): the
    tests that follow need every table."""
    yield
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())


def table_names() -> set[str]:
    with connection.cursor() as cursor:
        return set(connection.introspection.table_names(cursor))


def latest() -> list[tuple[str, str]]:
    executor = MigrationExecutor(connection)
    return [node for node in executor.loader.graph.leaf_nodes() if node[0] in ("outbound", "webhooks")]


@pytest.fixture(autouse=True)
def back_to_the_latest_schema():
    """Every later test expects the full schema: leave the database migrated to the end, pass or fail."""
    yield
    migrate(latest())


@pytest.mark.django_db(transaction=True)
def test_moving_the_models_keeps_rows_tables_and_permissions():
    old = migrate(BEFORE)
    Contact = old.get_model("webhooks", "Contact")
    InboundMessage = old.get_model("webhooks", "InboundMessage")
    OutboundJob = old.get_model("outbound", "OutboundJob")
    # The old schema's content types, as a deployment of the previous release has them, with a permission.
    ContentType.objects.filter(model__in=["contact", "inboundmessage"]).delete()
    contact_type = ContentType.objects.create(app_label="webhooks", model="contact")
    message_type = ContentType.objects.create(app_label="webhooks", model="inboundmessage")
    permission = Permission.objects.create(
        codename="view_contact", name="Can view contact", content_type=contact_type
    )
    now = timezone.now()
    contact = Contact.objects.create(wa_id="16505551234", profile_name="Sheena", last_inbound_at=now)
    message = InboundMessage.objects.create(
        wamid="wamid.MOVED",
        contact=contact,
        type="text",
        text="Hello",
        needs_reply=True,
        timestamp=now,
        raw={},
    )
    job = OutboundJob.objects.create(contact_id=contact.pk, inbound_message_id=message.pk, content="Hi")
    tables_before = table_names()

    new = migrate(AFTER)

    assert table_names() == tables_before
    assert {"webhooks_contact", "webhooks_inboundmessage"} <= table_names()
    NewContact = new.get_model("outbound", "Contact")
    NewMessage = new.get_model("outbound", "InboundMessage")
    NewJob = new.get_model("outbound", "OutboundJob")
    moved = NewContact.objects.get(pk=contact.pk)
    assert (moved.wa_id, moved.profile_name) == ("16505551234", "Sheena")
    moved_message = NewMessage.objects.get(pk=message.pk)
    assert (moved_message.wamid, moved_message.contact_id, moved_message.text) == (
        "wamid.MOVED",
        contact.pk,
        "Hello",
    )
    moved_job = NewJob.objects.select_related("contact", "inbound_message").get(pk=job.pk)
    assert (moved_job.contact.pk, moved_job.inbound_message.pk, moved_job.content) == (
        contact.pk,
        message.pk,
        "Hi",
    )
    ContentType.objects.clear_cache()
    assert ContentType.objects.get(pk=contact_type.pk).app_label == "outbound"
    assert ContentType.objects.get(pk=message_type.pk).app_label == "outbound"
    assert not ContentType.objects.filter(
        app_label="webhooks", model__in=["contact", "inboundmessage"]
    ).exists()
    assert Permission.objects.get(pk=permission.pk).content_type_id == contact_type.pk

    # A rollback gives the content types back, and the next deploy moves them again; the rows never move.
    back = migrate(BEFORE)
    assert ContentType.objects.get(pk=contact_type.pk).app_label == "webhooks"
    assert back.get_model("webhooks", "Contact").objects.get(pk=contact.pk).wa_id == "16505551234"
    again = migrate(AFTER)
    assert ContentType.objects.get(pk=contact_type.pk).app_label == "outbound"
    assert again.get_model("outbound", "OutboundJob").objects.get(pk=job.pk).inbound_message_id == message.pk


def search_columns() -> set[str]:
    with connection.cursor() as cursor:
        return {
            c.name for c in connection.introspection.get_table_description(cursor, "outbound_knowledgeentry")
        }


@pytest.mark.django_db(transaction=True)
def test_the_knowledge_migration_adds_the_search_column_on_postgres_only_and_rolls_back():
    migrate([("outbound", "0004_contact_bot_state_staff_replies_echoes")])
    assert "outbound_knowledgeentry" not in table_names()
    new = migrate([("outbound", "0005_knowledge_entries")])
    entry = new.get_model("outbound", "KnowledgeEntry").objects.create(title="Opening hours", body="Sundays")
    if connection.vendor == "postgresql":
        assert "search_vector" in search_columns()
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT search_vector::text FROM outbound_knowledgeentry WHERE id = %s", [entry.pk]
            )
            assert cursor.fetchone()[0] == "'hour':2A 'open':1A 'sunday':3B"
    else:
        assert "search_vector" not in search_columns()
    migrate([("outbound", "0004_contact_bot_state_staff_replies_echoes")])
    assert "outbound_knowledgeentry" not in table_names()
