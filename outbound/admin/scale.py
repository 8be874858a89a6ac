"""What keeps the admin's lists fast with a million rows: estimated counts and searches that use indexes.

- Counts: Django's changelist counts the rows it lists (for the page links). On PostgreSQL, an unfiltered list
  takes the table's row estimate from `pg_class.reltuples` (kept by autovacuum/ANALYZE), and a filtered or
  searched one the planner's estimate when that is large (over `EXACT_COUNT_LIMIT`); only a small result is
  counted exactly. The full count (`show_full_result_count`) is off everywhere. SQLite counts exactly.
- Search: each word of the query is looked at for what it is. A number (digits, an optional +) matches a
  contact's `wa_id` exactly; a Meta id (`wamid.…`) matches message ids exactly; anything else is looked for
  in names and texts with `icontains`, which PostgreSQL answers from trigram indexes (migration 0009: GIN on
  `UPPER(column) gin_trgm_ops`, the expression Django's `icontains` compares). Related rows are resolved to
  ids first (a small query on their own unique index), so that the big table is filtered on its own indexed
  columns instead of a join.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from django.core.exceptions import EmptyResultSet
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import Model, Q, QuerySet
from django.http import HttpRequest
from django.utils.functional import cached_property

from outbound.models.queries import planner_rows

# Below this many estimated rows, the count is exact (it is cheap there, and page links stay right).
EXACT_COUNT_LIMIT = 10_000
# At most this many contacts are matched by a name for a search in another table.
CONTACT_MATCH_LIMIT = 500
# Trigrams: a word of one or two characters cannot use the index.
MIN_WORD = 3
_NUMBER = re.compile(r"^\+?\d{5,20}$")


class EstimatedCountPaginator(Paginator):
    """A paginator whose count is PostgreSQL's estimate for big results (see the module docstring)."""

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if not isinstance(queryset, QuerySet) or connections[queryset.db].vendor != "postgresql":
            return super().count
        estimate = _estimated_rows(queryset)
        if estimate is None or estimate < EXACT_COUNT_LIMIT:
            return super().count
        return estimate


def _estimated_rows(queryset: QuerySet[Any]) -> int | None:
    connection = connections[queryset.db]
    if not queryset.query.where:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass",
                [queryset.model._meta.db_table],
            )
            row = cursor.fetchone()
        # -1: never analysed yet (a new table); count it then.
        return int(row[0]) if row and row[0] >= 0 else None
    try:
        return planner_rows(queryset.order_by().values("pk"))
    except EmptyResultSet:  # a search that can match nothing (an unknown Meta id)
        return 0


@dataclass(frozen=True)
class IndexedSearch:
    """Where a list looks for each kind of search word (paths from the listed model).

    `number_contact`: the path to the contact, matched by exact `wa_id` (and `user_id`) for a number.
    `wamid_fields`: fields matched exactly for a Meta id; `wamid_related`: (model, field, path to its id here)
    for ids held by a related row, resolved to ids first. `text_fields`: `icontains` for other words;
    `name_contact`: the path to the contact, matched by `profile_name` for other words.
    """

    number_contact: str | None = None
    wamid_fields: Sequence[str] = ()
    wamid_related: Sequence[tuple[type[Model], str, str]] = ()
    text_fields: Sequence[str] = ()
    name_contact: str | None = None
    own_number_fields: Sequence[str] = field(default_factory=tuple)
    # Matched exactly for any word that is neither a number nor a Meta id (a business-scoped user id).
    exact_fields: Sequence[str] = field(default_factory=tuple)

    def filter(self, queryset: QuerySet[Any], term: str) -> QuerySet[Any]:
        """The rows matching every word of `term` (each word in any of its places)."""
        from outbound.models import Contact

        words = term.split()
        if any(len(word) >= MIN_WORD for word in words):
            # "in", "a": no trigram index can find them, and they narrow nothing down; dropped beside longer ones.
            words = [word for word in words if len(word) >= MIN_WORD]
        for word in words:
            if _NUMBER.match(word):
                digits = word.lstrip("+")
                q = Q(pk__in=[])
                for name in self.own_number_fields:
                    q |= Q(**{name: digits})
                if self.number_contact:
                    ids = list(
                        Contact.objects.filter(Q(wa_id=digits) | Q(user_id=word)).values_list("pk", flat=True)
                    )
                    q |= Q(**{f"{self.number_contact}__in": ids})
                # A number can also be words of a text (an order number in a reply).
                for name in self.text_fields:
                    q |= Q(**{f"{name}__icontains": word})
            elif word.startswith("wamid."):
                q = Q(pk__in=[])
                for name in self.wamid_fields:
                    q |= Q(**{name: word})
                for model, lookup, path in self.wamid_related:
                    ids = list(
                        model._default_manager.filter(**{lookup: word}).values_list("pk", flat=True)[:10]
                    )
                    q |= Q(**{f"{path}__in": ids})
            else:
                q = Q(pk__in=[])
                for name in self.exact_fields:
                    q |= Q(**{name: word})
                for name in self.text_fields:
                    q |= Q(**{f"{name}__icontains": word})
                if self.name_contact:
                    ids = list(
                        Contact.objects.filter(profile_name__icontains=word)
                        .order_by()
                        .values_list("pk", flat=True)[:CONTACT_MATCH_LIMIT]
                    )
                    if ids:
                        q |= Q(**{f"{self.name_contact}__in": ids})
            queryset = queryset.filter(q)
        return queryset


class IndexedSearchMixin:
    """A ModelAdmin whose search goes through `indexed_search` and whose counts are estimated when big."""

    indexed_search: IndexedSearch
    paginator: ClassVar[type] = EstimatedCountPaginator
    show_full_result_count = False  # a COUNT(*) over every row on each page load buys nothing

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Any], bool]:
        if not search_term.strip():
            return queryset, False
        # No duplicates: every condition is on the listed table's own columns (related rows become ids).
        return self.indexed_search.filter(queryset, search_term), False
