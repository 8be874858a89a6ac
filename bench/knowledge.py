"""Benchmark of knowledge retrieval: one customer question against 10,000 entries on PostgreSQL.

    python -m bench.knowledge            # 10,000 entries, 40 questions x 25 rounds
    python -m bench.knowledge --short    # CI: 2,000 entries, fewer rounds; fails only if broken

DATABASE_URL must point at PostgreSQL; its database is dropped and re-created (default
postgres://postgres@127.0.0.1:5432/wa_bench_knowledge). Each timing is one `outbound.knowledge.knowledge_search`
call as the worker makes it (one round trip through Django's connection), measured in this process. Side by
side, on the same entries: the SQLite path's Python scorer, which reads and scores every entry. Exit status 1
means broken (a planted entry not among the top OUTBOUND_KNOWLEDGE_TOP_K for its question), never slow.

The entries are synthetic FAQ answers drawn with Zipf's law from a 3,000-word vocabulary holding the common
business words at random ranks: a question's words match from a few entries to most of them (an OR query
must rank every match), and the planted entries must still come first for their reworded questions.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time

from bench import harness

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/wa_bench_knowledge"
GOAL_MS = 20.0
COMMON = (  # noqa: SIM905
    "order orders delivery deliver shipping ship price prices open opening close closed store shop online "
    "payment pay card cash refund return returns exchange size sizes colour color stock available week weekend "
    "monday tuesday wednesday thursday friday saturday sunday morning afternoon evening hour hours day days "
    "customer customers account address phone email invoice receipt discount voucher gift wrapping warranty "
    "repair battery charger cable screen case cover shirt trousers shoes jacket bag cotton wool leather model "
    "version product products item items quality service team support request booking appointment table menu "
    "vegetarian vegan allergy gluten parking location city street centre airport station train bus taxi"
).split()
PLANTED = {
    "Opening hours": "We open on Sunday from 10:00 to 14:00, and Monday to Saturday from 9:00 to 19:00.",
    "Shipping to the islands": "Madeira and the Azores: parcels leave on Tuesdays and take five working days.",
    "Loyalty programme": "Every euro spent earns one point; 100 points give a 5 euro voucher.",
    "Lost parcel": "If a tracking number shows no movement for a week, we resend the parcel at our cost.",
}
QUESTIONS = {
    "What time do you open on Sunday?": "Opening hours",
    "do you deliver to madeira?": "Shipping to the islands",
    "How do loyalty points work?": "Loyalty programme",
    "my parcel tracking has not moved for days": "Lost parcel",
}
FILLER_QUESTIONS = [
    "Can I pay by card when the order is delivered?",
    "Do you have this jacket in another colour and size?",
    "Is there parking near the store on Saturday afternoon?",
    "How long does a refund take after a return?",
    "Do you repair screens and batteries under warranty?",
    "Is the menu good for vegetarian or gluten free customers?",
    "Can I book a table for Friday evening?",
    "What is the price of the leather bag?",
    "hello",
    "Do you ship to the airport?",
]


def make_entries(n: int, rng: random.Random) -> list[tuple[str, str]]:
    """`n` entries, the planted ones first. Words follow Zipf's law over a 3,000-word vocabulary in which the
    common business words sit at random ranks: a few appear in half the entries, most in a handful."""
    vocabulary = [f"{rng.choice('bcdfgklmnprstvz')}{rng.choice('aeiou')}x{i}" for i in range(3000)]
    for word, rank in zip(COMMON, rng.sample(range(3, 3000), len(COMMON)), strict=True):
        vocabulary[rank] = word
    weights = [1 / (rank + 1) for rank in range(len(vocabulary))]
    entries = list(PLANTED.items())
    for i in range(n - len(entries)):
        product = f"Model {rng.choice('ABCDEFGHJK')}{rng.randint(100, 999)}"
        topic = " ".join(rng.choices(vocabulary, weights=weights, k=3))
        words = rng.choices(vocabulary, weights=weights, k=rng.randint(30, 90))
        entries.append((f"{product}: {topic} #{i}", " ".join(words).capitalize() + "."))
    return entries


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--short", action="store_true", help="small counts for CI; never fails on speed")
    parser.add_argument("--entries", type=int, default=None, help="entries to create (default 10,000)")
    args = parser.parse_args(argv)
    count = args.entries or (2_000 if args.short else 10_000)
    rounds = 5 if args.short else 25

    database_url = os.environ.get("DATABASE_URL", "")
    if not database_url.startswith(("postgres://", "postgresql://")):
        database_url = DEFAULT_DATABASE_URL
    env = harness.production_env(database_url=database_url)
    os.environ.update({k: v for k, v in env.items() if k not in ("PATH", "HOME")})
    print(f"bench.knowledge: {count} entries on {harness.db_name(database_url)}", flush=True)
    harness.recreate_database(database_url)
    harness.manage(["migrate", "--noinput"], env=env)

    import django

    django.setup()
    from django.conf import settings
    from django.db import connection

    from outbound.knowledge import Document, knowledge_search, rank_documents
    from outbound.models import KnowledgeEntry

    rng = random.Random(12)
    KnowledgeEntry.objects.bulk_create(
        [KnowledgeEntry(title=title, body=body) for title, body in make_entries(count, rng)], batch_size=2000
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE outbound_knowledgeentry")
    top_k = settings.OUTBOUND_KNOWLEDGE_TOP_K
    problems, first = [], 0
    for question, title in QUESTIONS.items():
        found = [s.title for s in knowledge_search(question=question, limit=top_k)]
        first += bool(found) and found[0] == title
        if title not in found:
            problems.append(f"{question!r}: {title!r} not among the {top_k} given to the model: {found}")
        elif found[0] != title:
            print(f"  {question!r}: {title!r} ranked {found.index(title) + 1} of {top_k} (given, not first)")

    questions = list(QUESTIONS) + FILLER_QUESTIONS
    for question in questions:  # warm the connection and the caches
        knowledge_search(question=question, limit=top_k)
    timings = []
    for _ in range(rounds):
        for question in questions:
            started = time.perf_counter()
            knowledge_search(question=question, limit=top_k)
            timings.append((time.perf_counter() - started) * 1000)
    matches = []
    with connection.cursor() as cursor:
        for question in questions:
            cursor.execute(
                "SELECT count(*) FROM outbound_knowledgeentry WHERE search_vector @@ "
                "replace(plainto_tsquery('english', %s)::text, ' & ', ' | ')::tsquery",
                [question],
            )
            matches.append(cursor.fetchone()[0])

    # The SQLite path's scorer on the same entries (loaded once here; the worker loads them on every reply).
    documents = [Document(pk, t, b) for pk, t, b in KnowledgeEntry.objects.values_list("id", "title", "body")]
    python_timings = []
    for question in questions[:5]:
        started = time.perf_counter()
        rank_documents(question, documents)
        python_timings.append((time.perf_counter() - started) * 1000)
    connection.close()

    p50, p95 = percentile(timings, 0.50), percentile(timings, 0.95)
    python_p50 = statistics.median(python_timings)
    print(f"\n== knowledge retrieval, {count} entries, top {top_k}, {len(timings)} searches")
    print(f"machine: {os.cpu_count()} cores, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(
        f"entries matched per question (OR of its words): median {statistics.median(matches):.0f}, max {max(matches)}"
    )
    print(f"PostgreSQL full-text: p50 {p50:.1f} ms, p95 {p95:.1f} ms, max {max(timings):.1f} ms")
    verdict = "met" if p95 <= GOAL_MS else "MISSED"
    print(f"p95 / goal ({GOAL_MS:.0f} ms): {p95 / GOAL_MS:.2f}  [{verdict}: p95 <= {GOAL_MS:.0f} ms]")
    print(
        f"Python scorer (the SQLite path) on the same entries: p50 {python_p50:.0f} ms, {python_p50 / p50:.0f}x"
    )
    print(
        f"planted entries ranked first: {first} of {len(QUESTIONS)}; among the top {top_k}: "
        f"{len(QUESTIONS) - len(problems)} of {len(QUESTIONS)}"
    )
    for problem in problems:
        print(f"  PROBLEM: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
