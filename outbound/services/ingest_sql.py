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

A contact is keyed per business number (`phone_number_id`, then `wa_id` or `user_id`), as in the ORM path.
Only for POSTs whose senders all come with a number (and usually their business-scoped user id too), or all
with a user id alone, and at most `MAX_MESSAGES` messages, and without BSUID changes (`user_changed_user_id`);
mixed POSTs and big replays take the ORM path. A user id is learned when the contact has none; when another
contact of the number holds it (a customer known by BSUID alone and by phone number alone, to be merged), or
the contact known by its user id alone now comes with its number, the statement fails on the UNIQUE
(number, user id) key, nothing is stored, and the caller takes the ORM path, which attaches or merges.
The columns and their values come from the models' fields (defaults, `auto_now`, JSON), so a field added
later is written here too.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connection, connections, models
from django.utils import timezone
from psycopg import sql as psycopg_sql

from outbound.inbound import ParsedMessage
from outbound.models import Contact, InboundMessage, OutboundJob
from outbound.wakeup import CHANNEL

# Ten parameters per message and one per contact column: far below PostgreSQL's 65535, and big replays after
# an outage (up to 1000 messages a POST) keep the ORM's bulk path.
MAX_MESSAGES = 500


def fits(messages: Sequence[ParsedMessage]) -> bool:
    """Whether `store_messages` can take these messages: PostgreSQL, and every sender with a number, or none."""
    return (
        connection.vendor == "postgresql"
        and 0 < len(messages) <= MAX_MESSAGES
        and (all(m.wa_id for m in messages) or all(m.user_id and not m.wa_id for m in messages))
        and not any(m.new_user_id for m in messages)
    )


def store_messages(messages: Sequence[ParsedMessage]) -> tuple[int, int]:
    """Store the messages (deduplicated by wamid) with their contacts and jobs; return (new messages, jobs)."""
    by = "wa_id" if messages[0].wa_id else "user_id"
    newest: dict[tuple[str, str], ParsedMessage] = {}
    for message in messages:
        key = (message.phone_number_id, getattr(message, by))
        if key not in newest or message.timestamp >= newest[key].timestamp:
            newest[key] = message
    conn = connections[DEFAULT_DB_ALIAS]
    now = _prepared_now(conn)
    params: list[Any] = []
    # Sorted, so that two POSTs racing over the same contacts lock their rows in the same order.
    for _, m in sorted(newest.items()):
        contact: dict[str, Any] = {
            "phone_number_id": m.phone_number_id,
            "wa_id": m.wa_id,
            "user_id": m.user_id,
            "profile_name": m.profile_name,
            "last_inbound_at": m.timestamp,
        }
        params += _row(Contact, contact, now, conn)
    for m in messages:
        params += [m.phone_number_id, getattr(m, by)]
        given: dict[str, Any] = {
            "wamid": m.wamid,
            "type": m.type,
            "text": m.text,
            "needs_reply": m.needs_reply,
        }
        params += _row(
            InboundMessage, {**given, "timestamp": m.timestamp, "raw": m.raw, **media_fields(m)}, now, conn
        )
    params += _row(OutboundJob, {}, now, conn)
    conn.ensure_connection()
    with conn.cursor() as cursor:
        cursor.execute(_statement(by, len(newest), len(messages)), params)
        new_messages, jobs, _ = cursor.fetchone()
    return int(new_messages), int(jobs)


# What a row's columns are and what the ORM would write into those the caller does not give. The columns a
# message brings (`_GIVEN`) are parameters, prepared as `Model.save()` would (JSON, for one); so are "now"
# (auto_now/auto_now_add fields and timezone.now defaults) and other callable defaults (called for each row,
# as the ORM does). Every other column takes its field's constant default, prepared for the database once and
# written into the statement as a literal by psycopg's own quoting. That keeps a one-message POST under
# psycopg's limits for caching a statement's parsing (50 parameters, 4096 characters): parsed once per
# process instead of on every POST, which was a fifth of the POST's CPU.
_NOW = object()
_CALL = object()  # a callable default other than "now": called for each row, as the ORM does
_EXCLUDED = {
    Contact: frozenset(),
    InboundMessage: frozenset({"contact_id"}),
    OutboundJob: frozenset({"key", "contact_id", "inbound_message_id"}),
}
_GIVEN = {
    Contact: frozenset({"phone_number_id", "wa_id", "user_id", "profile_name", "last_inbound_at"}),
    InboundMessage: frozenset(
        {"wamid", "type", "text", "needs_reply", "timestamp", "raw"}
        | {"media_id", "media_mime_type", "media_sha256", "media_caption"}
    ),
    OutboundJob: frozenset(),
}


def _row(model: type[models.Model], given: dict[str, Any], now: Any, conn: Any) -> list[Any]:
    """The parameters of one row: the given columns (a column left out takes its default), then "now"s and
    callable defaults, in the fields' order (the order `_values` writes their placeholders in).

    `now` comes prepared for the database (`_prepared_now`: once per POST, not once per column).
    """
    if not given.keys() <= _GIVEN[model]:
        # A column given here but not in _GIVEN would silently be written as its default.
        raise ValueError(f"{model.__name__}: add {sorted(given.keys() - _GIVEN[model])} to _GIVEN")
    row: list[Any] = []
    for f, default in zip(_fields(model, _EXCLUDED[model]), _defaults(model, conn.alias), strict=True):
        if f.attname in _GIVEN[model]:
            value = given[f.attname] if f.attname in given else f.get_default()
            # Text into a text column and a flag into a boolean one are what get_db_prep_save would return
            # them as; the other values (times, JSON) go through it.
            plain = (type(value) is str and isinstance(f, _TEXT_FIELDS)) or (
                type(value) is bool and isinstance(f, models.BooleanField)
            )
            row.append(value if plain else f.get_db_prep_save(value, conn))
        elif default is _NOW:
            row.append(now)
        elif default is _CALL:
            row.append(f.get_db_prep_save(f.get_default(), conn))
    return row


_TEXT_FIELDS = (models.CharField, models.TextField)
_DATETIME = models.DateTimeField()


def _prepared_now(conn: Any) -> Any:
    """timezone.now() as every auto_now/auto_now_add column of the statement writes it."""
    return _DATETIME.get_db_prep_save(timezone.now(), conn)


@functools.cache
def _defaults(model: type[models.Model], alias: str) -> list[Any]:
    """Per field: _NOW, _CALL, or the constant default prepared for the database."""
    conn = connections[alias]
    defaults: list[Any] = []
    for f in _fields(model, _EXCLUDED[model]):
        if getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False) or f.default is timezone.now:
            defaults.append(_NOW)
        elif f.has_default() and callable(f.default):
            defaults.append(_CALL)
        else:
            defaults.append(f.get_db_prep_save(f.get_default(), conn))
    return defaults


def _values(model: type[models.Model], conn: Any, *, cast: bool) -> str:
    """One row's values in the fields' order: a placeholder for each parameter `_row` gives, a literal for
    each constant default; each cast to its column's type where PostgreSQL cannot infer it (`cast`)."""
    parts = []
    for f, default in zip(_fields(model, _EXCLUDED[model]), _defaults(model, conn.alias), strict=True):
        if f.attname in _GIVEN[model] or default is _NOW or default is _CALL:
            value = "%s"
        else:
            value = psycopg_sql.Literal(default).as_string(conn.connection).replace("%", "%%")
        parts.append(f"CAST({value} AS {f.db_type(conn)})" if cast else value)
    return ", ".join(parts)


@functools.lru_cache(maxsize=64)
def _statement(by: str, contacts: int, messages: int) -> str:
    """The statement for this many contacts and messages (built once per shape: a POST is nearly always one
    message, and building it costs more than running it)."""
    conn = connections[DEFAULT_DB_ALIAS]
    conn.ensure_connection()
    q = conn.ops.quote_name
    message_fields = _fields(InboundMessage, _EXCLUDED[InboundMessage])
    contact_row = f"({_values(Contact, conn, cast=False)})"
    # Outside an INSERT's own VALUES (a VALUES list in FROM, a SELECT list) PostgreSQL cannot infer the
    # columns' types, so there each value is cast to its column's type.
    message_row = f"(CAST(%s AS text), CAST(%s AS text), {_values(InboundMessage, conn, cast=True)})"
    # Only identifiers (the models' tables and columns, quoted), placeholders and the fields' constant
    # defaults (quoted by psycopg) are formatted into the SQL; every value a webhook brings is a parameter.
    learn = ""
    if by == "wa_id":
        # A user id is learned once. Another contact of the number holding it fails the statement (UNIQUE):
        # the ORM path then merges the two, or leaves the id with the other one.
        learn = "user_id = COALESCE(t.user_id, EXCLUDED.user_id),"
    # The template's layout is for reading; its runs of spaces are collapsed before any value goes in (a
    # shorter text is what lets psycopg cache the parsing, see above).
    template = """
        WITH c AS (
            INSERT INTO {contacts_table} AS t ({contact_names})
            VALUES {contact_rows}
            ON CONFLICT (phone_number_id, {by}) DO UPDATE SET
                last_inbound_at = GREATEST(
                    COALESCE(t.last_inbound_at, EXCLUDED.last_inbound_at), EXCLUDED.last_inbound_at
                ),
                profile_name = CASE
                    WHEN EXCLUDED.profile_name <> ''
                         AND (t.last_inbound_at IS NULL OR t.last_inbound_at <= EXCLUDED.last_inbound_at)
                    THEN EXCLUDED.profile_name ELSE t.profile_name END,
                {learn}
                updated_at = EXCLUDED.updated_at
            RETURNING id, phone_number_id AS number, {by} AS sender
        ), m AS (
            INSERT INTO {messages_table} (contact_id, {message_names})
            SELECT c.id, {message_values}
            FROM (VALUES {message_rows}) AS v(number, sender, {message_names})
            JOIN c ON c.number = v.number AND c.sender = v.sender
            ON CONFLICT (wamid) DO NOTHING
            RETURNING id, contact_id, needs_reply
        ), j AS (
            INSERT INTO {jobs_table} (key, contact_id, inbound_message_id, {job_names})
            SELECT gen_random_uuid(), m.contact_id, m.id, {job_values}
            FROM m WHERE m.needs_reply
            ON CONFLICT (inbound_message_id) DO NOTHING
            RETURNING id
        )
        SELECT (SELECT count(*) FROM m),
               (SELECT count(*) FROM j),
               (SELECT count(*) FROM (SELECT pg_notify('{channel}', '') FROM j LIMIT 1) AS n)
    """
    return " ".join(template.split()).format(
        contacts_table=q(Contact._meta.db_table),
        contact_names=_names(_fields(Contact, _EXCLUDED[Contact]), conn),
        contact_rows=", ".join([contact_row] * contacts),
        by=by,
        learn=learn,
        messages_table=q(InboundMessage._meta.db_table),
        message_names=_names(message_fields, conn),
        message_values=", ".join(f"v.{q(_column(f))}" for f in message_fields),
        message_rows=", ".join([message_row] * messages),
        jobs_table=q(OutboundJob._meta.db_table),
        job_names=_names(_fields(OutboundJob, _EXCLUDED[OutboundJob]), conn),
        job_values=_values(OutboundJob, conn, cast=True),
        channel=CHANNEL,
    )


@functools.cache
def _fields(model: type[models.Model], exclude: frozenset[str] = frozenset()) -> list[models.Field]:
    return [f for f in model._meta.concrete_fields if not f.primary_key and f.attname not in exclude]


def _names(fields: list[models.Field], conn: Any) -> str:
    return ", ".join(conn.ops.quote_name(_column(f)) for f in fields)


def _column(field: models.Field) -> str:
    """A concrete field's column (only virtual fields have none, and `_fields` takes concrete ones)."""
    return str(field.column)


def media_fields(message: ParsedMessage) -> dict[str, str]:
    """The media columns of an inbound message (empty for a message without media)."""
    media = message.media
    if media is None:
        return {}
    return {
        "media_id": media.id,
        "media_mime_type": media.mime_type,
        "media_sha256": media.sha256,
        "media_caption": media.caption,
    }
