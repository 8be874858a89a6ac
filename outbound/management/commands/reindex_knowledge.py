"""`python manage.py reindex_knowledge`: rebuild PostgreSQL's knowledge search for OUTBOUND_KNOWLEDGE_LANGUAGE."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from outbound.knowledge import language_setting
from outbound.services.knowledge import knowledge_search_reindex


class Command(BaseCommand):
    help = (
        "Rebuild the knowledge entries' search column and index in the OUTBOUND_KNOWLEDGE_LANGUAGE text search "
        "configuration (PostgreSQL; run it after changing that setting). Nothing to do on SQLite."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        if connection.vendor != "postgresql":
            self.stdout.write("Nothing to do: on SQLite the entries are scored in Python, with no index.")
            return
        try:
            language = language_setting()
            knowledge_search_reindex(language=language)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"Rebuilt the knowledge search index in the '{language}' configuration.")
