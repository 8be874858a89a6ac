"""Several business numbers: a contact (a conversation) belongs to the business number the customer wrote to.

- `Contact.phone_number_id` is added; every existing row gets the first number of WHATSAPP_PHONE_NUMBER_ID
  (before this release the service answered from that one number), or Meta's example number when none is set
  (a development database filled by `simulate_inbound`, which sent to it).
- `wa_id` and `user_id` become unique per business number instead of unique outright.

Backwards: the per-number keys become global again, which fails (and rolls back) if the same customer has
written to two numbers since; the number column is dropped.
"""

from django.conf import settings
from django.db import migrations, models

# `outbound.numbers.EXAMPLE_PHONE_NUMBER_ID` when this migration was written (a migration keeps its own copy:
# it must do the same thing whatever the code becomes).
EXAMPLE_PHONE_NUMBER_ID = "106540352242922"


def first_configured_number() -> str:
    setting = getattr(settings, "WHATSAPP_PHONE_NUMBER_ID", "") or ""
    numbers = [part.strip() for part in str(setting).split(",") if part.strip()]
    return numbers[0] if numbers else EXAMPLE_PHONE_NUMBER_ID


def existing_rows_to_the_first_number(apps, schema_editor):
    Contact = apps.get_model("outbound", "Contact")
    rows = Contact.objects.using(schema_editor.connection.alias).filter(phone_number_id="")
    configured = getattr(settings, "WHATSAPP_PHONE_NUMBER_ID", "") or ""
    if not settings.DEBUG and not str(configured).strip(" ,") and rows.exists():
        # A production database migrated where the secrets are not set (a release container): the example
        # number would split every conversation from its new messages and send pending replies from a number
        # we do not own. Nothing is changed (the migration's transaction rolls back).
        raise RuntimeError(
            "Migration outbound 0007 gives existing contacts the business number they were written to: set "
            "WHATSAPP_PHONE_NUMBER_ID (the number this service answered from) where `migrate` runs, then run it "
            "again."
        )
    rows.update(phone_number_id=first_configured_number())


class Migration(migrations.Migration):
    dependencies = [
        ("outbound", "0006_send_schedule"),
    ]

    operations = [
        migrations.AddField(
            model_name="contact",
            name="phone_number_id",
            field=models.CharField(default="", max_length=64, verbose_name="business number"),
            preserve_default=False,
        ),
        migrations.AlterField(
            model_name="contact",
            name="user_id",
            field=models.CharField(
                blank=True, max_length=160, null=True, verbose_name="business-scoped user id"
            ),
        ),
        migrations.AlterField(
            model_name="contact",
            name="wa_id",
            field=models.CharField(blank=True, max_length=32, null=True, verbose_name="WhatsApp number"),
        ),
        migrations.AddConstraint(
            model_name="contact",
            constraint=models.UniqueConstraint(
                fields=("phone_number_id", "wa_id"), name="contact_number_wa_id"
            ),
        ),
        migrations.AddConstraint(
            model_name="contact",
            constraint=models.UniqueConstraint(
                fields=("phone_number_id", "user_id"), name="contact_number_user_id"
            ),
        ),
        # Last: the rows are updated after every ALTER TABLE, so PostgreSQL has no pending trigger events on the
        # table while its schema changes. Until then every row has "" (the keys were unique outright, so the
        # new constraints hold).
        migrations.RunPython(existing_rows_to_the_first_number, migrations.RunPython.noop, elidable=False),
    ]
