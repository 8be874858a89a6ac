"""The admin index's chart data, as pure functions over rows the database already aggregated (no Django).

Time series are lists of buckets of fixed width starting at a given instant, so that an hour or a day with
nothing in it is a zero (or, for latency, a gap), never a missing point. Buckets are found by arithmetic on
the offset from the start, so that the database and Python agree on which bucket a moment falls in.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo
from decimal import Decimal

from outbound.usage import Prices, token_cost

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


def hour_start(moment: datetime) -> datetime:
    """The start of the hour `moment` falls in."""
    return moment.replace(minute=0, second=0, microsecond=0)


def day_start(moment: datetime, tz: tzinfo) -> datetime:
    """Midnight (in `tz`) of the day `moment` falls in."""
    local = moment.astimezone(tz)
    return local.replace(hour=0, minute=0, second=0, microsecond=0)


def bucket_index(moment: datetime, *, start: datetime, step: timedelta) -> int:
    """Which bucket of width `step` from `start` holds `moment` (negative: before the first)."""
    return math.floor((moment - start) / step)


def bucket_starts(*, start: datetime, step: timedelta, count: int) -> list[datetime]:
    """The start of each bucket."""
    return [start + step * i for i in range(count)]


def fill_buckets(
    counts: Iterable[tuple[datetime, int]], *, start: datetime, step: timedelta, count: int
) -> list[int]:
    """Sum (moment, count) rows into `count` buckets of width `step` from `start`; rows outside are ignored.

    Rows may be pre-truncated (an hour's count at its start) or raw moments: both land in their bucket.
    """
    buckets = [0] * count
    for moment, n in counts:
        i = bucket_index(moment, start=start, step=step)
        if 0 <= i < count:
            buckets[i] += n
    return buckets


def daily_totals(
    counts: Iterable[tuple[datetime, int]], *, first_day: date, days: int, tz: tzinfo
) -> list[int]:
    """Sum (moment, count) rows into calendar days in `tz`, from `first_day`, zeros for empty days."""
    totals = [0] * days
    for moment, n in counts:
        i = (moment.astimezone(tz).date() - first_day).days
        if 0 <= i < days:
            totals[i] += n
    return totals


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th quantile (0..1) with linear interpolation between the closest ranks, as PostgreSQL's
    `percentile_cont`; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    lower = math.floor(position)
    upper = min(lower + 1, len(ordered) - 1)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)


@dataclass(frozen=True)
class LatencyRow:
    """One sent reply's timeline, in seconds after its message was received (None: not recorded)."""

    sent_at: datetime
    total: float
    waiting: float | None = None
    generating: float | None = None
    sending: float | None = None


@dataclass(frozen=True)
class LatencyBucket:
    """Percentiles of one bucket's replies, in seconds (None: no reply sent in it)."""

    replies: int = 0
    p50: float | None = None
    p95: float | None = None
    # Medians of the parts, where the jobs recorded them (replies sent before the timeline existed did not).
    waiting: float | None = None
    generating: float | None = None
    sending: float | None = None


def latency_row(
    *,
    received_at: datetime,
    sent_at: datetime,
    claimed_at: datetime | None,
    generated_at: datetime | None,
) -> LatencyRow:
    """Split one reply's latency into waiting for a worker, generating, and sending, where known."""

    def seconds(later: datetime | None, earlier: datetime | None) -> float | None:
        if later is None or earlier is None:
            return None
        return max((later - earlier).total_seconds(), 0.0)

    return LatencyRow(
        sent_at=sent_at,
        total=max((sent_at - received_at).total_seconds(), 0.0),
        waiting=seconds(claimed_at, received_at),
        generating=seconds(generated_at, claimed_at),
        sending=seconds(sent_at, generated_at),
    )


def latency_buckets(
    rows: Iterable[LatencyRow], *, start: datetime, step: timedelta, count: int
) -> list[LatencyBucket]:
    """p50 and p95 of the total latency per bucket (by the moment sent), and the median of each part."""
    grouped: list[list[LatencyRow]] = [[] for _ in range(count)]
    for row in rows:
        i = bucket_index(row.sent_at, start=start, step=step)
        if 0 <= i < count:
            grouped[i].append(row)

    def median(values: Iterable[float | None]) -> float | None:
        return percentile([v for v in values if v is not None], 0.5)

    return [
        LatencyBucket(
            replies=len(group),
            p50=percentile([r.total for r in group], 0.5),
            p95=percentile([r.total for r in group], 0.95),
            waiting=median(r.waiting for r in group),
            generating=median(r.generating for r in group),
            sending=median(r.sending for r in group),
        )
        if group
        else LatencyBucket()
        for group in grouped
    ]


@dataclass(frozen=True)
class DayUsage:
    """One day's model usage and its estimated cost."""

    day: date
    calls: int
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    cost: Decimal
    handoffs: int = 0

    @property
    def cost_per_reply(self) -> Decimal | None:
        return self.cost / self.calls if self.calls else None


def top_counts(counts: Mapping[str, int], *, limit: int) -> list[tuple[str, int]]:
    """The largest counts first (ties by name), the rest summed as "other"."""
    ordered = sorted(((k, v) for k, v in counts.items() if v), key=lambda kv: (-kv[1], kv[0]))
    if len(ordered) <= limit:
        return ordered
    head, tail = ordered[: limit - 1], ordered[limit - 1 :]
    return [*head, ("other", sum(v for _, v in tail))]


def daily_usage(
    rows: Iterable[tuple[datetime, int, int | None, int | None, int | None, int]],
    *,
    first_day: date,
    days: int,
    tz: tzinfo,
    prices: Prices,
) -> list[DayUsage]:
    """(moment, model calls, input, cached input, output tokens, handoffs) rows summed per day in `tz`, with
    each day's cost; zeros for days without any."""
    sums: dict[date, list[int]] = {}
    for moment, calls, input_tokens, cached, output, handoffs in rows:
        day = moment.astimezone(tz).date()
        total = sums.setdefault(day, [0, 0, 0, 0, 0])
        for k, value in enumerate((calls, input_tokens, cached, output, handoffs)):
            total[k] += value or 0
    result = []
    for offset in range(days):
        day = first_day + timedelta(days=offset)
        calls, input_tokens, cached, output, handoffs = sums.get(day, [0, 0, 0, 0, 0])
        cost = token_cost(
            input_tokens=input_tokens, output_tokens=output, cached_input_tokens=cached, prices=prices
        )
        result.append(DayUsage(day, calls, input_tokens, cached, output, cost, handoffs))
    return result
