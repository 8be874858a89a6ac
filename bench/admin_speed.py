"""How fast the admin pages staff use answer at a year's volume, on PostgreSQL.

    python -m bench.admin_speed            # 10^6 jobs, 10^6 inbound messages, 10^5 contacts (seeding ~2 minutes)
    python -m bench.admin_speed --short    # 20,000 / 20,000 / 2,000: CI; fails only on an error, never on speed
    python -m bench.admin_speed --reuse    # time again without re-seeding (the database from the last run)

DATABASE_URL names the server; the benchmark uses its own database beside it (`<name>_admin`, default
postgres://postgres@127.0.0.1:5432/wa_bench_admin), dropped and re-created unless --reuse. The rows are made
by SQL `generate_series` (a year of traffic: one message and one reply job a message, 2 % of them FAILED),
then ANALYZEd. Each page (and /metrics, as Prometheus scrapes it) is fetched by Django's test client as a logged-in superuser, once to warm up and then
`--repeat` times; the table shows the median and the slowest, in milliseconds, the queries per page and the
time they took in the database (one request; the rest of a page's time is Python rendering the HTML, which a
busy CPU stretches).
The goal (every page under 300 ms at full volume) is printed, never enforced: exit 1 means a page failed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/wa_bench_admin"
GOAL_MS = 300.0
METRICS_TOKEN = "bench-metrics-token-0123456789"  # noqa: S105 (a benchmark-only value)
WORDS = ["blue", "green", "tomorrow", "delivery", "refund", "size", "opening hours", "price", "stock", "gift"]

SEED_SQL = """
INSERT INTO webhooks_contact (
    id, phone_number_id, wa_id, profile_name, last_inbound_at, created_at, updated_at, bot_pause_reason,
    marketing_preference)
SELECT i, %(phone_number_id)s, (16500000000 + i)::text,
       (ARRAY['Sheena','Ravi','Ana','Tomas','Mei','Olu','Greta','Yusuf','Lena','Kofi'])[1 + i %% 10]
         || ' ' || upper(substr(md5(i::text), 1, 6)),
       now() - (i %% 365) * interval '1 day', now() - interval '400 days', now(), '', ''
FROM generate_series(1, %(contacts)s) AS i;

INSERT INTO webhooks_inboundmessage (
    id, wamid, type, text, needs_reply, timestamp, raw, received_at, contact_id,
    media_id, media_mime_type, media_sha256, media_caption, media_status, media_description, transcript)
SELECT i, 'wamid.IN' || lpad(i::text, 10, '0'), 'text',
       'Hello, is the ' || (ARRAY['shirt','bag','lamp','chair','mug'])[1 + i %% 5] || ' in '
         || (ARRAY['blue','green','red','black','white','grey','pink'])[1 + i %% 7] || '? ref ' || md5(i::text),
       true, t, '{}'::jsonb, t + interval '1 second', 1 + (i::bigint * 7919) %% %(contacts)s,
       '', '', '', '', '', '', ''
FROM (SELECT i, now() - (%(messages)s - i) * (interval '365 days' / %(messages)s) AS t
      FROM generate_series(1, %(messages)s) AS i) AS s;

INSERT INTO outbound_outboundjob (
    id, key, status, send_as, content, attempts, last_attempt_at, next_attempt_at, claimed_by, error_log,
    wa_message_id, sent_at, message_status, delivery_status, delivery_updated_at, delivery_error, created_at,
    updated_at, contact_id, inbound_message_id, kind, knowledge, failure_phase, failure_code, first_claimed_at,
    generated_at, input_tokens, output_tokens, cached_input_tokens)
SELECT m.id, gen_random_uuid(), CASE WHEN failed THEN 'FAILED' ELSE 'SENT' END, 'TEXT',
       'Thanks for asking! The ' || (ARRAY['shirt','bag','lamp','chair','mug'])[1 + m.id %% 5] || ' comes in '
         || (ARRAY['blue','green','red','black','white','grey','pink'])[1 + m.id %% 7] || '. Your reference is R'
         || m.id || '.',
       1, m.received_at + interval '1 second', m.received_at, '',
       CASE WHEN failed THEN to_char(m.received_at, 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
            || ' attempt=1 phase=send (#131026) Message undeliverable' ELSE '' END,
       CASE WHEN failed THEN '' ELSE 'wamid.OUT' || lpad(m.id::text, 10, '0') END,
       CASE WHEN failed THEN NULL ELSE m.received_at + interval '4 seconds' END,
       CASE WHEN failed THEN '' ELSE 'accepted' END,
       CASE WHEN failed THEN '' WHEN m.id %% 3 = 0 THEN 'delivered' ELSE 'read' END,
       CASE WHEN failed THEN NULL ELSE m.received_at + interval '30 seconds' END, '',
       m.received_at, m.received_at + interval '4 seconds', m.contact_id, m.id, 'BOT', '[]'::jsonb,
       CASE WHEN failed THEN 'send' ELSE '' END, CASE WHEN failed THEN 131026 END,
       m.received_at + interval '1 second', m.received_at + interval '3 seconds', 1200, 80, 0
FROM (SELECT *, id %% 50 = 0 AS failed FROM webhooks_inboundmessage) AS m;

UPDATE webhooks_contact c SET last_inbound_at = m.last
FROM (SELECT contact_id, max(timestamp) AS last FROM webhooks_inboundmessage GROUP BY contact_id) AS m
WHERE m.contact_id = c.id;

SELECT setval(pg_get_serial_sequence('webhooks_contact', 'id'), %(contacts)s);
SELECT setval(pg_get_serial_sequence('webhooks_inboundmessage', 'id'), %(messages)s);
SELECT setval(pg_get_serial_sequence('outbound_outboundjob', 'id'), %(messages)s);
"""


@dataclass(frozen=True)
class Timing:
    name: str
    path: str
    median_ms: float
    max_ms: float
    queries: int
    db_ms: float
    status: int


def seed(*, contacts: int, messages: int) -> float:
    """Fill the three tables with SQL (Django set up); returns the seconds it took, ANALYZE included."""
    from django.db import connection

    from outbound.numbers import EXAMPLE_PHONE_NUMBER_ID, default_phone_number_id

    # Every seeded contact writes to the first configured business number.
    params = {"phone_number_id": default_phone_number_id() or EXAMPLE_PHONE_NUMBER_ID}
    started = time.monotonic()
    tables = ["webhooks_contact", "webhooks_inboundmessage", "outbound_outboundjob"]
    with connection.cursor() as cursor:
        # Bulk load: drop the secondary indexes (not those of constraints), insert, build them again at the end,
        # which is many times faster than maintaining them row by row (the trigram ones above all).
        cursor.execute(
            "SELECT i.indexname, i.indexdef FROM pg_indexes i WHERE i.tablename = ANY(%s) AND NOT EXISTS "
            "(SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)",
            [tables],
        )
        indexes = cursor.fetchall()
        for name, _ in indexes:
            cursor.execute(f'DROP INDEX "{name}"')
        for statement in SEED_SQL.split(";\n"):
            if statement.strip():
                cursor.execute(statement, {**params, "contacts": contacts, "messages": messages})
        print(
            f"  rows inserted in {time.monotonic() - started:.1f} s; building {len(indexes)} indexes",
            flush=True,
        )
        cursor.execute("SET maintenance_work_mem = '256MB'")
        for _, definition in indexes:
            cursor.execute(definition)
        # As autovacuum leaves a live table: statistics and the visibility map (index-only scans).
        cursor.execute("VACUUM ANALYZE")
    return time.monotonic() - started


def pages(*, contacts: int, messages: int) -> list[tuple[str, str]]:
    """(name, path) of every page staff use, with search terms that exist in the seeded data."""
    from outbound.models import Contact

    some = messages * 2 // 3
    contact = Contact.objects.get(pk=contacts // 2)
    jobs = "/admin/outbound/outboundjob/"
    return [
        ("index", "/admin/"),
        ("job list", jobs),
        ("job list: FAILED", f"{jobs}?status__exact=FAILED"),
        ("job list: delivered", f"{jobs}?delivery_status__exact=delivered"),
        ("job list: staff replies", f"{jobs}?kind__exact=STAFF"),
        ("job list: business number", f"{jobs}?number={contact.phone_number_id}"),
        ("job list: templates", f"{jobs}?send_as__exact=TEMPLATE"),
        ("job search: number", f"{jobs}?q={contact.wa_id}"),
        ("job search: name", f"{jobs}?q={contact.profile_name.replace(' ', '+')}"),
        ("job search: our wamid", f"{jobs}?q=wamid.OUT{some + 1:010d}"),
        ("job search: their wamid", f"{jobs}?q=wamid.IN{some + 1:010d}"),
        ("job search: words", f"{jobs}?q=R{some + 1}"),
        ("job search: common words", f"{jobs}?q=comes+in+blue"),
        ("job page", f"{jobs}{some + 1}/change/"),
        ("contact list", "/admin/outbound/contact/"),
        ("contact list: opted out", "/admin/outbound/contact/?opted=out"),
        ("contact list: bot paused", "/admin/outbound/contact/?bot=paused"),
        ("contact search: number", f"/admin/outbound/contact/?q={contact.wa_id}"),
        ("contact search: name", f"/admin/outbound/contact/?q={contact.profile_name.split()[-1]}"),
        ("contact page", f"/admin/outbound/contact/{contact.pk}/change/"),
        ("inbound list", "/admin/outbound/inboundmessage/"),
        ("inbound list: media gone", "/admin/outbound/inboundmessage/?media_status__exact=GONE"),
        ("inbound search: wamid", f"/admin/outbound/inboundmessage/?q=wamid.IN{some + 2:010d}"),
        ("inbound search: words", f"/admin/outbound/inboundmessage/?q={_md5(some + 2)}"),
        ("inbound page", f"/admin/outbound/inboundmessage/{some + 2}/change/"),
        ("/metrics (Prometheus)", "/metrics"),
    ]


def _md5(i: int) -> str:
    import hashlib

    return hashlib.md5(str(i).encode(), usedforsecurity=False).hexdigest()


def time_pages(targets: list[tuple[str, str]], *, repeat: int) -> list[Timing]:
    from django.contrib.auth.models import User
    from django.db import connection
    from django.test import Client

    user = User.objects.filter(username="bench-admin").first() or User.objects.create_superuser(
        "bench-admin", "bench@example.com", "bench-admin-password-0123456789"
    )
    client = Client(HTTP_HOST="localhost", HTTP_AUTHORIZATION=f"Bearer {METRICS_TOKEN}")
    client.force_login(user)
    timings = []
    for name, path in targets:
        response = client.get(path)  # warm: caches, plans, the first connection
        statements: list[float] = []  # milliseconds per statement

        def count(
            execute: Any,
            sql: str,
            params: Any,
            many: bool,
            context: Any,
            statements: list[float] = statements,
        ) -> Any:
            started = time.perf_counter()
            try:
                return execute(sql, params, many, context)
            finally:
                statements.append((time.perf_counter() - started) * 1000)

        with connection.execute_wrapper(count):
            client.get(path)
        samples = []
        for _ in range(repeat):
            started = time.perf_counter()
            response = client.get(path)
            samples.append((time.perf_counter() - started) * 1000)
        timing = Timing(
            name,
            path,
            statistics.median(samples),
            max(samples),
            len(statements),
            sum(statements),
            response.status_code,
        )
        print(
            f"  {name:<26} {timing.median_ms:8.1f} ms  (max {timing.max_ms:7.1f})  {timing.queries:3d} queries"
            f" {timing.db_ms:6.1f} ms in the database  {timing.status}",
            flush=True,
        )
        timings.append(timing)
    return timings


def table(timings: list[Timing], *, volume: str) -> str:
    lines = [
        f"Admin pages at {volume} (median of the timed requests, ms; goal < {GOAL_MS:.0f} ms)",
        "",
        "| page | median ms | max ms | queries | database ms | goal |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for t in timings:
        verdict = "met" if t.median_ms < GOAL_MS else "MISSED"
        lines.append(
            f"| {t.name} | {t.median_ms:.0f} | {t.max_ms:.0f} | {t.queries} | {t.db_ms:.0f} | {verdict} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--short", action="store_true", help="small volume for CI; never fails on speed")
    parser.add_argument("--reuse", action="store_true", help="keep the seeded database of the last run")
    parser.add_argument("--repeat", type=int, default=5, help="timed requests per page (default 5)")
    parser.add_argument("--json", type=Path, help="also write the figures here (bench.run_all reads them)")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    contacts, messages = (2_000, 20_000) if args.short else (100_000, 1_000_000)

    sys.path.insert(0, str(REPO))
    from bench import harness

    base = os.environ.get("DATABASE_URL", "")
    if base.startswith(("postgres://", "postgresql://")):
        url = harness.with_db_name(base, f"{harness.db_name(base) or 'wa_bench'}_admin")
    else:
        url = DEFAULT_DATABASE_URL
    env = harness.production_env(database_url=url)
    os.environ.update({k: v for k, v in env.items() if k not in ("PATH", "HOME")})
    volume = f"{messages:,} jobs, {messages:,} inbound messages, {contacts:,} contacts"
    print(f"admin_speed: {volume} on {harness.db_name(url)}", flush=True)
    if not args.reuse:
        harness.recreate_database(url)
        harness.manage(["migrate", "--noinput"], env=env, timeout=600)

    import django
    from django.test.utils import override_settings

    django.setup()
    # Production settings (DEBUG off) but plain static URLs: the manifest would need `collectstatic` first.
    override_settings(
        METRICS_TOKEN=METRICS_TOKEN,
        STORAGES={
            "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
            "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
        },
    ).enable()
    if not args.reuse:
        print(f"  seeded in {seed(contacts=contacts, messages=messages):.1f} s", flush=True)
    timings = time_pages(pages(contacts=contacts, messages=messages), repeat=args.repeat)
    print()
    print(table(timings, volume=volume))
    if args.json:
        args.json.write_text(json.dumps([t.__dict__ for t in timings], indent=2))
    broken = [t for t in timings if t.status != 200]
    for t in broken:
        print(f"PROBLEM: {t.name} ({t.path}) answered {t.status}", flush=True)
    return 1 if broken else 0


def rows_for_report(path: Path) -> list[dict[str, Any]]:
    """The figures a --json run wrote."""
    return list(json.loads(path.read_text()))


if __name__ == "__main__":
    sys.exit(main())
