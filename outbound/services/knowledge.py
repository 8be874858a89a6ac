"""Changes to the business's knowledge: importing a folder of Markdown or text files, (de)activating entries,
and rebuilding PostgreSQL's search column for another language.

An import is idempotent by title: a file whose title is already an entry updates that entry's body when it
differs and leaves it alone otherwise. Staff's `is_active` choice is never changed by an import.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from django.db import connection, transaction
from django.db.models import QuerySet

from outbound.knowledge import search_column_statements
from outbound.models import KnowledgeEntry
from outbound.models.knowledge import TITLE_MAX_LENGTH

logger = logging.getLogger(__name__)

KNOWLEDGE_FILE_SUFFIXES = (".md", ".markdown", ".txt")


@dataclass(frozen=True)
class KnowledgeDocument:
    """One file's entry: its title, its body, and where it came from (for the report)."""

    title: str
    body: str
    source: str


@dataclass
class ImportReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def knowledge_document_parse(*, text: str, fallback_title: str, source: str) -> KnowledgeDocument:
    """Title from the first `# ` heading (which leaves the body), else `fallback_title`; the rest is the body."""
    lines = text.replace("\r\n", "\n").lstrip("\ufeff").split("\n")
    title = ""
    for index, line in enumerate(lines):
        if line.startswith("# ") and line[2:].strip():
            title = line[2:].strip()
            del lines[index]
            break
    return KnowledgeDocument(
        title=" ".join((title or fallback_title).split()), body="\n".join(lines).strip(), source=source
    )


def knowledge_folder_read(*, folder: Path) -> tuple[list[KnowledgeDocument], list[str]]:
    """Every .md/.markdown/.txt file under `folder` (sorted), and the files that could not be read or used.

    Raises ValueError with a readable message when `folder` is not a readable folder.
    """
    if not folder.exists():
        raise ValueError(f"no such folder: {folder}")
    if not folder.is_dir():
        raise ValueError(f"not a folder: {folder}")
    try:
        paths = sorted(
            p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in KNOWLEDGE_FILE_SUFFIXES
        )
    except OSError as exc:
        raise ValueError(f"cannot read folder {folder}: {exc.strerror or exc}") from exc
    documents: list[KnowledgeDocument] = []
    errors: list[str] = []
    seen: dict[str, str] = {}
    for path in paths:
        source = str(path.relative_to(folder))
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            errors.append(f"{source}: not UTF-8 text; save it as UTF-8")
            continue
        except OSError as exc:
            errors.append(f"{source}: cannot read it ({exc.strerror or exc})")
            continue
        fallback = path.stem.replace("_", " ").replace("-", " ").strip().capitalize()
        document = knowledge_document_parse(text=text, fallback_title=fallback, source=source)
        if not document.title:
            errors.append(f"{source}: no title (no '# ' heading and no usable file name)")
        elif len(document.title) > TITLE_MAX_LENGTH:
            errors.append(f"{source}: the title is longer than {TITLE_MAX_LENGTH} characters")
        elif not document.body:
            errors.append(f"{source}: no text besides the title")
        elif document.title in seen:
            errors.append(f"{source}: same title “{document.title}” as {seen[document.title]}; skipped")
        else:
            seen[document.title] = source
            documents.append(document)
    return documents, errors


def knowledge_entries_import(
    *, documents: Sequence[KnowledgeDocument], dry_run: bool = False
) -> ImportReport:
    """Create or update one entry per document, by title, in one transaction; report what happened to each."""
    report = ImportReport()
    with transaction.atomic():
        existing = {
            entry.title: entry
            for entry in KnowledgeEntry.objects.filter(
                title__in=[d.title for d in documents]
            ).select_for_update()
        }
        for document in documents:
            entry = existing.get(document.title)
            if entry is None:
                if not dry_run:
                    KnowledgeEntry.objects.create(title=document.title, body=document.body)
                report.created.append(document.title)
            elif entry.body.strip() != document.body:
                if not dry_run:
                    entry.body = document.body
                    entry.save(update_fields=["body", "updated_at"])
                report.updated.append(document.title)
            else:
                report.unchanged.append(document.title)
    logger.info(
        "knowledge_import created=%s updated=%s unchanged=%s dry_run=%s",
        len(report.created),
        len(report.updated),
        len(report.unchanged),
        dry_run,
    )
    return report


def knowledge_entries_set_active(*, entries: QuerySet[KnowledgeEntry], active: bool) -> int:
    """Turn entries on or off for the model; returns how many changed."""
    return entries.exclude(is_active=active).update(is_active=active)


def knowledge_search_reindex(*, language: str) -> None:
    """Rebuild PostgreSQL's search column and index in `language` (after OUTBOUND_KNOWLEDGE_LANGUAGE changed).

    Raises ValueError for a configuration PostgreSQL does not have; does nothing on SQLite.
    """
    if connection.vendor != "postgresql":
        return
    statements = search_column_statements(language)
    with connection.cursor() as cursor:
        cursor.execute("SELECT cfgname FROM pg_ts_config ORDER BY cfgname")
        known = [name for (name,) in cursor.fetchall()]
    if language not in known:
        raise ValueError(
            f"PostgreSQL has no text search configuration {language!r}; it has: {', '.join(known)}"
        )
    with transaction.atomic(), connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)
