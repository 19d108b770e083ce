"""Charts for the dashboard as inline SVG, drawn on the server: no CDN, no script, print-ready.

Each chart is one ``<svg>`` with a viewBox (it scales to the width of a phone or a desktop), a
``<title>`` and ``<desc>`` for screen readers, and native tooltips on every point. All text is
escaped. Money arrives as Decimal; coordinates are computed as floats only for drawing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from markupsafe import Markup, escape

Number = int | Decimal

# Drawing units (the viewBox): wide enough for labels, scaled down to fit a 360 px phone.
WIDTH = 640
HEIGHT = 240
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 84, 20, 16, 56
# The funnel is drawn narrower: it sits in the dashboard's side column.
FUNNEL_WIDTH = 420
GRIDLINES = 4
FONT = 'font-family="system-ui, sans-serif" font-size="14"'
# Matched with fullmatch: re's "$" also matches before a trailing newline.
_COLOUR = re.compile(r"#[0-9a-fA-F]{3,8}")
_CHART_ID = re.compile(r"[a-z][a-z0-9-]{0,40}")
# English month abbreviations, fixed: strftime("%b") follows the process locale.
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@dataclass(frozen=True)
class Series:
    label: str
    values: Sequence[Number]
    color: str


def _check_id(chart_id: str) -> None:
    if not _CHART_ID.fullmatch(chart_id):
        raise ValueError(f"chart id {chart_id!r} must be lower-case letters, digits and dashes")


def _fmt(value: float) -> str:
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def nice_max(largest: Number) -> Decimal:
    """The top of the y axis: GRIDLINES steps of 1, 2 or 5 × 10^n (at least 1) covering ``largest``.

    Whole steps keep every gridline label a round number (no "7.5 carts").
    """
    wanted = Decimal(largest) / GRIDLINES
    # Start at wanted's own power of ten (smaller steps cannot reach it), so a huge value is one pass.
    exponent = max(0, wanted.adjusted())
    while True:
        for factor in (1, 2, 5):
            step = Decimal(factor).scaleb(exponent)
            if step >= wanted:
                return step * GRIDLINES
        exponent += 1


def _day(day: date) -> str:
    return f"{day.day} {_MONTHS[day.month - 1]}"


def _head(chart_id: str, title: str, description: str, height: int, width: int = WIDTH) -> list[str]:
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="100%" '
        f'preserveAspectRatio="xMidYMid meet" role="img" aria-labelledby="{chart_id}-title {chart_id}-desc" '
        f'class="chart" id="{chart_id}">',
        f'<title id="{chart_id}-title">{escape(title)}</title>',
        f'<desc id="{chart_id}-desc">{escape(description)}</desc>',
    ]


def daily_chart(
    chart_id: str,
    days: Sequence[date],
    series: Sequence[Series],
    *,
    title: str,
    description: str,
    value_format: Callable[[Number], str] = str,
) -> Markup:
    """One line per series over the days, y from 0 to a round maximum, with a legend."""
    _check_id(chart_id)
    for line in series:
        if not _COLOUR.fullmatch(line.color):
            raise ValueError(f"colour {line.color!r} must be a hex colour like #2c6ecb")
        if len(line.values) != len(days):
            raise ValueError(f"series {line.label!r} has {len(line.values)} values for {len(days)} days")
        for value in line.values:
            if isinstance(value, float) or not isinstance(value, int | Decimal):
                raise ValueError("chart values must be int or Decimal (money is never a float)")
            if isinstance(value, Decimal) and not value.is_finite():
                # NaN cannot be compared and Infinity has no round maximum (nice_max would never end).
                raise ValueError(f"chart value {value} is not a finite number")
            if value < 0:
                raise ValueError("chart values cannot be negative")
    top = nice_max(max((value for line in series for value in line.values), default=0))
    legend_rows = (len(series) + 1) // 2
    height = HEIGHT + legend_rows * 18
    plot_w, plot_h = WIDTH - PAD_LEFT - PAD_RIGHT, HEIGHT - PAD_TOP - PAD_BOTTOM
    bottom = PAD_TOP + plot_h

    def x(index: int) -> float:
        return PAD_LEFT + (plot_w / 2 if len(days) == 1 else plot_w * index / (len(days) - 1))

    def y(value: Number) -> float:
        return bottom - plot_h * float(Decimal(value) / top)

    parts = _head(chart_id, title, description, height)
    parts.append(f"<g {FONT}>")
    for line_number in range(GRIDLINES + 1):
        value = top * line_number / GRIDLINES
        at = y(value)
        parts.append(
            f'<line x1="{PAD_LEFT}" x2="{WIDTH - PAD_RIGHT}" y1="{_fmt(at)}" y2="{_fmt(at)}" '
            f'stroke="#e3e3e3" stroke-width="1"/>'
        )
        shown = value.normalize() if value != value.to_integral() else value.quantize(Decimal(1))
        parts.append(
            f'<text x="{PAD_LEFT - 6}" y="{_fmt(at + 4)}" text-anchor="end">{escape(value_format(shown))}</text>'
        )
    if days:
        labelled = sorted({0, len(days) // 2, len(days) - 1})
        for index in labelled:
            # The last label ends at its point, so it never runs off the chart's right edge.
            anchor = "end" if index == len(days) - 1 and len(days) > 1 else "middle"
            parts.append(
                f'<text x="{_fmt(x(index))}" y="{bottom + 18}" text-anchor="{anchor}">'
                f"{escape(_day(days[index]))}</text>"
            )
    for line in series:
        points = " ".join(f"{_fmt(x(i))},{_fmt(y(v))}" for i, v in enumerate(line.values))
        parts.append(f'<polyline fill="none" stroke="{line.color}" stroke-width="2" points="{points}"/>')
        for index, value in enumerate(line.values):
            tip = f"{_day(days[index])} · {line.label}: {value_format(value)}"
            parts.append(
                f'<circle cx="{_fmt(x(index))}" cy="{_fmt(y(value))}" r="3" fill="{line.color}">'
                f"<title>{escape(tip)}</title></circle>"
            )
    for number, line in enumerate(series):
        column, row = number % 2, number // 2
        left, top_y = PAD_LEFT + column * (plot_w / 2), HEIGHT - 14 + row * 18
        total = (
            sum(line.values, Decimal(0))
            if any(isinstance(v, Decimal) for v in line.values)
            else sum(int(v) for v in line.values)
        )
        parts.append(
            f'<rect x="{_fmt(left)}" y="{top_y - 10}" width="12" height="12" rx="2" fill="{line.color}"/>'
            f'<text x="{_fmt(left + 18)}" y="{top_y}">{escape(line.label)}: {escape(value_format(total))}</text>'
        )
    parts.append("</g></svg>")
    return Markup("".join(parts))  # noqa: S704 - every piece of text in it was escaped above


def funnel_chart(chart_id: str, stages: Sequence[tuple[str, int]], *, title: str, description: str) -> Markup:
    """Horizontal bars, each as wide as its share of the first stage, with count and percent."""
    _check_id(chart_id)
    bar_h, gap, label_w = 22, 10, 78
    height = PAD_TOP + len(stages) * (bar_h + gap)
    first = stages[0][1] if stages else 0
    bar_w = FUNNEL_WIDTH - label_w - 110
    parts = _head(chart_id, title, description, height, FUNNEL_WIDTH)
    parts.append(f"<g {FONT}>")
    for index, (label, count) in enumerate(stages):
        if count < 0:
            raise ValueError("funnel counts cannot be negative")
        top_y = PAD_TOP + index * (bar_h + gap)
        share = (count / first) if first else 0.0
        share_text = f"{Decimal(count * 100) / Decimal(first):.1f}%" if first else "—"
        parts.append(f'<text x="0" y="{top_y + 15}">{escape(label)}</text>')
        parts.append(
            f'<rect x="{label_w}" y="{top_y}" width="{bar_w}" height="{bar_h}" rx="4" fill="#f1f2f4"/>'
            f'<rect x="{label_w}" y="{top_y}" width="{_fmt(bar_w * min(share, 1.0))}" height="{bar_h}" rx="4" '
            f'fill="#2c6ecb" data-stage="{escape(label)}"><title>{escape(label)}: {count:,} · {share_text}</title></rect>'
        )
        parts.append(
            f'<text x="{label_w + bar_w + 8}" y="{top_y + 15}">{escape(f"{count:,} · {share_text}")}</text>'
        )
    parts.append("</g></svg>")
    return Markup("".join(parts))  # noqa: S704 - every piece of text in it was escaped above


@dataclass(frozen=True)
class Lift:
    """One arm's difference from a reference, with its interval; None bounds: not yet known."""

    label: str
    estimate: float | None
    low: float | None
    high: float | None


def interval_chart(
    chart_id: str,
    lifts: Sequence[Lift],
    *,
    title: str,
    description: str,
    value_format: Callable[[float], str] = lambda value: f"{value:+.2f}",
) -> Markup:
    """Each arm's lift as a line from the low to the high end of its interval, a dot at the
    estimate, against a line at zero: green when the whole interval is above zero, red below,
    grey when it crosses zero (not yet told apart)."""
    _check_id(chart_id)
    row_h, label_w, right = 34, 170, 24
    height = PAD_TOP + max(len(lifts), 1) * row_h + 28
    known = [lift for lift in lifts if lift.low is not None and lift.high is not None]
    reach = max([abs(v) for lift in known for v in (lift.low, lift.high) if v is not None] + [0.0]) or 1.0
    plot_w = WIDTH - label_w - right

    def x(value: float) -> float:
        return label_w + plot_w * (value + reach) / (2 * reach)

    parts = _head(chart_id, title, description, height)
    parts.append(f"<g {FONT}>")
    parts.append(
        f'<line x1="{_fmt(x(0))}" y1="{PAD_TOP - 6}" x2="{_fmt(x(0))}" y2="{height - 26}" '
        'stroke="#8a8a8a" stroke-dasharray="4 3"/>'
        f'<text x="{_fmt(x(0))}" y="{height - 8}" text-anchor="middle">0</text>'
        f'<text x="{_fmt(x(-reach))}" y="{height - 8}">{escape(value_format(-reach))}</text>'
        f'<text x="{_fmt(x(reach))}" y="{height - 8}" text-anchor="end">{escape(value_format(reach))}</text>'
    )
    for index, lift in enumerate(lifts):
        mid = PAD_TOP + index * row_h + row_h / 2
        parts.append(f'<text x="0" y="{_fmt(mid + 5)}">{escape(lift.label)}</text>')
        if lift.low is None or lift.high is None or lift.estimate is None:
            parts.append(
                f'<text x="{_fmt(x(0) + 8)}" y="{_fmt(mid + 5)}" fill="#6d7175">not enough carts yet</text>'
            )
            continue
        colour = "#29845a" if lift.low > 0 else "#c70a24" if lift.high < 0 else "#6d7175"
        tip = (
            f"{lift.label}: {value_format(lift.estimate)} "
            f"(from {value_format(lift.low)} to {value_format(lift.high)})"
        )
        parts.append(
            f'<g data-lift="{escape(lift.label)}"><title>{escape(tip)}</title>'
            f'<line x1="{_fmt(x(lift.low))}" y1="{_fmt(mid)}" x2="{_fmt(x(lift.high))}" y2="{_fmt(mid)}" '
            f'stroke="{colour}" stroke-width="4" stroke-linecap="round"/>'
            f'<circle cx="{_fmt(x(lift.estimate))}" cy="{_fmt(mid)}" r="6" fill="{colour}"/></g>'
        )
    parts.append("</g></svg>")
    return Markup("".join(parts))  # noqa: S704 - every piece of text in it was escaped above
