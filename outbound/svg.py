"""A tiny server-side SVG chart builder for the admin index: bars (stacked), lines, and horizontal bars.

No JavaScript and nothing fetched from elsewhere: each chart is an inline `<svg class="chart ..." role="img">`
with a `<title>` and a `<desc>`; its numbers are also given as a table beside it (templates). Colours come from
CSS classes (outbound/static/outbound/admin.css), defined with the admin's own variables, so that the charts
follow the light and the dark admin themes; text is `currentColor`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

WIDTH = 640
HEIGHT = 220
MARGIN_LEFT = 52
MARGIN_RIGHT = 12
MARGIN_TOP = 28  # room for the legend
MARGIN_BOTTOM = 26
GRID_LINES = 4


@dataclass(frozen=True)
class Series:
    """One series of a chart: its name (legend), values per slot (None: no value), colour class and kind."""

    name: str
    values: Sequence[float | None]
    css: str
    kind: Literal["bar", "line"] = "bar"


def nice_ceiling(value: float) -> float:
    """The smallest 1, 2, 2.5 or 5 times a power of ten at or above `value` (1 for nothing)."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * power + 1e-12:
            return step * power
    return 10 * power  # pragma: no cover - the loop always returns


def nice_scale(value: float, *, lines: int = GRID_LINES, integer: bool = False) -> tuple[float, int]:
    """A y axis for values up to `value`: (top, number of grid steps), each step a round number (a whole one
    for counts), at most `lines` steps (fewer when a round step reaches the top sooner)."""
    step = nice_ceiling(value / lines) if value > 0 else 1.0
    if integer:
        step = max(math.ceil(step), 1)
    steps = max(math.ceil(value / step - 1e-9), 1)
    return step * steps, steps


def _n(value: float) -> str:
    """A coordinate, short."""
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _open(css_class: str, title: str, description: str, width: int, height: int, uid: str) -> list[str]:
    return [
        f'<svg class="chart {escape(css_class)}" role="img" viewBox="0 0 {width} {height}" '
        f'preserveAspectRatio="xMinYMin meet" aria-labelledby="{uid}-title {uid}-desc" '
        'xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{uid}-title">{escape(title)}</title>',
        f'<desc id="{uid}-desc">{escape(description)}</desc>',
    ]


def _legend(series: Sequence[Series], width: int) -> list[str]:
    parts, x = ['<g class="chart-legend">'], float(MARGIN_LEFT)
    for s in series:
        mark = (
            f'<rect class="series {s.css}" x="{_n(x)}" y="8" width="10" height="10" rx="2"/>'
            if s.kind == "bar"
            else f'<line class="series-line {s.css}" x1="{_n(x)}" y1="13" x2="{_n(x + 12)}" y2="13"/>'
        )
        parts.append(mark)
        parts.append(f'<text x="{_n(x + 16)}" y="17">{escape(s.name)}</text>')
        x += 16 + 7 * len(s.name) + 18
        if x > width - 60:
            break
    parts.append("</g>")
    return parts


def time_chart(
    *,
    css_class: str,
    uid: str,
    title: str,
    description: str,
    labels: Sequence[str],
    series: Sequence[Series],
    label_every: int = 1,
    value_format: Callable[[float], str] = lambda v: f"{v:g}",
    integer: bool = False,
    width: int = WIDTH,
    height: int = HEIGHT,
) -> SafeString:
    """Bars (stacked, in series order) and lines over the same slots, with a y axis from zero."""
    slots = len(labels)
    plot_w = width - MARGIN_LEFT - MARGIN_RIGHT
    plot_h = height - MARGIN_TOP - MARGIN_BOTTOM
    bars = [s for s in series if s.kind == "bar"]
    lines = [s for s in series if s.kind == "line"]
    stacked = [sum(s.values[i] or 0 for s in bars) for i in range(slots)]
    line_max = [v for s in lines for v in s.values if v is not None]
    top, steps = nice_scale(max([*stacked, *line_max, 0]), integer=integer)
    slot_w = plot_w / max(slots, 1)

    def y(value: float) -> float:
        return MARGIN_TOP + plot_h - plot_h * (value / top)

    out = _open(css_class, title, description, width, height, uid)
    out.append('<g class="chart-grid">')
    for k in range(steps + 1):
        value = top * k / steps
        out.append(
            f'<line x1="{MARGIN_LEFT}" x2="{width - MARGIN_RIGHT}" y1="{_n(y(value))}" y2="{_n(y(value))}"/>'
        )
        out.append(
            f'<text class="chart-tick" x="{MARGIN_LEFT - 6}" y="{_n(y(value) + 3.5)}" text-anchor="end">'
            f"{escape(value_format(value))}</text>"
        )
    out.append("</g>")
    out.append('<g class="chart-x">')
    for i, label in enumerate(labels):
        if i % label_every == 0:
            x = MARGIN_LEFT + slot_w * (i + 0.5)
            out.append(
                f'<text class="chart-tick" x="{_n(x)}" y="{height - 8}" text-anchor="middle">{escape(label)}</text>'
            )
    out.append("</g>")
    bar_w = max(slot_w * 0.72, 1.0)
    base = [0.0] * slots
    for s in bars:
        out.append(f'<g class="series {s.css}">')
        for i, amount in enumerate(s.values):
            if not amount:
                continue
            x = MARGIN_LEFT + slot_w * i + (slot_w - bar_w) / 2
            y_top = y(base[i] + amount)
            h = y(base[i]) - y_top
            base[i] += amount
            out.append(
                f'<rect x="{_n(x)}" y="{_n(y_top)}" width="{_n(bar_w)}" height="{_n(max(h, 0.5))}">'
                f"<title>{escape(labels[i])}: {escape(s.name)} {escape(value_format(amount))}</title></rect>"
            )
        out.append("</g>")
    for s in lines:
        out.append(f'<g class="series-line {s.css}">')
        run: list[str] = []
        for i, point in enumerate([*s.values, None]):
            if point is None:
                if len(run) > 1:
                    out.append(f'<polyline points="{" ".join(run)}"/>')
                run = []
                continue
            x = MARGIN_LEFT + slot_w * (i + 0.5)
            run.append(f"{_n(x)},{_n(y(point))}")
            out.append(
                f'<circle cx="{_n(x)}" cy="{_n(y(point))}" r="2.5">'
                f"<title>{escape(labels[i])}: {escape(s.name)} {escape(value_format(point))}</title></circle>"
            )
        out.append("</g>")
    out.append(
        f'<line class="chart-axis" x1="{MARGIN_LEFT}" x2="{width - MARGIN_RIGHT}" y1="{_n(y(0))}" y2="{_n(y(0))}"/>'
    )
    out += _legend(series, width)
    out.append("</svg>")
    return mark_safe("".join(out))  # noqa: S308 - every text above went through escape()


def bar_list(
    *,
    css_class: str,
    uid: str,
    title: str,
    description: str,
    items: Sequence[tuple[str, float]],
    series_css: str,
    value_format: Callable[[float], str] = lambda v: f"{v:g}",
    width: int = WIDTH // 2,
) -> SafeString:
    """Horizontal bars, one per labelled item, longest first as given; 'nothing' text when empty."""
    row_h, label_w = 22, 120
    height = max(len(items), 1) * row_h + 8
    out = _open(css_class, title, description, width, height, uid)
    if not items:
        out.append(f'<text class="chart-empty" x="4" y="16">{escape("Nothing in this period.")}</text>')
    top = max((v for _, v in items), default=0) or 1
    plot_w = width - label_w - 56
    for i, (label, value) in enumerate(items):
        y = 4 + i * row_h
        w = max(plot_w * value / top, 1.0)
        out.append(
            f'<text class="chart-tick" x="{label_w - 6}" y="{y + 14}" text-anchor="end">{escape(label)}</text>'
            f'<rect class="series {series_css}" x="{label_w}" y="{y + 3}" width="{_n(w)}" height="{row_h - 8}">'
            f"<title>{escape(label)}: {escape(value_format(value))}</title></rect>"
            f'<text class="chart-value" x="{_n(label_w + w + 4)}" y="{y + 14}">{escape(value_format(value))}</text>'
        )
    out.append("</svg>")
    return mark_safe("".join(out))  # noqa: S308 - every text above went through escape()


def timeline(
    *, uid: str, title: str, steps: Sequence[tuple[str, str, str]], width: int = WIDTH, height: int = 74
) -> SafeString:
    """Steps left to right at equal spacing: (name, time text or "" when it has not happened, the time since
    the previous step or ""). A step that happened is a filled dot, one that has not a hollow one."""
    slot = (width - 40) / max(len(steps), 1)
    out = _open(
        "chart-timeline", title, "; ".join(f"{n}: {t or 'not yet'}" for n, t, _ in steps), width, height, uid
    )
    xs = [20 + slot * (i + 0.5) for i in range(len(steps))]
    if xs:
        out.append(f'<line class="chart-axis" x1="{_n(xs[0])}" x2="{_n(xs[-1])}" y1="30" y2="30"/>')
    for x, (name, when, gap) in zip(xs, steps, strict=True):
        out.append(
            f'<circle class="{"step-done" if when else "step-open"}" cx="{_n(x)}" cy="30" r="6"/>'
            f'<text x="{_n(x)}" y="14" text-anchor="middle">{escape(name)}</text>'
            f'<text class="chart-tick" x="{_n(x)}" y="52" text-anchor="middle">{escape(when or "—")}</text>'
        )
        if gap:
            out.append(
                f'<text class="chart-gap" x="{_n(x - slot / 2)}" y="26" text-anchor="middle">{escape(gap)}</text>'
            )
    out.append("</svg>")
    return mark_safe("".join(out))  # noqa: S308 - every text above went through escape()
