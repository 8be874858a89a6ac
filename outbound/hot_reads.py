"""The worker's per-job reads as hand-written SQL: the same rows the ORM queries they replace would read.

Every reply reads the contact's pause and opt-out state, whether the conversation ever held media, the
messages folded into the job, the conversation and the saved prompt. Through the ORM each of those reads
costs 0.6-1.2 ms of CPU to build and compile (about 6 ms a job together); the statements below are the
same SQL written once, so each costs what the database driver does (about 0.2 ms). They are plain SQL that
SQLite and PostgreSQL both run; table and column names come from the models, values are parameters.
`tests/outbound/test_hot_reads.py` checks each against the ORM query it replaces, on both databases.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connection, models

from outbound.models import Contact, InboundMessage, OutboundJob, ReplySettings
from outbound.vocabulary import NO_REPLY_TYPES


def _table(model: type[models.Model]) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def _field(model: type[models.Model], name: str) -> models.Field[Any, Any]:
    field = model._meta.get_field(name)
    if not isinstance(field, models.Field):
        raise TypeError(f"{model.__name__}.{name} is a reverse relation, not a column")
    return field


def _col(model: type[models.Model], name: str) -> str:
    column = _field(model, name).column
    if column is None:
        raise TypeError(f"{model.__name__}.{name} has no column")
    return connection.ops.quote_name(column)


def _fetch(sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


# ---------------------------------------------------------------------------------------------- contact
CONTACT_STATE_FIELDS = ("bot_paused_at", "bot_human_at", "opted_out_at", "opted_out_by")


def contact_state_refresh(contact: Contact) -> bool:
    """Read the contact's pause and opt-out columns (`CONTACT_STATE_FIELDS`) again; False if it is gone.

    Each value goes through the converters the ORM applies to its column (datetimes come back aware on
    SQLite too), without the cost of building a model instance for four columns.
    """
    rows = _fetch(_contact_state_sql(), [contact.pk])
    if not rows:
        return False
    _set_contact_state(contact, rows[0])
    return True


def _set_contact_state(contact: Contact, values: Sequence[Any]) -> None:
    """`CONTACT_STATE_FIELDS`' columns, as read, onto the contact (through the ORM's converters)."""
    for (attname, converters), value in zip(_contact_state_converters(), values, strict=True):
        for convert, expression in converters:
            value = convert(value, expression, connection)
        setattr(contact, attname, value)  # opted_out_by_id: the id, never a query for the user


@functools.cache
def _contact_state_sql() -> str:
    columns = ", ".join(_col(Contact, name) for name in CONTACT_STATE_FIELDS)
    return f"SELECT {columns} FROM {_table(Contact)} WHERE {_col(Contact, 'id')} = %s"


@functools.cache
def _contact_state_converters() -> list[tuple[str, list[tuple[Any, Any]]]]:
    """Per column of `_contact_state_sql`: its attname and the converters the ORM would run on its value
    (the backend's, then the field's), each with the column expression it expects."""
    columns = []
    for name in CONTACT_STATE_FIELDS:
        field = _field(Contact, name)
        column = field.get_col(Contact._meta.db_table)
        converters = connection.ops.get_db_converters(column) + column.get_db_converters(connection)
        columns.append((field.attname, [(convert, column) for convert in converters]))
    return columns


@dataclass(frozen=True)
class BotJobFacts:
    """What a bot reply reads before its model call, besides the contact's state (`bot_job_facts`)."""

    has_media: bool
    """Whether the contact ever sent a message of the media types asked about, with a media id."""
    folded_taps: list[Any]
    """The raw payloads of the interactive messages whose jobs were folded into this job."""


def bot_job_facts(contact: Contact, *, job_id: int, media_types: tuple[str, ...]) -> BotJobFacts | None:
    """`contact_state_refresh`, `contact_has_media` and `folded_interactive_payloads` in one statement (a bot
    reply needs all three, one after the other); None, with nothing refreshed, when the contact is gone.

    One row per folded tap (at least one): the contact's columns and the media flag repeat on each.
    """
    placeholders = ", ".join(["%s"] * len(media_types))
    sql = _bot_job_facts_sql().format(placeholders=placeholders)
    params = [contact.pk, *media_types, job_id, InboundMessage.Type.INTERACTIVE, contact.pk]
    rows = _fetch(sql, params)
    if not rows:
        return None
    width = len(CONTACT_STATE_FIELDS)
    _set_contact_state(contact, rows[0][:width])
    taps = [_json(row[width + 1]) for row in rows if row[width + 1] is not None]
    return BotJobFacts(has_media=bool(rows[0][width]), folded_taps=taps)


@functools.cache
def _bot_job_facts_sql() -> str:
    """The three reads' own statements, composed: the media look as a flag, the folded taps joined (one row
    each, or one row of NULL), on the contact's row."""
    c = Contact
    state = ", ".join(f"c.{_col(c, name)}" for name in CONTACT_STATE_FIELDS)
    return (
        f"SELECT {state}, CASE WHEN EXISTS ({_has_media_sql()}) THEN 1 ELSE 0 END, t.raw"
        f" FROM {_table(c)} c LEFT JOIN ({_folded_interactive_sql()}) t ON 1 = 1 WHERE c.{_col(c, 'id')} = %s"
    )


# ---------------------------------------------------------------------------------------------- media
def contact_has_media(contact_id: int, types: tuple[str, ...]) -> bool:
    """Whether any of the contact's inbound messages is of `types` with a media id (one indexed look)."""
    placeholders = ", ".join(["%s"] * len(types))
    sql = _has_media_sql().format(placeholders=placeholders)
    return bool(_fetch(sql, [contact_id, *types]))


@functools.cache
def _has_media_sql() -> str:
    m = InboundMessage
    return (
        f"SELECT 1 FROM {_table(m)} WHERE {_col(m, 'contact')} = %s AND {_col(m, 'type')} IN ({{placeholders}})"
        f" AND {_col(m, 'media_id')} <> '' LIMIT 1"
    )


# ---------------------------------------------------------------------------------------------- handoff
def folded_interactive_payloads(job_id: int) -> list[Any]:
    """The raw payloads of the interactive messages (button taps) whose jobs were folded into this job."""
    return [
        _json(raw) for (raw,) in _fetch(_folded_interactive_sql(), [job_id, InboundMessage.Type.INTERACTIVE])
    ]


@functools.cache
def _folded_interactive_sql() -> str:
    m, j = InboundMessage, OutboundJob
    return (
        f"SELECT m.{_col(m, 'raw')} FROM {_table(m)} m"
        f" JOIN {_table(j)} j ON j.{_col(j, 'inbound_message')} = m.{_col(m, 'id')}"
        f" WHERE j.{_col(j, 'superseded_by')} = %s AND m.{_col(m, 'type')} = %s"
    )


def _json(value: Any) -> Any:
    # PostgreSQL's jsonb comes back as text through Django's connection (JSONField parses it), as on SQLite.
    if isinstance(value, (str, bytes)):
        return json.loads(value)
    return value


# ---------------------------------------------------------------------------------------------- conversation
def conversation_rows(*, contact_id: int, until: datetime, limit: int) -> list[tuple[str, str, int | None]]:
    """The contact's last `limit` inbound texts up to `until` and last `limit` texts we sent, oldest first:
    (role, text, inbound message id or None).

    Ordered as the conversation happened: by time, a customer's message before our reply at the same
    instant; messages of one side at the same instant newest id first (the order the ORM version gave).
    """
    params = [
        contact_id,
        connection.ops.adapt_datetimefield_value(until),
        *sorted(NO_REPLY_TYPES),
        limit,
        contact_id,
        OutboundJob.Status.SENT,
        OutboundJob.SendAs.TEMPLATE,
        limit,
    ]
    return [(role, text, pk) for role, text, pk in _fetch(_conversation_sql(), params)]


@functools.cache
def _conversation_sql() -> str:
    m, j = InboundMessage, OutboundJob
    no_reply = ", ".join(["%s"] * len(NO_REPLY_TYPES))
    inbound = (
        f"SELECT {_col(m, 'timestamp')} AS at, 0 AS side, 'user' AS role, {_col(m, 'text')} AS body,"
        f" {_col(m, 'id')} AS pk FROM {_table(m)}"
        f" WHERE {_col(m, 'contact')} = %s AND {_col(m, 'timestamp')} <= %s AND {_col(m, 'text')} <> ''"
        f" AND {_col(m, 'type')} NOT IN ({no_reply})"
        f" ORDER BY {_col(m, 'timestamp')} DESC, {_col(m, 'id')} DESC LIMIT %s"
    )
    outbound = (
        f"SELECT {_col(j, 'sent_at')} AS at, 1 AS side, 'assistant' AS role, {_col(j, 'content')} AS body,"
        f" CAST(NULL AS BIGINT) AS pk FROM {_table(j)}"
        f" WHERE {_col(j, 'contact')} = %s AND {_col(j, 'status')} = %s AND {_col(j, 'sent_at')} IS NOT NULL"
        f" AND {_col(j, 'content')} <> '' AND {_col(j, 'send_as')} <> %s"
        f" ORDER BY {_col(j, 'sent_at')} DESC, {_col(j, 'id')} DESC LIMIT %s"
    )
    # Ordered by time without returning it: the driver need not parse a timestamp per row.
    return (
        f"SELECT role, body, pk FROM (SELECT * FROM ({inbound}) i UNION ALL SELECT * FROM ({outbound}) o)"
        " t ORDER BY at, side, pk DESC"
    )


# ---------------------------------------------------------------------------------------------- prompt
def saved_system_prompt() -> str | None:
    """The prompt staff saved in the admin's reply settings (None: no settings row)."""
    rows = _fetch(_prompt_sql(), [ReplySettings.SINGLETON_ID])
    return rows[0][0] if rows else None


@functools.cache
def _prompt_sql() -> str:
    r = ReplySettings
    return f"SELECT {_col(r, 'system_prompt')} FROM {_table(r)} WHERE {_col(r, 'id')} = %s"
