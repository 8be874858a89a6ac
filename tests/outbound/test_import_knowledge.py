"""`manage.py import_knowledge FOLDER`: idempotent by title, a clear report, clear errors, never a traceback."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from outbound.models import KnowledgeEntry
from outbound.services.knowledge import knowledge_document_parse
from tests.factories import make_knowledge

pytestmark = pytest.mark.django_db


def run(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("import_knowledge", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def entries() -> dict[str, tuple[str, bool]]:
    return {e.title: (e.body, e.is_active) for e in KnowledgeEntry.objects.all()}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "hours.md").write_text("# Opening hours\n\nWe open on Sunday from 10:00 to 14:00.\n")
    (tmp_path / "shipping-to-portugal.txt").write_text("We ship to Portugal and Spain.\n")
    nested = tmp_path / "policies"
    nested.mkdir()
    (nested / "returns.markdown").write_text(
        "Intro line\n# Returns\nWithin 30 days.\n\n## Details\nReceipt.\n"
    )
    (tmp_path / "logo.png").write_bytes(b"\x89PNG\r\n")
    return tmp_path


def test_a_folder_becomes_entries_titled_by_heading_or_file_name(folder):
    out, err = run(str(folder))
    assert entries() == {
        "Opening hours": ("We open on Sunday from 10:00 to 14:00.", True),
        "Shipping to portugal": ("We ship to Portugal and Spain.", True),
        "Returns": ("Intro line\nWithin 30 days.\n\n## Details\nReceipt.", True),
    }
    assert "3 created, 0 updated, 0 unchanged, 0 skipped." in out
    assert "“Opening hours”" in out
    assert err == ""


def test_importing_again_is_idempotent_and_updates_changed_bodies(folder):
    run(str(folder))
    ids = set(KnowledgeEntry.objects.values_list("pk", flat=True))
    (folder / "hours.md").write_text("# Opening hours\n\nSundays 11:00 to 15:00 from May.\n")
    out, _ = run(str(folder))
    assert "0 created, 1 updated, 2 unchanged, 0 skipped." in out
    assert set(KnowledgeEntry.objects.values_list("pk", flat=True)) == ids
    assert entries()["Opening hours"] == ("Sundays 11:00 to 15:00 from May.", True)
    out, _ = run(str(folder))
    assert "0 created, 0 updated, 3 unchanged, 0 skipped." in out


def test_an_import_keeps_what_staff_deactivated_and_leaves_other_entries_alone(folder):
    make_knowledge(title="Opening hours", body="old", is_active=False)
    make_knowledge(title="Written in the admin", body="kept")
    run(str(folder))
    assert entries()["Opening hours"] == ("We open on Sunday from 10:00 to 14:00.", False)
    assert entries()["Written in the admin"] == ("kept", True)


def test_a_dry_run_reports_and_changes_nothing(folder):
    make_knowledge(title="Opening hours", body="old")
    out, _ = run(str(folder), "--dry-run")
    assert "Dry run, nothing changed: 2 created, 1 updated, 0 unchanged, 0 skipped." in out
    assert entries() == {"Opening hours": ("old", True)}


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tmp: tmp / "missing", "no such folder: {tmp}/missing"),
        (lambda tmp: (tmp / "a.md").write_text("x") and tmp / "a.md", "not a folder: {tmp}/a.md"),
        (lambda tmp: tmp, "no .md, .markdown or .txt files in {tmp}"),
    ],
)
def test_a_bad_path_is_a_clear_command_error(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(CommandError) as error:
        run(str(path))
    assert str(error.value) == message.format(tmp=tmp_path)
    assert KnowledgeEntry.objects.count() == 0


def test_unusable_files_are_listed_the_rest_imported_and_the_exit_is_non_zero(folder):
    (folder / "latin1.txt").write_bytes("Preço: 10 EUR".encode("latin-1"))
    (folder / "empty.md").write_text("# Only a title\n\n")
    (folder / "long.md").write_text("# " + "x" * 201 + "\nbody")
    (folder / "copy.md").write_text("# Opening hours\nA second file with the same title.")
    with pytest.raises(CommandError, match=r"4 file\(s\) skipped"):
        run(str(folder))
    assert set(entries()) == {"Opening hours", "Shipping to portugal", "Returns"}
    # The first file with a title wins (sorted by path): copy.md comes before hours.md.
    assert entries()["Opening hours"][0] == "A second file with the same title."


def test_unusable_files_are_named_with_the_reason(folder, capsys):
    (folder / "latin1.txt").write_bytes("Preço".encode("latin-1"))
    (folder / "empty.md").write_text("# Only a title\n")
    err = io.StringIO()
    with pytest.raises(CommandError):
        call_command("import_knowledge", str(folder), stdout=io.StringIO(), stderr=err)
    assert "skipped latin1.txt: not UTF-8 text; save it as UTF-8" in err.getvalue()
    assert "skipped empty.md: no text besides the title" in err.getvalue()


def test_parse_takes_the_first_heading_only():
    doc = knowledge_document_parse(
        text="\ufeff# Title  with  spaces\r\n\r\nBody\r\n# Not a title\n", fallback_title="file", source="f"
    )
    assert (doc.title, doc.body) == ("Title with spaces", "Body\n# Not a title")
    doc = knowledge_document_parse(text="#hashtag is not a heading\nBody", fallback_title="file", source="f")
    assert (doc.title, doc.body) == ("file", "#hashtag is not a heading\nBody")
