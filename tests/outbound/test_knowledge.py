"""Retrieval (outbound.knowledge): reworded questions find their entry, unrelated and inactive ones stay out.

The database tests run on whichever database the suite runs on: PostgreSQL's full-text search, or SQLite's
Python scorer. Both must pass the same cases.
"""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from outbound.knowledge import (
    Document,
    knowledge_search,
    postgres_search_sql,
    question_from,
    rank_documents,
    search_column_statements,
    stem,
    terms,
)
from outbound.models import KnowledgeEntry
from outbound.replies import Turn
from tests.factories import make_knowledge
from tests.outbound.conftest import is_postgres

FAQ = {
    "Opening hours": "We open on Sunday from 10:00 to 14:00, and Monday to Saturday from 9:00 to 19:00.",
    "Shipping": "We ship to Portugal and Spain. Delivery takes 2 to 3 working days; Lisbon and Porto next day.",
    "Returns": "Unworn items can be returned within 30 days for a full refund. Bring the receipt.",
    "Payment methods": "We accept credit cards, MB Way and cash. No cheques.",
    "Gift wrapping": "Gift wrapping is free for every order: ask for it at checkout.",
    "Sizes": "Our shirts come in sizes S, M, L and XL. The size guide is on the website.",
}


@pytest.fixture
def faq(db) -> dict[str, KnowledgeEntry]:
    return {title: make_knowledge(title=title, body=body) for title, body in FAQ.items()}


def search(question: str, limit: int = 5) -> list[str]:
    return [snippet.title for snippet in knowledge_search(question=question, limit=limit)]


# ------------------------------------------------------------------------------------- on both databases
@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("What time do you open on Sunday?", "Opening hours"),
        ("Are you opened on Sundays?", "Opening hours"),
        ("hi, when do you close on saturday", "Opening hours"),
        ("Do you deliver to Lisbon?", "Shipping"),
        ("how long does shipping take to porto", "Shipping"),
        ("Can I get a refund if I return my order?", "Returns"),
        ("can i pay by card?", "Payment methods"),
        ("Is wrapping a present free?", "Gift wrapping"),
        ("what sizes do the shirts come in", "Sizes"),
    ],
)
def test_a_reworded_question_finds_its_entry_first(faq, question, expected):
    found = search(question)
    assert found[0] == expected
    # Not an all-words match: the question has words its answer lacks ("what", "time", "Lisbon", ...).


def test_unrelated_entries_are_left_out(faq):
    assert search("What time do you open on Sunday?") == ["Opening hours"]
    assert search("Do you ship to Lisbon?") == ["Shipping"]
    assert search("Do you sell bicycles?") == []


def test_stop_words_alone_match_nothing(faq):
    assert search("What do you do? Is it for me?") == []
    assert search("   ") == []
    assert search("?!") == []


def test_inactive_entries_are_never_returned(faq):
    KnowledgeEntry.objects.filter(title="Opening hours").update(is_active=False)
    assert search("What time do you open on Sunday?") == []
    KnowledgeEntry.objects.filter(title="Opening hours").update(is_active=True)
    assert search("What time do you open on Sunday?") == ["Opening hours"]


def test_at_most_limit_entries_most_relevant_first(db):
    make_knowledge(title="Sunday opening", body="We open on Sunday mornings from 10:00.")
    make_knowledge(title="Holidays", body="On public holidays we open like on a Sunday.")
    make_knowledge(title="Parking", body="There is free parking behind the shop, also on Sunday.")
    make_knowledge(title="Staff", body="Our staff speak Portuguese and English.")
    assert search("When do you open on Sunday?", limit=2) == ["Sunday opening", "Holidays"]
    assert search("When do you open on Sunday?", limit=5) == ["Sunday opening", "Holidays", "Parking"]
    assert search("When do you open on Sunday?", limit=0) == []


def test_a_title_match_outranks_a_passing_mention_in_a_body(db):
    make_knowledge(title="Newsletter", body="Sign up and hear about our returns policy changes first.")
    make_knowledge(title="Returns policy", body="Unworn items within 30 days, full refund.")
    assert search("What is your returns policy?")[0] == "Returns policy"


def test_one_query_whatever_the_number_of_entries(db):
    for n in range(30):
        make_knowledge(title=f"Entry {n}", body=f"Sunday fact number {n}.")
    with CaptureQueriesContext(connection) as queries:
        found = knowledge_search(question="open on Sunday?", limit=5)
    assert len(found) == 5
    assert len(queries) == 1


def test_question_marks_and_quotes_in_the_question_are_data(faq):
    # Characters with a meaning in tsquery syntax, or SQL, are only words to search for.
    assert search("Sunday' | ! & ( :* \\ open?);--") == ["Opening hours"]


# ----------------------------------------------------------------------------------------- the question
def test_the_question_is_the_customers_last_few_messages():
    conversation = [
        Turn("user", "one"),
        Turn("assistant", "reply"),
        Turn("user", "two"),
        Turn("user", "three"),
        Turn("assistant", "reply"),
        Turn("user", "four"),
    ]
    assert question_from(conversation) == "two\nthree\nfour"
    assert question_from([]) == ""


def test_a_follow_up_finds_its_entry_through_the_earlier_question(faq):
    conversation = [
        Turn("user", "Do you open on Sunday?"),
        Turn("assistant", "Yes, from 10:00 to 14:00."),
        Turn("user", "and what about the weekdays?"),
    ]
    assert search(question_from(conversation))[0] == "Opening hours"


# ---------------------------------------------------------------------------------- the SQLite scorer
def test_the_stemmer_brings_word_forms_together():
    assert {stem(w) for w in ("open", "opens", "opened", "opening")} == {"open"}
    assert {stem(w) for w in ("ship", "ships", "shipped", "shipping")} == {"ship"}
    assert {stem(w) for w in ("price", "prices", "priced")} == {"pric"}
    assert stem("deliveries") == stem("delivery")
    assert stem("business") == "business"  # not "busines"
    assert stem("bus") == "bus"


def test_terms_drop_stop_words_and_punctuation():
    assert terms("What time do you open on Sunday?") == ["tim", "open", "sunday"]
    assert terms("What do you do?") == []


def test_rank_documents_scores_only_shared_terms():
    docs = [
        Document(1, "Opening hours", "We open on Sunday from 10:00 to 14:00."),
        Document(2, "Shipping", "We ship to Portugal."),
    ]
    assert [d.id for d in rank_documents("open sunday", docs)] == [1]
    assert rank_documents("open sunday", []) == []
    assert rank_documents("what is it", docs) == []


# ------------------------------------------------------------------------------------------ PostgreSQL
@pytest.mark.postgres
def test_postgres_search_uses_the_gin_index(faq):
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")  # six rows: a sequential scan would be cheaper
        cursor.execute("EXPLAIN " + postgres_search_sql("english"), ["What time do you open on Sunday?", 5])
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "Bitmap Index Scan on outbound_knowledge_search" in plan


@pytest.mark.postgres
def test_postgres_search_column_follows_edits(faq):
    entry = KnowledgeEntry.objects.get(title="Gift wrapping")
    entry.body = "We open on Sunday for gift wrapping only."
    entry.save()
    assert "Gift wrapping" in search("open Sunday")


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_reindex_rebuilds_the_column_in_another_language(settings):
    make_knowledge(title="Opening hours", body="We are opening on Sundays.")
    try:
        settings.OUTBOUND_KNOWLEDGE_LANGUAGE = "simple"  # no stemming: "opening" is not "open"
        call_command("reindex_knowledge", stdout=io.StringIO())
        assert search("open sunday") == []
        assert search("opening sundays") == ["Opening hours"]
    finally:
        settings.OUTBOUND_KNOWLEDGE_LANGUAGE = "english"
        call_command("reindex_knowledge", stdout=io.StringIO())
    assert search("open sunday") == ["Opening hours"]


@pytest.mark.postgres
def test_reindex_refuses_a_language_postgres_does_not_have(settings, faq):
    settings.OUTBOUND_KNOWLEDGE_LANGUAGE = "klingon"
    with pytest.raises(CommandError, match=r"no text search configuration 'klingon'.*english"):
        call_command("reindex_knowledge", stdout=io.StringIO())
    settings.OUTBOUND_KNOWLEDGE_LANGUAGE = "english"
    assert search("open on Sunday") == ["Opening hours"]  # the column was left as it was


def test_reindex_refuses_a_language_name_that_is_not_a_name(settings, db):
    settings.OUTBOUND_KNOWLEDGE_LANGUAGE = "english'); DROP TABLE x; --"
    if is_postgres():
        with pytest.raises(CommandError, match="not a text search configuration name"):
            call_command("reindex_knowledge", stdout=io.StringIO())
    with pytest.raises(ValueError, match="not a text search configuration name"):
        search_column_statements(settings.OUTBOUND_KNOWLEDGE_LANGUAGE)


def test_reindex_on_sqlite_says_there_is_nothing_to_do(db):
    if is_postgres():
        pytest.skip("SQLite only")
    out = io.StringIO()
    call_command("reindex_knowledge", stdout=out)
    assert "Nothing to do" in out.getvalue()
