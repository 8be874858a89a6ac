"""The named queries of jobs the worker, the admin and /healthz ask (each predicate the indexes serve)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.db import connections, models
from django.db.models import Q
from django.utils import timezone

from outbound.models.contacts import bot_paused_q
from outbound.models.states import CLAIMABLE_STATUSES, SENT_WHILE_PAUSED, JobStatus, SendAs
from outbound.vocabulary import WINDOW_CLOSED_CODE, DeliveryStatus

# Above this many SENT jobs (the planner's estimate), PostgreSQL's estimate stands in for an exact count.
ESTIMATE_SENT_OVER = 100_000


def planner_rows(queryset: models.QuerySet[Any]) -> int:
    """PostgreSQL's estimate of how many rows the query returns (EXPLAIN; nothing is read)."""
    sql, params = queryset.query.sql_with_params()
    with connections[queryset.db].cursor() as cursor:
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
        plan = cursor.fetchone()[0]
    if isinstance(plan, str):
        plan = json.loads(plan)
    return int(plan[0]["Plan"]["Plan Rows"])


if TYPE_CHECKING:
    from outbound.models.jobs import OutboundJob  # noqa: F401  (the queryset's row type, named as a string)


class OutboundJobQuerySet(models.QuerySet["OutboundJob"]):
    def due(self, now: datetime | None = None) -> OutboundJobQuerySet:
        """Unclaimed jobs whose next attempt is due: the worker's claim predicate (indexed)."""
        return self.filter(
            status__in=CLAIMABLE_STATUSES,
            claim_token__isnull=True,
            next_attempt_at__lte=now or timezone.now(),
        )

    def claimable(self, now: datetime | None = None) -> OutboundJobQuerySet:
        """Due jobs of contacts that have no job in flight: what a claim may take (one reply at a time).

        A paused contact's bot replies are held back (staff replies and the handoff message still go).
        """
        now = now or timezone.now()
        return self.due(now).not_held(now).exclude(contact__outbound_jobs__claim_token__isnull=False)

    def not_held(self, now: datetime | None = None) -> OutboundJobQuerySet:
        """Leave out the bot replies of contacts whose bot is paused: they wait for a person, not a worker."""
        paused = bot_paused_q(now=now or timezone.now(), prefix="contact__")
        return self.exclude(paused & ~Q(kind__in=SENT_WHILE_PAUSED))

    def held(self, now: datetime | None = None) -> OutboundJobQuerySet:
        """Open bot replies of contacts whose bot is paused."""
        paused = bot_paused_q(now=now or timezone.now(), prefix="contact__")
        return self.filter(paused, status__in=CLAIMABLE_STATUSES).exclude(kind__in=SENT_WHILE_PAUSED)

    def in_flight(self) -> OutboundJobQuerySet:
        """Jobs a worker holds right now."""
        return self.filter(claim_token__isnull=False)

    def stale(self, *, older_than: datetime) -> OutboundJobQuerySet:
        """Claims older than the cut-off: their worker is presumed dead."""
        return self.filter(claim_token__isnull=False, claimed_at__lt=older_than)

    def counts_by_status(self, *, estimate_over: int | None = None) -> tuple[dict[str, int], bool]:
        """Jobs in each status (every status, zeros included), and whether SENT's count is an estimate.

        SENT is where jobs end, so after a year it holds nearly every row: counting it exactly reads the whole
        table (hundreds of milliseconds at a million jobs, on every admin index and every scrape). On
        PostgreSQL, when the planner expects more than `estimate_over` SENT jobs, its estimate (from the
        column statistics ANALYZE keeps) is taken instead; every other status is counted exactly, through the
        status index. SQLite counts everything.
        """
        estimate_over = ESTIMATE_SENT_OVER if estimate_over is None else estimate_over
        counts = dict.fromkeys(JobStatus.values, 0)
        estimated = False
        others = [status for status in JobStatus.values if status != JobStatus.SENT]
        # COUNT(*), not COUNT(id): the status index alone answers it (an index-only scan, no heap reads).
        rows = self.order_by().filter(status__in=others).values_list("status").annotate(n=models.Count("*"))
        counts.update(dict(rows))
        sent = self.order_by().filter(status=JobStatus.SENT)
        if connections[self.db].vendor == "postgresql":
            estimate = planner_rows(sent)
            if estimate > estimate_over:
                counts[JobStatus.SENT], estimated = estimate, True
        if not estimated:
            counts[JobStatus.SENT] = sent.count()
        return counts, estimated

    def awaiting_template_fallback(self) -> OutboundJobQuerySet:
        """Text replies that Meta later reported failed with 131047 (window closed): send the template."""
        return self.filter(
            status=JobStatus.SENT,
            send_as=SendAs.TEXT,
            delivery_status=DeliveryStatus.FAILED,
            delivery_error_code=WINDOW_CLOSED_CODE,
        )
