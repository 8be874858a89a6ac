"""Database connection tuning that Django does not do by itself."""

from __future__ import annotations

import sqlite3
from typing import Any

from django.db.backends.base.base import BaseDatabaseWrapper


def use_sqlite_parameter_limit(sender: Any, connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
    """Batch bulk statements by the linked SQLite's real parameter limit, not Django 5.2's fixed 999.

    Otherwise a 200-message webhook POST takes several INSERTs per table on SQLite where PostgreSQL takes one
    (Django 6.0 does the same: ticket #36143). Connected to `connection_created` in `OutboundConfig.ready`.
    """
    if connection.vendor == "sqlite":
        limit = connection.connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        connection.features.max_query_params = max(limit, 999)
