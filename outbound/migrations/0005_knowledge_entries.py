# Knowledge entries, the staff-editable reply settings, and the entries each job gave the model.
#
# On PostgreSQL the entries also get a generated `search_vector` column (title weighted A, body B, in the
# OUTBOUND_KNOWLEDGE_LANGUAGE text-search configuration) and a GIN index on it; Django's state does not know
# the column (outbound.knowledge queries it with SQL). SQLite gets neither: it scores entries in Python.
# `manage.py reindex_knowledge` rebuilds the column for another language with the same statements.

import re

from django.conf import settings
from django.db import migrations, models


def add_search_column(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    language = settings.OUTBOUND_KNOWLEDGE_LANGUAGE
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", language):
        raise ValueError(f"OUTBOUND_KNOWLEDGE_LANGUAGE={language!r} is not a text search configuration name")
    schema_editor.execute(
        "ALTER TABLE outbound_knowledgeentry ADD COLUMN search_vector tsvector GENERATED ALWAYS AS ("
        f"setweight(to_tsvector('{language}'::regconfig, title), 'A') || "
        f"setweight(to_tsvector('{language}'::regconfig, body), 'B')) STORED"
    )
    schema_editor.execute(
        "CREATE INDEX outbound_knowledge_search ON outbound_knowledgeentry USING gin (search_vector)"
    )


def drop_search_column(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("ALTER TABLE outbound_knowledgeentry DROP COLUMN IF EXISTS search_vector")


class Migration(migrations.Migration):

    dependencies = [
        ('outbound', '0004_contact_bot_state_staff_replies_echoes'),
    ]

    operations = [
        migrations.CreateModel(
            name='KnowledgeEntry',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('title', models.CharField(help_text='A short question or topic, e.g. “Opening hours”. Unique: importing a file with the same title updates this entry.', max_length=200, unique=True)),
                ('body', models.TextField(help_text='The facts, as the bot may tell them to customers.')),
                ('is_active', models.BooleanField(default=True, help_text='Inactive entries are never given to the model.', verbose_name='active')),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('updated_at', models.DateTimeField(auto_now=True)),
            ],
            options={
                'verbose_name_plural': 'knowledge entries',
                'ordering': ['title'],
            },
        ),
        migrations.AddField(
            model_name='outboundjob',
            name='knowledge',
            field=models.JSONField(blank=True, default=list, help_text='knowledge entries given to the model: [{id, title}] at the time'),
        ),
        migrations.CreateModel(
            name='ReplySettings',
            fields=[
                ('id', models.PositiveSmallIntegerField(default=1, editable=False, primary_key=True, serialize=False)),
                ('system_prompt', models.TextField(blank=True, help_text='The instructions the model follows for every reply. Empty: the default (the OPENAI_SYSTEM_PROMPT variable, else the prompt file shipped with the code).')),
                ('updated_at', models.DateTimeField(auto_now=True)),
            ],
            options={
                'verbose_name': 'reply settings',
                'verbose_name_plural': 'reply settings',
                'constraints': [models.CheckConstraint(condition=models.Q(('id', 1)), name='reply_settings_singleton')],
            },
        ),
        migrations.RunPython(add_search_column, drop_search_column, elidable=False),
    ]
