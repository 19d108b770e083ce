"""The dashboard's server-side SVG charts: well-formed, accessible, exact, and safe with text."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import date, timedelta
from decimal import Decimal

import pytest

from app.admin.charts import Series, daily_chart, funnel_chart, nice_max

SVG = "{http://www.w3.org/2000/svg}"
DAYS = [date(2026, 11, 1) + timedelta(days=n) for n in range(5)]


def _svg(markup: str) -> ET.Element:
    return ET.fromstring(str(markup))


def _texts(root: ET.Element) -> list[str]:
    return ["".join(node.itertext()) for node in root.iter(f"{SVG}text")]


def test_a_daily_chart_is_one_accessible_svg_with_a_line_and_a_point_per_day() -> None:
    chart = _svg(
        daily_chart(
            "daily",
            DAYS,
            [Series("Abandoned", [1, 2, 3, 4, 37], "#888"), Series("Sent", [0, 1, 1, 2, 3], "#2c6ecb")],
            title="By day",
            description="Carts by day",
        )
    )

    assert chart.tag == f"{SVG}svg" and chart.get("role") == "img"
    assert chart.get("aria-labelledby") == "daily-title daily-desc"
    assert chart.find(f"{SVG}title").text == "By day"  # type: ignore[union-attr]
    assert len(list(chart.iter(f"{SVG}polyline"))) == 2
    assert len(list(chart.iter(f"{SVG}circle"))) == 10
    # 37 rounds up to a top gridline of 40, in 4 steps.
    assert [t for t in _texts(chart) if t in ("0", "10", "20", "30", "40")] == ["0", "10", "20", "30", "40"]
    assert "Abandoned: 47" in _texts(chart) and "Sent: 7" in _texts(chart)


def test_the_title_and_desc_carry_the_ids_that_aria_labelledby_names() -> None:
    chart = _svg(daily_chart("daily", DAYS, [], title="By day", description="Carts by day"))

    ids = (chart.get("aria-labelledby") or "").split()
    labels = {node.get("id"): node.text for node in chart if node.tag in (f"{SVG}title", f"{SVG}desc")}

    assert ids == ["daily-title", "daily-desc"]
    assert labels == {"daily-title": "By day", "daily-desc": "Carts by day"}


def test_a_chart_scales_to_the_width_of_its_container_with_no_fixed_height() -> None:
    chart = _svg(daily_chart("d", DAYS, [], title="t", description="d"))

    assert chart.get("width") == "100%" and chart.get("height") is None
    assert chart.get("viewBox", "").startswith("0 0 640 ")
    assert chart.get("preserveAspectRatio") == "xMidYMid meet"


def test_text_is_at_least_11_units_high_so_it_reads_on_a_360px_phone() -> None:
    markup = str(daily_chart("d", DAYS, [Series("a", [1] * 5, "#000")], title="t", description="d"))
    markup += str(funnel_chart("f", [("Sent", 1)], title="t", description="d"))

    sizes = [float(size) for size in re.findall(r'font-size="([^"]+)"', markup)]

    assert sizes and min(sizes) >= 11


def test_coordinates_have_at_most_two_decimals_and_no_exponent() -> None:
    # Given 7 days (536/6 units apart) and a top of 2000 (168/2000 units a cart): long decimals.
    days = [date(2026, 11, 1) + timedelta(days=n) for n in range(7)]
    values = [1, 3, 7, 11, 13, 999, 0]
    chart = _svg(daily_chart("d", days, [Series("a", values, "#000")], title="t", description="d"))

    drawn = ("x", "y", "x1", "x2", "y1", "y2", "cx", "cy", "points")
    numbers = [n for node in chart.iter() for a in drawn for n in re.split("[ ,]", node.get(a) or "") if n]

    assert len(numbers) > 7 * 4
    assert all(re.fullmatch(r"\d+(\.\d{1,2})?", number) for number in numbers)


def test_the_x_axis_labels_the_first_middle_and_last_day() -> None:
    chart = _svg(daily_chart("d", DAYS, [Series("a", [1] * 5, "#000")], title="t", description="d"))

    assert [t for t in _texts(chart) if t.endswith(" Nov")] == ["1 Nov", "3 Nov", "5 Nov"]


def test_each_point_has_a_tooltip_naming_the_day_series_and_value() -> None:
    chart = _svg(
        daily_chart("d", DAYS, [Series("Sent", [0, 1, 1, 2, 3], "#2c6ecb")], title="t", description="d")
    )

    tips = [node.text for node in chart.iter(f"{SVG}title")][1:]

    assert tips[0] == "1 Nov · Sent: 0" and tips[-1] == "5 Nov · Sent: 3"


def test_money_is_formatted_by_the_caller_and_summed_exactly() -> None:
    values = [Decimal("0.10"), Decimal("0.20"), Decimal("0.30"), Decimal("0"), Decimal("1499.00")]
    chart = _svg(
        daily_chart(
            "revenue",
            DAYS,
            [Series("Revenue", values, "#29845a")],
            title="t",
            description="d",
            value_format=lambda amount: f"₹{amount}",
        )
    )

    assert "Revenue: ₹1499.60" in _texts(chart)


def test_hostile_labels_are_escaped() -> None:
    markup = daily_chart(
        "x", DAYS[:1], [Series('<script>alert(1)</script>&"', [1], "#000")], title="<b>", description="&"
    )

    assert "<script>" not in str(markup)
    assert _svg(markup).find(f"{SVG}title").text == "<b>"  # type: ignore[union-attr]


def test_empty_and_single_day_charts_render() -> None:
    empty = _svg(daily_chart("e", DAYS, [Series("None", [0] * 5, "#000")], title="t", description="d"))
    single = _svg(daily_chart("s", DAYS[:1], [Series("One", [3], "#000")], title="t", description="d"))

    assert len(list(empty.iter(f"{SVG}circle"))) == 5
    (point,) = single.iter(f"{SVG}circle")
    assert float(point.get("cx", "0")) > 200  # centred, not at the left edge


def test_a_chart_with_no_days_renders_an_empty_grid() -> None:
    chart = _svg(daily_chart("e", [], [Series("None", [], "#000")], title="t", description="d"))

    assert list(chart.iter(f"{SVG}circle")) == []
    assert "None: 0" in _texts(chart)


@pytest.mark.parametrize(
    ("chart_id", "series"),
    [
        ("Bad Id", [Series("a", [1] * 5, "#000")]),
        ("ok", [Series("a", [1, 2], "#000")]),
        ("ok", [Series("a", [1, 2, 3, 4, -1], "#000")]),
        ("ok", [Series("a", [1, 2, 3, 4, 5.5], "#000")]),  # type: ignore[list-item]
        ("ok", [Series("a", [1] * 5, "red; stroke: url(x)")]),
        ("ok\n", [Series("a", [1] * 5, "#000")]),
        ("ok", [Series("a", [1] * 5, "#000\n")]),
        ("ok", [Series("a", [1, 2, 3, 4, Decimal("NaN")], "#000")]),
        ("ok", [Series("a", [1, 2, 3, 4, Decimal("Infinity")], "#000")]),
    ],
    ids=["id", "length", "negative", "float", "colour", "id-newline", "colour-newline", "nan", "infinity"],
)
def test_wrong_input_is_refused(chart_id: str, series: list[Series]) -> None:
    with pytest.raises(ValueError):
        daily_chart(chart_id, DAYS, series, title="t", description="d")


def test_funnel_bars_are_as_wide_as_their_share_of_the_first_stage() -> None:
    chart = _svg(
        funnel_chart("funnel", [("Sent", 200), ("Read", 50), ("Clicked", 0)], title="t", description="d")
    )

    bars = [rect for rect in chart.iter(f"{SVG}rect") if rect.get("data-stage")]
    widths = [float(rect.get("width", "0")) for rect in bars]

    assert widths[1] == pytest.approx(widths[0] / 4) and widths[2] == 0
    assert "50 · 25.0%" in _texts(chart) and "200 · 100.0%" in _texts(chart)


def test_a_funnel_with_nothing_sent_shows_dashes_not_a_division_by_zero() -> None:
    chart = _svg(funnel_chart("funnel", [("Sent", 0), ("Read", 0)], title="t", description="d"))

    assert "0 · —" in _texts(chart)


def test_a_funnel_with_nothing_sent_draws_empty_bars() -> None:
    chart = _svg(funnel_chart("funnel", [("Sent", 0), ("Read", 0)], title="t", description="d"))

    widths = [rect.get("width") for rect in chart.iter(f"{SVG}rect") if rect.get("data-stage")]

    assert widths == ["0", "0"]


def test_funnel_counts_group_thousands_and_percentages_keep_one_decimal() -> None:
    chart = _svg(funnel_chart("funnel", [("Sent", 2176), ("Read", 1234)], title="t", description="d"))

    assert "1,234 · 56.7%" in _texts(chart)


def test_funnel_labels_are_escaped() -> None:
    markup = funnel_chart("funnel", [('<script>&"', 1)], title="t", description="d")

    assert "<script>" not in str(markup)
    assert '<script>&"' in _texts(_svg(markup))


@pytest.mark.parametrize(
    ("largest", "top"),
    [
        (0, 4),
        (1, 4),
        (5, 8),
        (9, 20),
        (37, 40),
        (41, 80),
        (101, 200),
        (Decimal("3499.00"), 4000),
        (Decimal("3E+40"), Decimal("4E+40")),
    ],
)
def test_the_y_axis_tops_at_a_round_number(largest: int | Decimal, top: int) -> None:
    assert nice_max(largest) == top
