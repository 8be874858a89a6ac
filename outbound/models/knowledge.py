"""What the model is told about the business: knowledge entries, and the system prompt staff may edit.

On PostgreSQL the entries' table also has a generated `search_vector` column (title weighted A, body B) with
a GIN index, made by migration 0004 and rebuilt by `manage.py reindex_knowledge`; Django does not manage it
(see `outbound.knowledge`).
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q

TITLE_MAX_LENGTH = 200


class KnowledgeEntry(models.Model):
    """One fact of the business (opening hours, shipping, returns...), written by staff or imported."""

    title = models.CharField(
        max_length=TITLE_MAX_LENGTH,
        unique=True,
        help_text="A short question or topic, e.g. “Opening hours”. Unique: importing a file with the same "
        "title updates this entry.",
    )
    body = models.TextField(help_text="The facts, as the bot may tell them to customers.")
    # No index of its own: nearly every entry is active, and retrieval goes through the search index.
    is_active = models.BooleanField(
        "active", default=True, help_text="Inactive entries are never given to the model."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["title"]
        verbose_name_plural = "knowledge entries"

    def __str__(self) -> str:
        return self.title


class ReplySettings(models.Model):
    """The one row of reply settings staff edit in the admin; without it, the configured defaults apply."""

    SINGLETON_ID = 1

    id = models.PositiveSmallIntegerField(primary_key=True, default=SINGLETON_ID, editable=False)
    system_prompt = models.TextField(
        blank=True,
        help_text="The instructions the model follows for every reply. Empty: the default (the "
        "OPENAI_SYSTEM_PROMPT variable, else the prompt file shipped with the code).",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "reply settings"
        verbose_name_plural = "reply settings"
        constraints = [models.CheckConstraint(condition=Q(id=1), name="reply_settings_singleton")]

    def __str__(self) -> str:
        return "Reply settings"
