# Contact and InboundMessage move from the `webhooks` app to `outbound` without moving data: the tables keep
# their names (webhooks_contact, webhooks_inboundmessage), only Django's state changes. webhooks 0002 then
# forgets the models (state only too). The content types move with them, so that permissions and the admin
# history carry over.

import django.db.models.deletion
from django.db import migrations, models

MOVED = ("contact", "inboundmessage")


def move_content_types(apps, schema_editor, source="webhooks", target="outbound"):
    ContentType = apps.get_model("contenttypes", "ContentType")
    db = schema_editor.connection.alias
    for model in MOVED:
        old = ContentType.objects.using(db).filter(app_label=source, model=model).first()
        if old is None:
            continue  # a fresh database: post_migrate creates the new one
        # One created for the target meanwhile holds none of the old permissions or history: the old row wins.
        ContentType.objects.using(db).filter(app_label=target, model=model).delete()
        old.app_label = target
        old.save(update_fields=["app_label"])


def move_content_types_back(apps, schema_editor):
    move_content_types(apps, schema_editor, source="outbound", target="webhooks")


class Migration(migrations.Migration):

    dependencies = [
        ('contenttypes', '0002_remove_content_type_name'),
        ('outbound', '0002_claim_order_index'),
        ('webhooks', '0001_initial'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.CreateModel(
                    name='Contact',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('wa_id', models.CharField(blank=True, max_length=32, null=True, unique=True, verbose_name='WhatsApp number')),
                        ('user_id', models.CharField(blank=True, max_length=160, null=True, unique=True, verbose_name='business-scoped user id')),
                        ('profile_name', models.CharField(blank=True, max_length=256)),
                        ('last_inbound_at', models.DateTimeField(blank=True, null=True)),
                        ('created_at', models.DateTimeField(auto_now_add=True)),
                        ('updated_at', models.DateTimeField(auto_now=True)),
                    ],
                    options={
                        'db_table': 'webhooks_contact',
                        'ordering': ['-last_inbound_at'],
                    },
                ),
                migrations.CreateModel(
                    name='InboundMessage',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('wamid', models.CharField(max_length=256, unique=True, verbose_name='Meta message id')),
                        ('type', models.CharField(choices=[('text', 'Text'), ('image', 'Image'), ('audio', 'Audio'), ('video', 'Video'), ('document', 'Document'), ('sticker', 'Sticker'), ('interactive', 'Interactive'), ('button', 'Button'), ('reaction', 'Reaction'), ('location', 'Location'), ('contacts', 'Contacts'), ('order', 'Order'), ('system', 'System'), ('revoke', 'Revoke'), ('unsupported', 'Unsupported'), ('unknown', 'Unknown')], max_length=11)),
                        ('text', models.TextField(blank=True)),
                        ('needs_reply', models.BooleanField(default=False)),
                        ('timestamp', models.DateTimeField(help_text="Meta's timestamp of the message")),
                        ('raw', models.JSONField(help_text='the message object exactly as Meta sent it')),
                        ('received_at', models.DateTimeField(auto_now_add=True)),
                        ('contact', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='inbound_messages', to='outbound.contact')),
                    ],
                    options={
                        'db_table': 'webhooks_inboundmessage',
                        'ordering': ['-timestamp'],
                        'indexes': [models.Index(fields=['contact', 'timestamp'], name='inbound_contact_time')],
                    },
                ),
                migrations.AlterField(
                    model_name='outboundjob',
                    name='contact',
                    field=models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='outbound_jobs', to='outbound.contact'),
                ),
                migrations.AlterField(
                    model_name='outboundjob',
                    name='inbound_message',
                    field=models.OneToOneField(on_delete=django.db.models.deletion.PROTECT, related_name='outbound_job', to='outbound.inboundmessage'),
                ),
            ],
        ),
        migrations.RunPython(move_content_types, move_content_types_back),
    ]
