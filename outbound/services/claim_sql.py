"""The worker's claim on PostgreSQL in one round trip: two hand-written statements instead of ~8 ORM queries.

The ORM path (`outbound.services.claims`) compiled eight queries for every claim, about 40% of the worker's
CPU per job. Here the same steps are plain SQL, built once, sent together in one Query message (the simple
protocol: Django's psycopg cursor binds parameters client-side unless `server_side_binding` is set, which the
system check outbound.E011 refuses), which PostgreSQL runs as one implicit transaction, or inside the caller's:

1. the due candidates (the ORM's `claimable()`: open, unclaimed, due, not held by a paused bot, no job of the
   contact in flight; `exclude_ids` left out), the `limit * 4` oldest, locked with their contacts,
   FOR UPDATE SKIP LOCKED; the locked contacts, in candidate order, are kept in a transaction-local setting;
2. for the first `limit` of those contacts with no job in flight: lock all their open unclaimed jobs (SKIP
   LOCKED; a contact with one row held elsewhere is left for another round), fold them as `_fold` does
   (a person's job goes first, alone, oldest first; otherwise the newest bot job is kept and the older ones
   are SUPERSEDED by it), claim the kept job if it is due and not excluded, and return it with its contact's
   and message's columns, plus one row per superseded job for its log line.

Why two statements and not one: in READ COMMITTED every statement reads one snapshot, taken when it starts.
"No job of this contact in flight" must be read after the contact's lock is held: a claimer that committed a
claim of the contact (a staff reply, say, that came in after our snapshot) between our snapshot and our lock
would be invisible to a single statement, and we would take a second job of the same contact. The second
statement starts after the first one's locks are held, so its snapshot sees every claim of these contacts that
committed (any later one would need the contact locks we hold). The setting carries the locked contacts from
the first statement to the second without a second round trip; it ends with the transaction.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections, models, transaction
from django.utils import timezone

from outbound.exceptions import ConfigurationError
from outbound.models import Contact, InboundMessage, OutboundJob
from outbound.models.states import CLAIMABLE_STATUSES, SENT_WHILE_PAUSED, Event, JobKind, JobStatus

# OutboundJob._transition's logger and line: the claim's lines read and route exactly as they did.
transition_logger = logging.getLogger("outbound.models.jobs")
TRANSITION_LINE = "job_transition event=%s job_id=%s contact_id=%s from=%s to=%s attempt=%s send_as=%s %s"

# The transaction-local setting that carries the first statement's locked contacts to the second.
CONTACTS_SETTING = "outbound.claim_contacts"

# The superseded rows fill these of the job's columns (the rest are NULL): what their log line needs.
_SUPERSEDED_COLUMNS = ("id", "contact_id", "status", "attempts", "send_as", "superseded_by_id")

Converter = Callable[[Any, Any, Any], Any]


def claim_jobs(*, limit: int, worker_id: str, now: datetime, exclude_ids: Iterable[int]) -> list[OutboundJob]:
    """`outbound_jobs_claim` on PostgreSQL: the same jobs, with `.contact` and `.inbound_message` loaded."""
    conn = connections[DEFAULT_DB_ALIAS]
    exclude = sorted(set(exclude_ids))
    statement = _statement(conn.alias)
    # As QuerySet.update does: a failure marks a caller's atomic block for rollback.
    with transaction.mark_for_rollback_on_error(using=conn.alias), conn.cursor() as cursor:
        _require_read_committed(conn, cursor)
        cursor.execute(
            statement.sql,
            [
                *candidates_params(limit=limit, now=now, exclude=exclude),
                *claim_params(limit=limit, worker_id=worker_id, now=now, exclude=exclude),
            ],
        )
        cursor.nextset()  # the first result is the setting's value
        return read_claim_rows(cursor.fetchall())


def _require_read_committed(conn: Any, cursor: Any) -> None:
    """Once per database connection: refuse to claim under any isolation level but READ COMMITTED.

    The second statement must see what other claims committed after the first one's snapshot. Check
    outbound.E011 refuses a level set in DATABASES' OPTIONS; this catches one set on the server, the database
    or the role (`default_transaction_isolation`), which no setting of ours shows. The connection checked is
    remembered on Django's wrapper (one per thread), so a reconnection is checked again.
    """
    if getattr(conn, "_outbound_read_committed", None) is conn.connection:
        return
    cursor.execute("SELECT current_setting('transaction_isolation')")
    (level,) = cursor.fetchone()
    if level != "read committed":
        raise ConfigurationError(
            f"PostgreSQL runs this connection at isolation level {level!r} (default_transaction_isolation of"
            " the server, database or role): the worker's claim needs 'read committed', PostgreSQL's default"
        )
    conn._outbound_read_committed = conn.connection


def candidates_params(*, limit: int, now: datetime, exclude: list[int]) -> list[Any]:
    """Statement 1's parameters."""
    hours = settings.OUTBOUND_HANDOFF_HOURS
    return [now, exclude, hours <= 0, now - timedelta(hours=max(hours, 0)), limit * 4]


def claim_params(*, limit: int, worker_id: str, now: datetime, exclude: list[int]) -> list[Any]:
    """Statement 2's parameters."""
    updated_at = timezone.now()
    return [limit, updated_at, now, worker_id[:128], now, now, updated_at, now, exclude]


def read_claim_rows(rows: Iterable[Sequence[Any]]) -> list[OutboundJob]:
    """Statement 2's rows: the claimed jobs (their transition lines logged), and the superseded ones' lines."""
    conn = connections[DEFAULT_DB_ALIAS]
    statement = _statement(conn.alias)
    claimed: list[OutboundJob] = []
    for row in rows:
        if row[0]:
            claimed.append(_claimed_job(statement, conn, row))
        else:
            _log_superseded(statement, row)
    return claimed


class _Statement:
    """The SQL and where each model's columns sit in its result rows (with their database converters)."""

    def __init__(self, alias: str) -> None:
        conn = connections[alias]
        self.alias = alias
        self.job = _Columns(OutboundJob, start=3, conn=conn)
        self.contact = _Columns(Contact, start=self.job.end, conn=conn)
        self.message = _Columns(InboundMessage, start=self.contact.end, conn=conn)
        self.candidates_sql = _candidates_sql(conn)
        self.claim_sql = _claim_sql(conn, self)
        # One Query message, two statements: one round trip, one implicit transaction (or the caller's).
        self.sql = f"{self.candidates_sql};\n{self.claim_sql}"


class _Columns:
    """One model's concrete fields, read from `row[start:end]`."""

    def __init__(self, model: type[models.Model], *, start: int, conn: Any) -> None:
        self.model = model
        self.fields = list(model._meta.concrete_fields)
        self.names = [str(f.column) for f in self.fields]
        self.attnames = [f.attname for f in self.fields]
        self.start, self.end = start, start + len(self.fields)
        # As the ORM's compiler does: the backend's converters, then the field's (JSON is parsed here).
        self.converters: list[tuple[int, list[Converter], Any]] = []
        for i, field in enumerate(self.fields):
            col = field.get_col(model._meta.db_table)
            convs = [*conn.ops.get_db_converters(col), *col.get_db_converters(conn)]
            if convs:
                self.converters.append((i, convs, col))

    def instance(self, row: Sequence[Any], conn: Any) -> Any:
        values = list(row[self.start : self.end])
        for i, convs, col in self.converters:
            value = values[i]
            for convert in convs:
                value = convert(value, col, conn)
            values[i] = value
        return self.model.from_db(conn.alias, self.attnames, values)


@functools.cache
def _statement(alias: str) -> _Statement:
    return _Statement(alias)


def _literals(values: Iterable[str]) -> str:
    """Our own enum values as SQL string literals (upper-case words: nothing to escape)."""
    out = []
    for value in sorted(getattr(v, "value", v) for v in values):
        if not value.replace("_", "").isalnum():
            raise ValueError(f"not a plain enum value: {value!r}")
        out.append(f"'{value}'")
    return ", ".join(out)


def _candidates_sql(conn: Any) -> str:
    """Statement 1: lock the due candidates and their contacts; keep the contacts, in order, in the setting.

    The ORM's `claimable(now)` (queries.py): the same predicates, the same order and window, and the same
    locks (its FOR UPDATE without OF locked the contact rows it joined, too).
    """
    q = conn.ops.quote_name
    jobs, contacts = q(OutboundJob._meta.db_table), q(Contact._meta.db_table)
    claimable = _literals(CLAIMABLE_STATUSES)
    # `not_held`: a paused contact's bot replies wait for a person. Paused: `bot_paused_q` (contacts.py), its
    # expiry a parameter (true when OUTBOUND_HANDOFF_HOURS <= 0: a pause never expires).
    return f"""
        WITH candidates AS MATERIALIZED (
            SELECT j.id, j.contact_id, j.next_attempt_at
            FROM {jobs} j
            JOIN {contacts} c ON c.id = j.contact_id
            WHERE j.status IN ({claimable})
              AND j.claim_token IS NULL
              AND j.next_attempt_at <= %s
              AND j.id <> ALL (CAST(%s AS bigint[]))
              AND NOT (
                  c.bot_paused_at IS NOT NULL
                  AND (CAST(%s AS boolean) OR COALESCE(c.bot_human_at > %s, false))
                  AND j.kind NOT IN ({_literals(SENT_WHILE_PAUSED)})
              )
              AND NOT EXISTS (
                  SELECT 1 FROM {jobs} b WHERE b.contact_id = j.contact_id AND b.claim_token IS NOT NULL
              )
            ORDER BY j.next_attempt_at, j.id
            LIMIT %s
            FOR UPDATE OF j, c SKIP LOCKED
        )
        SELECT set_config('{CONTACTS_SETTING}', COALESCE(array_agg(contact_id ORDER BY first)::text, '{{}}'), true)
        FROM (
            SELECT contact_id, min(position) AS first
            FROM (
                SELECT contact_id, row_number() OVER (ORDER BY next_attempt_at, id) AS position FROM candidates
            ) AS numbered
            GROUP BY contact_id
        ) AS firsts
    """  # noqa: S608  (identifiers and our enum literals only; every value is a parameter)


def _claim_sql(conn: Any, statement: _Statement) -> str:
    """Statement 2: under the contact locks, with a fresh snapshot: the in-flight check, the fold, the claim."""
    q = conn.ops.quote_name
    jobs, contacts = q(OutboundJob._meta.db_table), q(Contact._meta.db_table)
    messages = q(InboundMessage._meta.db_table)
    claimable = _literals(CLAIMABLE_STATUSES)
    bot = _literals([JobKind.BOT])
    job_columns = ", ".join(f"j.{q(name)}" for name in statement.job.names)
    claimed_columns = ", ".join(f"cl.{q(name)}" for name in statement.job.names)
    superseded_columns = ", ".join(
        f"s.{q(name)}" if name in _SUPERSEDED_COLUMNS else "NULL" for name in statement.job.names
    )
    contact_columns = ", ".join(f"c.{q(name)}" for name in statement.contact.names)
    message_columns = ", ".join(f"m.{q(name)}" for name in statement.message.names)
    nulls = ", ".join(["NULL"] * (len(statement.contact.names) + len(statement.message.names)))
    order_after = statement.message.end + 1  # the superseded rows' message time and id (1-based)
    return f"""
        WITH chosen AS MATERIALIZED (
            SELECT l.contact_id, l.position
            FROM unnest(CAST(current_setting('{CONTACTS_SETTING}') AS bigint[]))
                WITH ORDINALITY AS l(contact_id, position)
            WHERE NOT EXISTS (
                SELECT 1 FROM {jobs} b WHERE b.contact_id = l.contact_id AND b.claim_token IS NOT NULL
            )
            ORDER BY l.position
            LIMIT %s
        ), open_jobs AS MATERIALIZED (
            -- Every open, unclaimed job of these contacts that no one else holds (another claimer may hold some
            -- as its candidates). The message's time orders the fold.
            SELECT j.id, j.contact_id, j.kind, j.status, j.next_attempt_at, j.inbound_message_id,
                   m.timestamp AS message_at
            FROM {jobs} j
            LEFT JOIN {messages} m ON m.id = j.inbound_message_id
            WHERE j.contact_id IN (SELECT contact_id FROM chosen)
              AND j.status IN ({claimable})
              AND j.claim_token IS NULL
            FOR UPDATE OF j SKIP LOCKED
        ), whole AS (
            -- A contact with any open job held elsewhere is left for another round, rather than fold into the
            -- wrong job.
            SELECT o.contact_id
            FROM open_jobs o
            GROUP BY o.contact_id
            HAVING count(*) = (
                SELECT count(*) FROM {jobs} a
                WHERE a.contact_id = o.contact_id AND a.status IN ({claimable}) AND a.claim_token IS NULL
            )
        ), kept AS (
            -- `_fold`: a person's words go first, alone, oldest first; otherwise the newest bot reply.
            SELECT DISTINCT ON (o.contact_id)
                o.contact_id, o.id, o.status, o.next_attempt_at, o.kind NOT IN ({bot}) AS person
            FROM open_jobs o
            JOIN whole w ON w.contact_id = o.contact_id
            ORDER BY o.contact_id,
                     o.kind NOT IN ({bot}) DESC,
                     CASE WHEN o.kind NOT IN ({bot}) THEN o.id END,
                     o.message_at DESC NULLS FIRST,
                     o.inbound_message_id DESC NULLS FIRST,
                     o.id DESC
        ), superseded AS (
            -- One reply answers them all: as `_fold`, even when the kept job is not due yet or excluded.
            UPDATE {jobs} s
            SET status = '{JobStatus.SUPERSEDED.value}', superseded_by_id = k.id, updated_at = %s
            FROM open_jobs o
            JOIN kept k ON k.contact_id = o.contact_id
            WHERE s.id = o.id AND o.id <> k.id AND NOT k.person
              AND s.status IN ({claimable}) AND s.claim_token IS NULL
            RETURNING s.id, s.contact_id, s.status, s.attempts, s.send_as, s.superseded_by_id, o.status AS previous,
                      o.message_at, o.inbound_message_id
        ), claimed AS (
            -- `mark_claimed`: a compare-and-set on a row nobody holds (and that this statement has locked).
            UPDATE {jobs} j
            SET status = CASE WHEN j.status = '{JobStatus.PENDING.value}'
                              THEN '{JobStatus.GENERATING.value}' ELSE '{JobStatus.READY_TO_SEND.value}' END,
                claim_token = gen_random_uuid(),
                claimed_at = %s,
                claimed_by = %s,
                attempts = j.attempts + 1,
                last_attempt_at = %s,
                first_claimed_at = COALESCE(j.first_claimed_at, %s),
                updated_at = %s
            FROM kept k
            WHERE j.id = k.id
              AND k.next_attempt_at <= %s
              AND j.id <> ALL (CAST(%s AS bigint[]))
              AND j.status IN ({claimable})
              AND j.claim_token IS NULL
            RETURNING {job_columns}, k.status AS previous
        )
        SELECT 1, ch.position, cl.previous, {claimed_columns}, {contact_columns}, {message_columns}, NULL, NULL
        FROM claimed cl
        JOIN chosen ch ON ch.contact_id = cl.contact_id
        JOIN {contacts} c ON c.id = cl.contact_id
        LEFT JOIN {messages} m ON m.id = cl.inbound_message_id
        UNION ALL
        SELECT 0, ch.position, s.previous, {superseded_columns}, {nulls}, s.message_at, s.inbound_message_id
        FROM superseded s
        JOIN chosen ch ON ch.contact_id = s.contact_id
        -- The contacts in candidate order; each one's superseded lines first, oldest message first, as the ORM
        -- logged them.
        ORDER BY 2, 1, {order_after}, {order_after + 1}
    """  # noqa: S608  (identifiers and our enum literals only; every value is a parameter)


def _claimed_job(statement: _Statement, conn: Any, row: Sequence[Any]) -> OutboundJob:
    """The claimed job, with its contact and message cached as `select_related` leaves them."""
    job: OutboundJob = statement.job.instance(row, conn)
    contact = statement.contact.instance(row, conn)
    OutboundJob.contact.field.set_cached_value(job, contact)
    message = statement.message.instance(row, conn) if row[statement.message.start] is not None else None
    OutboundJob.inbound_message.field.set_cached_value(job, message)
    if message is not None:
        # The reverse side of the one-to-one, as the ORM's related populator sets it.
        OutboundJob.inbound_message.field.remote_field.set_cached_value(message, job)
    transition_logger.info(
        TRANSITION_LINE,
        Event.CLAIM,
        job.pk,
        job.contact_id,
        row[2],
        job.status,
        job.attempts,
        job.send_as,
        "",
    )
    return job


def _log_superseded(statement: _Statement, row: Sequence[Any]) -> None:
    value = dict(zip(statement.job.names, row[statement.job.start : statement.job.end], strict=True))
    transition_logger.info(
        TRANSITION_LINE,
        Event.SUPERSEDED,
        value["id"],
        value["contact_id"],
        row[2],
        value["status"],
        value["attempts"],
        value["send_as"],
        f"superseded_by={value['superseded_by_id']}",
    )
