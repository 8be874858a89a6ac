"""The SQL behind a job's transition (`OutboundJob._transition`): one conditional UPDATE, written by hand.

The ORM compiled the same handful of statements again for every move: the three or four moves of a job were
15-20% of the worker's CPU. Here a statement's text is built once per shape (the columns set and the
conditions that apply) and kept; each call only converts its values, with each field's own `get_db_prep_save`
(SET) or `get_db_prep_value` (WHERE), so every backend adaptation stays Django's: a UUID as 32 hex digits on
SQLite, JSON adapted for the backend, datetimes made aware or UTC text.

Names come from the models' `_meta` (table, columns) and are quoted by the backend.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import models
from django.db.backends.base.base import BaseDatabaseWrapper

from outbound.models.contacts import Contact

CONTACT_ALIAS = "held_contact"
"""The contact row's name in the `unless` predicate (`bot_paused_sql(alias=CONTACT_ALIAS)`)."""


@dataclass(frozen=True)
class TransitionSQL:
    """One shape's statements: the UPDATE, and the SELECT that tells, after a refused UPDATE with
    `unless_paused`, whether the row was still ours (so the contact held the move back) or had changed."""

    update: str
    still_ours: str
    fields: tuple[models.Field[Any, Any], ...]
    """The fields set, in the order of the SET clause's placeholders."""
    token_field: models.Field[Any, Any]
    """`claim_token`, whose `get_db_prep_value` converts the fence."""


_STATEMENTS: dict[tuple[Any, ...], TransitionSQL] = {}


def transition_sql(
    model: type[models.Model],
    connection: BaseDatabaseWrapper,
    names: tuple[str, ...],
    *,
    fenced: bool,
    unclaimed: bool,
    unless_paused: str | None,
    unsent: bool = False,
) -> TransitionSQL:
    """The statements of one shape, built on first use.

    `names`: the fields set, as the caller named them (a foreign key by its name or its attname). `fenced`:
    the row must carry a claim token (one parameter); `unclaimed`: it must carry none; `unsent`: no send may have
    started on it (`send_started_at` NULL). `unless_paused`: the
    contact's paused predicate on `CONTACT_ALIAS` (`bot_paused_sql`); with it the UPDATE also requires that the
    job's contact be neither paused nor opted out.

    Parameters: the SET values in the order of `fields`, then the primary key, the status the job was in, the
    token when fenced, and last those of `unless_paused` (the SELECT takes the same without the SET values
    and `unless_paused`'s).
    """
    key = (connection.alias, model, names, fenced, unclaimed, unless_paused, unsent)
    statement = _STATEMENTS.get(key)
    if statement is None:
        built = _build(
            model,
            connection,
            names,
            fenced=fenced,
            unclaimed=unclaimed,
            unless_paused=unless_paused,
            unsent=unsent,
        )
        statement = _STATEMENTS.setdefault(key, built)
    return statement


def _field(model: type[models.Model], name: str) -> models.Field[Any, Any]:
    field = model._meta.get_field(name)
    if not isinstance(field, models.Field) or not field.concrete or field.many_to_many or field.primary_key:
        raise ValueError(f"a transition cannot set or test {model.__name__}.{name}")
    return field


def _column(connection: BaseDatabaseWrapper, field: models.Field[Any, Any] | None) -> str:
    if field is None or field.column is None:
        raise ValueError(f"{field} has no column")
    return connection.ops.quote_name(field.column)


def _build(
    model: type[models.Model],
    connection: BaseDatabaseWrapper,
    names: tuple[str, ...],
    *,
    fenced: bool,
    unclaimed: bool,
    unless_paused: str | None,
    unsent: bool,
) -> TransitionSQL:
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    fields = tuple(_field(model, name) for name in names)
    token_field = _field(model, "claim_token")
    token = f"{table}.{_column(connection, token_field)}"
    conditions = [
        f"{table}.{_column(connection, model._meta.pk)} = %s",
        f"{table}.{_column(connection, _field(model, 'status'))} = %s",
    ]
    if fenced:
        conditions.append(f"{token} = %s")
    if unclaimed:
        conditions.append(f"{token} IS NULL")
    if unsent:
        conditions.append(f"{table}.{_column(connection, _field(model, 'send_started_at'))} IS NULL")
    where = " AND ".join(conditions)
    assignments = ", ".join(f"{_column(connection, field)} = %s" for field in fields)
    update = f"UPDATE {table} SET {assignments} WHERE {where}"  # noqa: S608 - names from _meta, values as parameters
    if unless_paused is not None:
        # NOT EXISTS, not a join under NOT: when a contact's column is NULL (a pause without `bot_human_at`) the
        # predicate is false, as in the ORM's filter, where NOT (unknown) would have refused the move.
        contacts = Contact._meta
        alias = CONTACT_ALIAS
        contact_id = f"{table}.{_column(connection, _field(model, 'contact'))}"
        opted_out = f"{alias}.{_column(connection, _field(Contact, 'opted_out_at'))}"
        update += (
            f" AND NOT EXISTS (SELECT 1 FROM {quote(contacts.db_table)} {alias}"  # noqa: S608 - as above
            f" WHERE {alias}.{_column(connection, contacts.pk)} = {contact_id}"
            f" AND (({unless_paused}) OR {opted_out} IS NOT NULL))"
        )
    still_ours = f"SELECT 1 FROM {table} WHERE {where}"  # noqa: S608 - as above
    return TransitionSQL(update=update, still_ours=still_ours, fields=fields, token_field=token_field)
