"""A webhook's messages stored in one statement on PostgreSQL: contacts, messages, jobs and the workers' NOTIFY.

The ORM path (`outbound.services.ingest`) takes about ten round trips through the ORM for one message, which
made a POST cost six times the verification GET. Here the same guarantees are one INSERT ... ON CONFLICT per
table, chained in one statement (data-modifying CTEs), so one round trip and one implicit transaction:

- contacts (by number): inserted, or moved forward: `last_inbound_at` only ever grows, and the profile name is
  taken only from a message at least as new as the row's (decided on the row, so racing POSTs and late
  redeliveries cannot move either back);
- messages: deduplicated by the UNIQUE wamid (a redelivery inserts nothing, and so gets no job);
- jobs: one per new message that needs a reply (the UNIQUE job-per-message settles races);
- `pg_notify` when a job was created, delivered on commit.

Only for POSTs whose senders all come with a number (and usually their business-scoped user id too), or all
with a user id alone, and at most `MAX_MESSAGES` messages; mixed POSTs and big replays take the ORM path. A user
id is learned (as the ORM path does) unless another contact holds it; the rare contact known by its user id
alone that now comes with its number makes the statement fail on the user id's UNIQUE index, and the caller
then takes the ORM path, which handles every case.
The columns and their values come from the models' fields (defaults, `auto_now`, JSON), so a field added
later is written here too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db import connection, models

from outbound.inbound import ParsedMessage
from outbound.models import Contact, InboundMessage, OutboundJob
from outbound.wakeup import CHANNEL

# Nine parameters per message and one per contact column: far below PostgreSQL's 65535, and big replays after
# an outage (up to 1000 messages a POST) keep the ORM's bulk path.
MAX_MESSAGES = 500


def fits(messages: Sequence[ParsedMessage]) -> bool:
    """Whether `store_messages` can take these messages: PostgreSQL, and every sender with a number, or none."""
    return (
        connection.vendor == "postgresql"
        and 0 < len(messages) <= MAX_MESSAGES
        and (all(m.wa_id for m in messages) or all(m.user_id and not m.wa_id for m in messages))
    )


def store_messages(messages: Sequence[ParsedMessage]) -> tuple[int, int]:
    """Store the messages (deduplicated by wamid) with their contacts and jobs; return (new messages, jobs)."""
    by = "wa_id" if messages[0].wa_id else "user_id"
    newest: dict[str, ParsedMessage] = {}
    for message in messages:
        key = getattr(message, by)
        if key not in newest or message.timestamp >= newest[key].timestamp:
            newest[key] = message
    # Sorted, so that two POSTs racing over the same contacts lock their rows in the same order.
    contacts = [
        Contact(wa_id=m.wa_id, user_id=m.user_id, profile_name=m.profile_name, last_inbound_at=m.timestamp)
        for _, m in sorted(newest.items())
    ]
    inbound = [
        InboundMessage(
            wamid=m.wamid,
            type=m.type,
            text=m.text,
            needs_reply=m.needs_reply,
            timestamp=m.timestamp,
            raw=m.raw,
        )
        for m in messages
    ]
    contact_fields = _fields(Contact)
    message_fields = _fields(InboundMessage, exclude={"contact_id"})
    job_fields = _fields(OutboundJob, exclude={"key", "contact_id", "inbound_message_id"})
    job = OutboundJob()
    params: list[Any] = []
    contact_rows = ", ".join(_placeholders(contact, contact_fields, params) for contact in contacts)
    message_rows = ", ".join(
        _placeholders(row, message_fields, params, casts=True, lead=getattr(m, by))
        for m, row in zip(messages, inbound, strict=True)
    )
    job_values = _placeholders(job, job_fields, params, casts=True)[1:-1]
    q = connection.ops.quote_name
    learn = ""
    # Only identifiers (the models' tables and columns, quoted) and placeholders are formatted into the SQL;
    # every value is a parameter.
    if by == "wa_id":
        # A user id is learned once, unless another contact already holds it (then it stays with that one).
        learn = f"""user_id = COALESCE(t.user_id, CASE WHEN NOT EXISTS (
                    SELECT 1 FROM {q(Contact._meta.db_table)} AS o WHERE o.user_id = EXCLUDED.user_id
                ) THEN EXCLUDED.user_id END),"""  # noqa: S608
    sql = f"""
        WITH c AS (
            INSERT INTO {q(Contact._meta.db_table)} AS t ({_names(contact_fields)})
            VALUES {contact_rows}
            ON CONFLICT ({by}) DO UPDATE SET
                last_inbound_at = GREATEST(
                    COALESCE(t.last_inbound_at, EXCLUDED.last_inbound_at), EXCLUDED.last_inbound_at
                ),
                profile_name = CASE
                    WHEN EXCLUDED.profile_name <> ''
                         AND (t.last_inbound_at IS NULL OR t.last_inbound_at <= EXCLUDED.last_inbound_at)
                    THEN EXCLUDED.profile_name ELSE t.profile_name END,
                {learn}
                updated_at = EXCLUDED.updated_at
            RETURNING id, {by} AS sender
        ), m AS (
            INSERT INTO {q(InboundMessage._meta.db_table)} (contact_id, {_names(message_fields)})
            SELECT c.id, {", ".join(f"v.{q(_column(f))}" for f in message_fields)}
            FROM (VALUES {message_rows}) AS v(sender, {_names(message_fields)})
            JOIN c ON c.sender = v.sender
            ON CONFLICT (wamid) DO NOTHING
            RETURNING id, contact_id, needs_reply
        ), j AS (
            INSERT INTO {q(OutboundJob._meta.db_table)} (key, contact_id, inbound_message_id, {_names(job_fields)})
            SELECT gen_random_uuid(), m.contact_id, m.id, {job_values}
            FROM m WHERE m.needs_reply
            ON CONFLICT (inbound_message_id) DO NOTHING
            RETURNING id
        )
        SELECT (SELECT count(*) FROM m),
               (SELECT count(*) FROM j),
               (SELECT count(*) FROM (SELECT pg_notify('{CHANNEL}', '') FROM j LIMIT 1) AS n)
    """  # noqa: S608
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        new_messages, jobs, _ = cursor.fetchone()
    return int(new_messages), int(jobs)


def _fields(
    model: type[models.Model], exclude: frozenset[str] | set[str] = frozenset()
) -> list[models.Field]:
    return [f for f in model._meta.concrete_fields if not f.primary_key and f.attname not in exclude]


def _names(fields: list[models.Field]) -> str:
    return ", ".join(connection.ops.quote_name(_column(f)) for f in fields)


def _placeholders(
    obj: models.Model,
    fields: list[models.Field],
    params: list[Any],
    *,
    casts: bool = False,
    lead: str | None = None,
) -> str:
    """One row of values as the ORM would save `obj` (defaults, auto_now, JSON), appended to `params`.

    Outside an INSERT's own VALUES (a VALUES list in FROM, a SELECT list) PostgreSQL cannot infer the
    columns' types, so there each value is cast to its column's type.
    """
    cells = []
    if lead is not None:
        params.append(lead)
        cells.append("CAST(%s AS text)")
    for f in fields:
        params.append(f.get_db_prep_save(f.pre_save(obj, add=True), connection))
        cells.append(f"CAST(%s AS {f.db_type(connection)})" if casts else "%s")
    return f"({', '.join(cells)})"


def _column(field: models.Field) -> str:
    """A concrete field's column (only virtual fields have none, and `_fields` takes concrete ones)."""
    return str(field.column)
