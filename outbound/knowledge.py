"""Retrieval: the knowledge entries most relevant to what the customer just wrote, most relevant first.

A question's words are rarely all in its answer ("What time do you open on Sunday?" → "We open on Sunday from
10:00 to 14:00"), so an entry matches when it shares *any* meaningful word with the question, and the ranking
does the rest. Stop words never count, so a question made only of them ("what do you do?") matches nothing.

- PostgreSQL: full-text search. Migration 0004 gives the table a generated `search_vector` column (title
  weighted A, body B, in OUTBOUND_KNOWLEDGE_LANGUAGE) with a GIN index. The question becomes an OR of its
  lexemes (`plainto_tsquery` is an AND; its `&` become `|`), ranked by `ts_rank` with the length
  normalisation 1, so that a long entry does not win by size alone.
- SQLite (development and small installs): a lesser BM25 scorer in Python over every active entry, with an
  English stop-word list and a light suffix stemmer; it reads the whole table for each reply, and knows no
  other language's stemming.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from django.conf import settings
from django.db import connection

from outbound.grounding import KnowledgeSnippet
from outbound.models import KnowledgeEntry
from outbound.replies import Turn

# The customer's latest messages that make up the question (a burst, or a follow-up like "and on Saturday?").
QUESTION_TURNS = 3
# Long pastes cost parsing time and add noise, not relevance.
QUESTION_MAX_CHARS = 2000
LANGUAGE_NAME = re.compile(r"[a-z_][a-z0-9_]*")

# ts_rank's normalisation 1: divide by 1 + log(document length).
_POSTGRES_SEARCH = """
SELECT id, title, body
FROM outbound_knowledgeentry
WHERE is_active AND search_vector @@ (SELECT q FROM question)
ORDER BY ts_rank(search_vector, (SELECT q FROM question), 1) DESC, id
LIMIT %s
"""
_POSTGRES_QUESTION = (
    "WITH question AS MATERIALIZED (SELECT "
    "replace(plainto_tsquery('{language}'::regconfig, %s)::text, ' & ', ' | ')::tsquery AS q)"
)


def question_from(conversation: Sequence[Turn], *, turns: int = QUESTION_TURNS) -> str:
    """The customer's last few messages, oldest first: what the knowledge must answer."""
    texts = [turn.text for turn in conversation if turn.role == "user"][-turns:]
    return "\n".join(texts)[-QUESTION_MAX_CHARS:]


def knowledge_search(*, question: str, limit: int) -> list[KnowledgeSnippet]:
    """At most `limit` active entries sharing a meaningful word with `question`, most relevant first."""
    if limit <= 0 or not question.strip():
        return []
    question = question[:QUESTION_MAX_CHARS]
    if connection.vendor == "postgresql":
        return _postgres_search(question, limit, language_setting())
    entries = KnowledgeEntry.objects.filter(is_active=True).values_list("id", "title", "body")
    documents = [Document(id=pk, title=title, body=body) for pk, title, body in entries]
    return [
        KnowledgeSnippet(id=doc.id, title=doc.title, body=doc.body)
        for doc in rank_documents(question, documents)[:limit]
    ]


def language_setting() -> str:
    """OUTBOUND_KNOWLEDGE_LANGUAGE, checked to be a plain configuration name (it is spliced into SQL)."""
    language = str(settings.OUTBOUND_KNOWLEDGE_LANGUAGE)
    if not LANGUAGE_NAME.fullmatch(language):
        raise ValueError(f"OUTBOUND_KNOWLEDGE_LANGUAGE={language!r} is not a text search configuration name")
    return language


def search_column_statements(language: str) -> list[str]:
    """The PostgreSQL statements that (re)build the search column and its index (as migration 0004 does)."""
    if not LANGUAGE_NAME.fullmatch(language):
        raise ValueError(f"{language!r} is not a text search configuration name")
    return [
        "ALTER TABLE outbound_knowledgeentry DROP COLUMN IF EXISTS search_vector",
        "ALTER TABLE outbound_knowledgeentry ADD COLUMN search_vector tsvector GENERATED ALWAYS AS ("
        f"setweight(to_tsvector('{language}'::regconfig, title), 'A') || "
        f"setweight(to_tsvector('{language}'::regconfig, body), 'B')) STORED",
        "CREATE INDEX outbound_knowledge_search ON outbound_knowledgeentry USING gin (search_vector)",
    ]


def postgres_search_sql(language: str) -> str:
    """The search statement; its parameters are the question and the limit."""
    # The configuration is a literal, not a parameter: the question must be parsed exactly as the column was.
    return _POSTGRES_QUESTION.format(language=language) + _POSTGRES_SEARCH


def _postgres_search(question: str, limit: int, language: str) -> list[KnowledgeSnippet]:
    with connection.cursor() as cursor:
        cursor.execute(postgres_search_sql(language), [question, limit])
        rows = cursor.fetchall()
    return [KnowledgeSnippet(id=pk, title=title, body=body) for pk, title, body in rows]


# ------------------------------------------------------------------------------------------------ SQLite
@dataclass(frozen=True)
class Document:
    id: int
    title: str
    body: str


# A title word counts as this many body words (PostgreSQL: weight A 1.0 against B 0.4).
TITLE_WEIGHT = 2.5
BM25_K1 = 1.2
BM25_B = 0.75
STOP_WORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being below
    between both but by can could did do does doing down during each few for from further had has have having
    he her here hers herself him himself his how i if in into is it its itself just me more most my myself no
    nor not now of off on once only or other our ours ourselves out over own same she should so some such than
    that the their theirs them themselves then there these they this those through to too under until up very
    was we were what when where which while who whom why will with would you your yours yourself yourselves
    hi hello hey please thanks thank ok okay tell know want like get got also us im ive id dont cant""".split()  # noqa: SIM905
)
_WORD = re.compile(r"[^\W_]+")
_SUFFIXES = ("ies", "ing", "ed", "s")


def stem(word: str) -> str:
    """A light English stemmer: opening/opened/opens → open, prices/priced → pric, shipping → ship."""
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            if suffix == "ies":
                word = word[:-3] + "y"
            elif suffix != "s" or not word.endswith(("ss", "us", "is")):
                word = word[: -len(suffix)]
                # shipp(ing) → ship, stopp(ed) → stop
                if len(word) > 3 and word[-1] == word[-2] and word[-1] not in "lsz":
                    word = word[:-1]
            break
    # close/closed/closing → clos: a final e comes and goes with the suffixes.
    return word[:-1] if len(word) > 3 and word.endswith("e") else word


def terms(text: str) -> list[str]:
    """The text's meaningful words: lower-cased, without stop words, stemmed."""
    return [stem(word) for word in _WORD.findall(text.lower()) if word not in STOP_WORDS]


def rank_documents(question: str, documents: Iterable[Document]) -> list[Document]:
    """BM25 over title (weighted) and body: the documents sharing a term with `question`, best first."""
    wanted = set(terms(question))
    if not wanted:
        return []
    bags: list[tuple[Document, dict[str, float], float]] = []
    for doc in documents:
        title_terms, body_terms = terms(doc.title), terms(doc.body)
        bag: dict[str, float] = {}
        for term in body_terms:
            bag[term] = bag.get(term, 0.0) + 1.0
        for term in title_terms:
            bag[term] = bag.get(term, 0.0) + TITLE_WEIGHT
        bags.append((doc, bag, len(body_terms) + TITLE_WEIGHT * len(title_terms)))
    if not bags:
        return []
    average_length = sum(length for _, _, length in bags) / len(bags) or 1.0
    frequency = Counter(term for _, bag, _ in bags for term in wanted & bag.keys())
    scored: list[tuple[float, int, Document]] = []
    for doc, bag, length in bags:
        score = 0.0
        for term in wanted & bag.keys():
            idf = math.log(1 + (len(bags) - frequency[term] + 0.5) / (frequency[term] + 0.5))
            tf = bag[term]
            score += (
                idf * tf * (BM25_K1 + 1) / (tf + BM25_K1 * (1 - BM25_B + BM25_B * length / average_length))
            )
        if score > 0:
            scored.append((score, doc.id, doc))
    scored.sort(key=lambda item: (-item[0], item[1]))
    return [doc for _, _, doc in scored]
