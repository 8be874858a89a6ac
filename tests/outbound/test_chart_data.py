"""The charts' pure data functions and the SVG builder, on fixed rows."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from outbound.chart_data import (
    HOUR,
    LatencyBucket,
    LatencyRow,
    bucket_index,
    daily_totals,
    daily_usage,
    day_start,
    fill_buckets,
    hour_start,
    latency_buckets,
    latency_row,
    percentile,
    top_counts,
)
from outbound.svg import Series, bar_list, nice_scale, time_chart
from outbound.usage import Prices

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


def test_rows_land_in_their_hour_and_empty_hours_are_zero():
    rows = [(T0, 3), (T0 + timedelta(minutes=59), 1), (T0 + 2 * HOUR, 5), (T0 - HOUR, 9), (T0 + 4 * HOUR, 7)]
    assert fill_buckets(rows, start=T0, step=HOUR, count=4) == [4, 0, 5, 0]


def test_bucket_index_counts_from_the_start_and_below():
    assert bucket_index(T0 + timedelta(hours=5, minutes=1), start=T0, step=HOUR) == 5
    assert bucket_index(T0 - timedelta(seconds=1), start=T0, step=HOUR) == -1


def test_hours_add_up_to_local_days_with_empty_days():
    tz = ZoneInfo("America/New_York")  # UTC-5 in March before the change
    first = date(2026, 3, 1)
    # 03:00 UTC on March 2 is still March 1 in New York.
    rows = [(datetime(2026, 3, 2, 3, tzinfo=UTC), 2), (datetime(2026, 3, 2, 6, tzinfo=UTC), 1)]
    assert daily_totals(rows, first_day=first, days=3, tz=tz) == [2, 1, 0]


def test_day_and_hour_starts():
    tz = ZoneInfo("Europe/Paris")
    assert hour_start(datetime(2026, 3, 1, 10, 42, 7, 5, tzinfo=UTC)) == T0
    assert day_start(T0, tz) == datetime(2026, 3, 1, 0, 0, tzinfo=tz)


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([], 0.5, None),
        ([4.0], 0.95, 4.0),
        ([1.0, 2.0, 3.0, 4.0], 0.5, 2.5),
        ([10.0, 1.0, 5.0], 0.5, 5.0),  # unsorted input
        ([float(i) for i in range(1, 101)], 0.95, 95.05),  # interpolated as percentile_cont
    ],
)
def test_percentile_interpolates_like_percentile_cont(values, q, expected):
    assert percentile(values, q) == (pytest.approx(expected) if expected is not None else None)


def test_latency_row_splits_where_known():
    row = latency_row(
        received_at=T0,
        claimed_at=T0 + timedelta(seconds=2),
        generated_at=T0 + timedelta(seconds=5),
        sent_at=T0 + timedelta(seconds=6),
    )
    assert (row.total, row.waiting, row.generating, row.sending) == (6, 2, 3, 1)
    old = latency_row(received_at=T0, claimed_at=None, generated_at=None, sent_at=T0 + timedelta(seconds=9))
    assert (old.total, old.waiting, old.generating, old.sending) == (9, None, None, None)


def test_latency_buckets_give_percentiles_per_hour_and_gaps_for_empty_hours():
    rows = [
        LatencyRow(sent_at=T0 + timedelta(minutes=m), total=t, waiting=1.0)
        for m, t in [(1, 2), (2, 4), (3, 10)]
    ]
    rows.append(LatencyRow(sent_at=T0 + 2 * HOUR, total=7.0))
    buckets = latency_buckets(rows, start=T0, step=HOUR, count=3)
    assert buckets[0].replies == 3
    assert buckets[0].p50 == 4
    assert buckets[0].p95 == pytest.approx(9.4)
    assert buckets[0].waiting == 1
    assert buckets[1] == LatencyBucket()
    assert (buckets[2].p50, buckets[2].waiting) == (7, None)


def test_daily_usage_sums_tokens_costs_each_day_and_keeps_empty_days():
    prices = Prices(input=Decimal(1), cached_input=Decimal(0), output=Decimal(2))
    rows = [
        (datetime(2026, 3, 1, 9, tzinfo=UTC), 2, 1000, 0, 100, 1),
        (datetime(2026, 3, 1, 18, tzinfo=UTC), 1, 500, 500, 50, 0),
        (datetime(2026, 3, 3, 1, tzinfo=UTC), 0, None, None, None, 2),
    ]
    days = daily_usage(rows, first_day=date(2026, 3, 1), days=3, tz=UTC, prices=prices)
    assert [d.calls for d in days] == [3, 0, 0]
    assert (days[0].input_tokens, days[0].cached_input_tokens, days[0].output_tokens) == (1500, 500, 150)
    assert days[0].cost == Decimal("0.0013")  # 1000 x 1 + 150 x 2 per million
    assert days[0].cost_per_reply == Decimal("0.0013") / 3
    assert days[1].cost == 0
    assert days[1].cost_per_reply is None
    assert [d.handoffs for d in days] == [1, 0, 2]


def test_top_counts_keeps_the_largest_and_sums_the_rest():
    counts = {"131026": 9, "100": 1, "131051": 4, "131000": 2, "zero": 0}
    assert top_counts(counts, limit=3) == [("131026", 9), ("131051", 4), ("other", 3)]
    assert top_counts(counts, limit=5) == [("131026", 9), ("131051", 4), ("131000", 2), ("100", 1)]


@pytest.mark.parametrize(
    ("value", "integer", "expected"),
    [
        (0, True, (1, 1)),
        (22, True, (30, 3)),
        (0.17, False, (0.2, 4)),
        (1, True, (1, 1)),
        (240, True, (300, 3)),
    ],
)
def test_nice_scale(value, integer, expected):
    assert nice_scale(value, integer=integer) == pytest.approx(expected)


def test_time_chart_is_accessible_svg_with_escaped_text():
    svg = time_chart(
        css_class="chart-test",
        uid="t",
        title="Replies <per> hour",
        description="3 & more",
        labels=["a", "b", "c"],
        series=[
            Series("sent", [1, 0, 2], "series-ok"),
            Series("p50", [1.5, None, 2.5], "series-p50", kind="line"),
        ],
    )
    assert svg.startswith('<svg class="chart chart-test" role="img"')
    assert '<title id="t-title">Replies &lt;per&gt; hour</title>' in svg
    assert '<desc id="t-desc">3 &amp; more</desc>' in svg
    assert len(re.findall(r"<rect x=", svg)) == 2  # no bar for a zero
    assert "<polyline" not in svg  # a line broken by a gap on both sides has no segment
    assert len(re.findall(r"<circle ", svg)) == 2


def test_bar_list_with_nothing_says_so():
    svg = bar_list(
        css_class="c", uid="u", title="Failures", description="none", items=[], series_css="series-bad"
    )
    assert "Nothing in this period." in svg
