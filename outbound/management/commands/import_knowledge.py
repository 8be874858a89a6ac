"""`python manage.py import_knowledge FOLDER`: load a folder of Markdown or text files as knowledge entries."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from outbound.services.knowledge import knowledge_entries_import, knowledge_folder_read


def _titles(items: Iterable[str]) -> str:
    items = list(items)
    shown = ", ".join(f"“{title}”" for title in items[:10])
    return shown + (f" and {len(items) - 10} more" if len(items) > 10 else "")


class Command(BaseCommand):
    help = (
        "Import every .md, .markdown and .txt file under FOLDER as a knowledge entry. The title is the file's "
        "first '# ' heading, else its name; an entry with the same title is updated, never duplicated. "
        "Entries keep their active/inactive state. Files that cannot be used are listed and the command exits "
        "non-zero, after importing the others."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("folder", type=Path, help="the folder to import (searched recursively)")
        parser.add_argument("--dry-run", action="store_true", help="report what would change, change nothing")

    def handle(self, *args: Any, folder: Path, dry_run: bool, **options: Any) -> None:
        try:
            documents, errors = knowledge_folder_read(folder=folder)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        if not documents and not errors:
            raise CommandError(f"no .md, .markdown or .txt files in {folder}")
        report = knowledge_entries_import(documents=documents, dry_run=dry_run)
        prefix = "Dry run, nothing changed: " if dry_run else ""
        self.stdout.write(
            f"{prefix}{len(report.created)} created, {len(report.updated)} updated, "
            f"{len(report.unchanged)} unchanged, {len(errors)} skipped."
        )
        for label, items in (("created", report.created), ("updated", report.updated)):
            if items:
                self.stdout.write(f"  {label}: {_titles(items)}")
        for error in errors:
            self.stderr.write(f"  skipped {error}")
        if errors:
            raise CommandError(f"{len(errors)} file(s) skipped; fix them and import again")
