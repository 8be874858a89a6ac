"""The admin index's charts: a fixed handful of aggregate queries, shaped by `chart_data`, drawn by `svg`.

Every query reads a bounded time window through an index (`outbound_sent_at`, `outbound_failed_at`,
`outbound_generated_at`, `outbound_delivery`) and returns at most a few hundred aggregated rows, whatever the
number of jobs: per-hour counts over 14 days (336 rows at most), per-day sums, counts by code and phase.

Latency percentiles: on PostgreSQL, `percentile_cont` per hour in the database (24 rows come back). SQLite has
no ordered-set aggregates; there the last `LATENCY_SAMPLE` replies of the 24 hours are read (four timestamps
each) and the same percentiles (`chart_data.percentile`, which interpolates as `percentile_cont` does) are
computed in Python. SQLite is for development and small installs, where the day holds fewer replies than that.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from django.db import connection
from django.db.models import Count, Q, Sum
from django.db.models.functions import TruncDay, TruncHour
from django.utils import timezone
from django.utils.safestring import SafeString

from outbound.chart_data import (
    DAY,
    HOUR,
    DayUsage,
    LatencyBucket,
    bucket_starts,
    daily_totals,
    daily_usage,
    day_start,
    fill_buckets,
    hour_start,
    latency_buckets,
    latency_row,
    top_counts,
)
from outbound.models import Contact, InboundMessage, OutboundJob
from outbound.svg import Series, bar_list, time_chart
from outbound.usage import Prices, format_cost
from outbound.vocabulary import DeliveryStatus

HOURS = 24
DAYS = 14
LATENCY_SAMPLE = 5000
TOP_CODES = 8
S = OutboundJob.Status


@dataclass(frozen=True)
class Chart:
    """One chart: the SVG, and its numbers as a table (headers, rows of text)."""

    uid: str
    title: str
    svg: SafeString
    headers: list[str]
    rows: list[list[str]]
    note: str = ""
    wide: bool = True


@dataclass(frozen=True)
class Dashboard:
    charts: list[Chart]
    cost_per_reply: Decimal | None
    cost_total: Decimal
    replies_sent: int
    waiting_for_person: int
    generated_at: datetime = field(default_factory=timezone.now)

    @property
    def cost_per_reply_display(self) -> str:
        return format_cost(self.cost_per_reply) if self.cost_per_reply is not None else "—"

    @property
    def cost_total_display(self) -> str:
        return format_cost(self.cost_total)


def format_seconds(value: float) -> str:
    if value >= 120:
        return f"{value / 60:.0f} min"
    if value >= 10:
        return f"{value:.0f} s"
    return f"{value:.1f} s"


def _count(value: float) -> str:
    """A count for an axis or a tooltip: compact from ten thousand on (the y axis has 50 pixels)."""
    if value >= 1_000_000:
        return f"{value / 1_000_000:.3g}M"
    if value >= 10_000:
        return f"{value / 1000:.3g}k"
    return f"{value:,.0f}" if value == int(value) else f"{value:,.1f}"


def admin_dashboard(*, now: datetime | None = None) -> Dashboard:
    """Everything the index draws, in seven queries whatever the volume."""
    now = now or timezone.now()
    tz = timezone.get_current_timezone()
    hours_start = hour_start(timezone.localtime(now, tz)) - HOUR * (HOURS - 1)
    first_day_start = day_start(now, tz) - DAY * (DAYS - 1)
    first_day = first_day_start.date()
    jobs = OutboundJob.objects.order_by()

    sent_hourly = list(
        jobs.filter(sent_at__gte=first_day_start)
        .annotate(h=TruncHour("sent_at"))
        .values_list("h")
        .annotate(n=Count("*"))
    )
    failed = jobs.filter(status=S.FAILED, updated_at__gte=first_day_start)
    failed_hourly = list(failed.annotate(h=TruncHour("updated_at")).values_list("h").annotate(n=Count("*")))
    failure_kinds = list(failed.values_list("failure_phase", "failure_code").annotate(n=Count("id")))
    delivery_failures = list(
        jobs.filter(delivery_status=DeliveryStatus.FAILED, delivery_updated_at__gte=first_day_start)
        .values_list("delivery_error_code")
        .annotate(n=Count("id"))
    )
    daily = list(
        jobs.filter(generated_at__gte=first_day_start)
        .annotate(d=TruncDay("generated_at"))
        .values_list("d")
        .annotate(
            calls=Count("id", filter=Q(input_tokens__isnull=False)),
            input=Sum("input_tokens"),
            cached=Sum("cached_input_tokens"),
            output=Sum("output_tokens"),
            handoffs=Count("id", filter=Q(kind=OutboundJob.Kind.HANDOFF)),
        )
    )
    latency = reply_latency_buckets(start=hours_start, now=now)
    waiting = Contact.objects.filter(handoff_requested_at__isnull=False).count()

    prices = Prices.from_settings()
    usage = daily_usage(daily, first_day=first_day, days=DAYS, tz=tz, prices=prices)
    charts = [
        _replies_chart(
            "replies-24h",
            "Replies sent and failed per hour, last 24 hours",
            labels=[
                f"{timezone.localtime(h, tz):%H}h"
                for h in bucket_starts(start=hours_start, step=HOUR, count=HOURS)
            ],
            sent=fill_buckets(sent_hourly, start=hours_start, step=HOUR, count=HOURS),
            failed=fill_buckets(failed_hourly, start=hours_start, step=HOUR, count=HOURS),
            label_every=3,
        ),
        _replies_chart(
            "replies-14d",
            "Replies sent and failed per day, last 14 days",
            labels=[f"{first_day + timedelta(days=i):%d %b}" for i in range(DAYS)],
            sent=daily_totals(sent_hourly, first_day=first_day, days=DAYS, tz=tz),
            failed=daily_totals(failed_hourly, first_day=first_day, days=DAYS, tz=tz),
            label_every=2,
        ),
        _latency_chart(
            latency,
            labels=[
                f"{timezone.localtime(h, tz):%H}h"
                for h in bucket_starts(start=hours_start, step=HOUR, count=HOURS)
            ],
        ),
        *_failure_charts(failure_kinds, delivery_failures),
        _handoff_chart(usage, waiting=waiting),
        _tokens_chart(usage),
        _cost_chart(usage),
    ]
    calls = sum(d.calls for d in usage)
    cost = sum((d.cost for d in usage), Decimal(0))
    return Dashboard(
        charts=charts,
        cost_per_reply=cost / calls if calls else None,
        cost_total=cost,
        replies_sent=sum(n for _, n in sent_hourly),
        waiting_for_person=waiting,
        generated_at=now,
    )


def reply_latency_buckets(*, start: datetime, now: datetime) -> list[LatencyBucket]:
    """Per hour from `start`: p50 and p95 of received → accepted by Meta, and the median of each part."""
    if connection.vendor == "postgresql":
        return _latency_postgres(start=start, now=now)
    rows = (
        OutboundJob.objects.filter(sent_at__gte=start, sent_at__lte=now, inbound_message__isnull=False)
        .order_by("-sent_at")
        .values_list("sent_at", "inbound_message__received_at", "first_claimed_at", "generated_at")[
            :LATENCY_SAMPLE
        ]
    )
    return latency_buckets(
        (
            latency_row(received_at=received, sent_at=sent, claimed_at=claimed, generated_at=generated)
            for sent, received, claimed, generated in rows
            if sent is not None
        ),
        start=start,
        step=HOUR,
        count=HOURS,
    )


def _latency_postgres(*, start: datetime, now: datetime) -> list[LatencyBucket]:
    def seconds(later: str, earlier: str) -> str:
        return f"GREATEST(EXTRACT(EPOCH FROM {later} - {earlier}), 0)"

    total = seconds("j.sent_at", "m.received_at")
    parts = (
        seconds("j.first_claimed_at", "m.received_at"),
        seconds("j.generated_at", "j.first_claimed_at"),
        seconds("j.sent_at", "j.generated_at"),
    )
    sql = f"""
        SELECT FLOOR(EXTRACT(EPOCH FROM j.sent_at - %s) / 3600)::int AS bucket, COUNT(*),
               percentile_cont(0.5) WITHIN GROUP (ORDER BY {total}),
               percentile_cont(0.95) WITHIN GROUP (ORDER BY {total}),
               {", ".join(f"percentile_cont(0.5) WITHIN GROUP (ORDER BY {part})" for part in parts)}
        FROM {OutboundJob._meta.db_table} j
        JOIN {InboundMessage._meta.db_table} m ON m.id = j.inbound_message_id
        WHERE j.sent_at >= %s AND j.sent_at <= %s
        GROUP BY bucket
    """  # noqa: S608 - table names from the models, values as parameters
    buckets = [LatencyBucket() for _ in range(HOURS)]
    with connection.cursor() as cursor:
        cursor.execute(sql, [start, start, now])
        for bucket, count, p50, p95, waiting, generating, sending in cursor.fetchall():
            if 0 <= bucket < HOURS:
                buckets[bucket] = LatencyBucket(
                    replies=count,
                    p50=_float(p50),
                    p95=_float(p95),
                    waiting=_float(waiting),
                    generating=_float(generating),
                    sending=_float(sending),
                )
    return buckets


def _float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


def _day_labels(usage: Sequence[DayUsage]) -> list[str]:
    return [f"{d.day:%d %b}" for d in usage]


def _replies_chart(
    uid: str, title: str, *, labels: list[str], sent: list[int], failed: list[int], label_every: int
) -> Chart:
    description = (
        f"{sum(sent):,} sent and {sum(failed):,} failed in all; "
        f"the busiest {'hour' if uid.endswith('24h') else 'day'} had {max(sent, default=0):,} sent."
    )
    svg = time_chart(
        css_class="chart-replies",
        uid=uid,
        title=title,
        description=description,
        labels=labels,
        series=[Series("sent", sent, "series-ok"), Series("failed", failed, "series-bad")],
        label_every=label_every,
        value_format=_count,
        integer=True,
    )
    rows = [[label, f"{s:,}", f"{f:,}"] for label, s, f in zip(labels, sent, failed, strict=True)]
    return Chart(uid, title, svg, ["", "sent", "failed"], rows)


def _latency_chart(buckets: list[LatencyBucket], *, labels: list[str]) -> Chart:
    title = "Reply latency per hour, last 24 hours (message received → accepted by Meta)"
    known = [b for b in buckets if b.p50 is not None]
    description = (
        "No reply was sent in the last 24 hours."
        if not known
        else f"Median per hour from {min(b.p50 or 0 for b in known):.1f} to {max(b.p50 or 0 for b in known):.1f} "
        f"seconds; 95th percentile up to {max(b.p95 or 0 for b in known):.1f} seconds. Bars: median time "
        "waiting for a worker, generating and sending."
    )
    svg = time_chart(
        css_class="chart-latency",
        uid="latency-24h",
        title=title,
        description=description,
        labels=labels,
        series=[
            Series("waiting", [b.waiting for b in buckets], "series-wait"),
            Series("generating", [b.generating for b in buckets], "series-generate"),
            Series("sending", [b.sending for b in buckets], "series-send"),
            Series("p50", [b.p50 for b in buckets], "series-p50", kind="line"),
            Series("p95", [b.p95 for b in buckets], "series-p95", kind="line"),
        ],
        label_every=3,
        value_format=format_seconds,
    )

    def cell(value: float | None) -> str:
        return "—" if value is None else f"{value:.1f}"

    rows = [
        [
            label,
            f"{b.replies:,}",
            cell(b.p50),
            cell(b.p95),
            cell(b.waiting),
            cell(b.generating),
            cell(b.sending),
        ]
        for label, b in zip(labels, buckets, strict=True)
    ]
    headers = ["", "replies", "p50 s", "p95 s", "waiting s", "generating s", "sending s"]
    return Chart(
        "latency-24h",
        title,
        svg,
        headers,
        rows,
        note="Bars are the medians of each part (jobs from before the timeline was recorded have none); the "
        "lines, the median and 95th percentile of the whole.",
    )


def _failure_charts(
    kinds: Sequence[tuple[str, int | None, int]], delivery: Sequence[tuple[int | None, int]]
) -> list[Chart]:
    by_code: Counter[str] = Counter()
    by_phase: Counter[str] = Counter()
    for phase, code, n in kinds:
        by_code[str(code) if code is not None else "no code"] += n
        by_phase[phase or "unknown"] += n
    for code, n in delivery:
        by_code[str(code) if code is not None else "no code"] += n
        by_phase["delivery"] += n
    charts = []
    for uid, title, counts, css in (
        ("failures-code", "Failures by Meta error code, last 14 days", by_code, "series-bad"),
        ("failures-phase", "Failures by phase, last 14 days", by_phase, "series-phase"),
    ):
        items = top_counts(counts, limit=TOP_CODES)
        description = (
            "No failure in the last 14 days."
            if not items
            else "; ".join(f"{label}: {n:,}" for label, n in items) + "."
        )
        svg = bar_list(
            css_class="chart-failures",
            uid=uid,
            title=title,
            description=description,
            items=[(label, float(n)) for label, n in items],
            series_css=css,
            value_format=_count,
        )
        charts.append(
            Chart(uid, title, svg, ["", "failures"], [[label, f"{n:,}"] for label, n in items], wide=False)
        )
    return charts


def _handoff_chart(usage: list[DayUsage], *, waiting: int) -> Chart:
    title = "Handoffs to a person per day, last 14 days"
    labels = _day_labels(usage)
    values = [d.handoffs for d in usage]
    svg = time_chart(
        css_class="chart-handoffs",
        uid="handoffs-14d",
        title=title,
        description=f"{sum(values):,} handoffs in 14 days; {waiting:,} conversations wait for a person now.",
        labels=labels,
        series=[Series("handoffs", values, "series-handoff")],
        label_every=2,
        value_format=_count,
        integer=True,
    )
    return Chart(
        "handoffs-14d",
        title,
        svg,
        ["", "handoffs"],
        [[label, f"{v:,}"] for label, v in zip(labels, values, strict=True)],
        note=f"{waiting:,} conversation{'' if waiting == 1 else 's'} waiting for a person now.",
    )


def _tokens_chart(usage: list[DayUsage]) -> Chart:
    title = "Model tokens per day, last 14 days"
    labels = _day_labels(usage)
    svg = time_chart(
        css_class="chart-tokens",
        uid="tokens-14d",
        title=title,
        description=f"{sum(d.input_tokens for d in usage):,} input tokens "
        f"({sum(d.cached_input_tokens for d in usage):,} cached) and {sum(d.output_tokens for d in usage):,} "
        "output tokens in 14 days.",
        labels=labels,
        series=[
            Series("input", [d.input_tokens - d.cached_input_tokens for d in usage], "series-input"),
            Series("cached input", [d.cached_input_tokens for d in usage], "series-cached"),
            Series("output", [d.output_tokens for d in usage], "series-output"),
        ],
        label_every=2,
        value_format=_count,
    )
    rows = [
        [label, f"{d.calls:,}", f"{d.input_tokens:,}", f"{d.cached_input_tokens:,}", f"{d.output_tokens:,}"]
        for label, d in zip(labels, usage, strict=True)
    ]
    return Chart("tokens-14d", title, svg, ["", "model calls", "input", "of it cached", "output"], rows)


def _cost_chart(usage: list[DayUsage]) -> Chart:
    title = "Estimated model cost per day, last 14 days"
    labels = _day_labels(usage)
    total = sum((d.cost for d in usage), Decimal(0))
    svg = time_chart(
        css_class="chart-cost",
        uid="cost-14d",
        title=title,
        description=f"{format_cost(total)} in 14 days at the configured prices per million tokens.",
        labels=labels,
        series=[Series("cost", [float(d.cost) for d in usage], "series-cost")],
        label_every=2,
        value_format=lambda v: f"{v:.4g}",
    )
    rows = [
        [
            label,
            format_cost(d.cost),
            f"{d.calls:,}",
            format_cost(d.cost_per_reply) if d.cost_per_reply is not None else "—",
        ]
        for label, d in zip(labels, usage, strict=True)
    ]
    return Chart("cost-14d", title, svg, ["", "cost", "model calls", "cost per reply"], rows)
