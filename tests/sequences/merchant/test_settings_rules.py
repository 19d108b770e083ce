"""Settings validation in the merchant's words, the audit diff, the dashboard's period, and the
message line a merchant writes."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from channels.whatsapp.templates import copy_for
from sequences.engine.messages import step_line
from sequences.merchant.dashboard import PeriodError, period_for
from sequences.merchant.settings_changes import SettingsRejected, diff, validate
from sequences.merchant.store_settings import Offer, StoreSettings


def _problems(payload: dict[str, object]) -> dict[str, str]:
    with pytest.raises(SettingsRejected) as rejected:
        validate(payload)
    return {problem.field: problem.message for problem in rejected.value.problems}


def test_problems_with_single_fields_are_reported_together_in_plain_words() -> None:
    problems = _problems(
        {
            "inactivity_minutes": 2,
            "steps": [
                {"delay_minutes": 30},
                {"delay_minutes": 20, "offer": {"kind": "percent", "value": "10"}},
            ],
            "consent_policy": "anyone",
        }
    )

    assert problems == {
        "inactivity_minutes": "must be at least 5",
        "consent_policy": "must be one of 'checkout_checkbox' or 'store_collects_optin'",
        # A step that is valid on its own is checked too; the order of steps needs a valid timing.
        "steps.1.offer.max_amount": "a percentage offer needs a maximum amount",
    }


def test_cross_field_rules_name_the_field_to_change() -> None:
    problems = _problems(
        {"steps": [{"delay_minutes": 30}, {"delay_minutes": 20, "offer": {"kind": "percent", "value": "10"}}]}
    )

    assert problems == {
        "steps.1.delay_minutes": "step 2 must come after step 1",
        "steps.1.offer.max_amount": "a percentage offer needs a maximum amount",
    }


@pytest.mark.parametrize(
    ("line", "offer", "message"),
    [
        ("Hurry!\nOnly today", None, "one line only: no line breaks, tabs or runs of spaces"),
        ("Get {discount} now", None, "the only placeholder is {offer}"),
        (
            "Come back soon",
            {"kind": "fixed", "value": "100"},
            "include {offer} so the shopper sees the discount",
        ),
        ("Grab {offer}", None, "this step has no offer: remove {offer}"),
        ("x" * 101, None, "keep it to 100 characters (it is 101)"),
    ],
)
def test_a_merchants_line_must_fit_whatsapps_template_parameter(
    line: str, offer: dict[str, str] | None, message: str
) -> None:
    problems = _problems({"steps": [{"delay_minutes": 15, "offer": offer, "copy_lines": {"en": line}}]})

    assert problems == {"steps.0.copy_lines.en": message}


def test_unknown_settings_and_zones_are_refused() -> None:
    problems = _problems({"colour": "red", "timezone": "Asia/Bombay City"})

    assert problems == {
        "colour": "is not a setting",
        "timezone": "is not a time zone we know, e.g. Asia/Kolkata",
    }


def test_valid_settings_come_back_with_exact_money() -> None:
    settings, timezone, paused = validate(
        {
            "steps": [{"delay_minutes": 15, "offer": {"kind": "fixed", "value": Decimal("99.50")}}],
            "timezone": "UTC",
        }
    )

    assert settings.steps[0].offer == Offer(kind="fixed", value=Decimal("99.50"))
    assert (timezone, paused) == ("UTC", None)


def test_the_audit_diff_lists_each_changed_leaf() -> None:
    before = StoreSettings().to_stored()
    after = StoreSettings(max_messages_per_24h=2).to_stored()
    after["steps"][1]["offer"]["value"] = "150"  # type: ignore[index]

    assert diff(before, after) == [
        {"field": "max_messages_per_24h", "from": 3, "to": 2},
        {"field": "steps.1.offer.value", "from": "100", "to": "150"},
    ]


def test_the_merchants_line_replaces_ours_only_when_it_fits_the_cart() -> None:
    words = copy_for("en")
    offer = Offer(kind="fixed", value=Decimal("100"))

    assert step_line(offer, "INR", "en_IN", words, "Today only: {offer}") == "Today only: Claim ₹100 off"
    assert step_line(offer, "INR", "en_IN", words, None) == "Claim ₹100 off!"
    assert step_line(None, "INR", "en_IN", words, "Your cart misses you") == "Your cart misses you"
    # A line written for an offer, on a cart that does not qualify for it: our neutral line.
    assert step_line(None, "INR", "en_IN", words, "Today only: {offer}") == words.no_offer_line


def test_the_default_period_is_the_last_30_store_days() -> None:
    # 20:00 UTC is already the next day in India.
    period = period_for(datetime(2026, 11, 27, 20, 0, tzinfo=UTC), "Asia/Kolkata")

    assert (period.first_day, period.last_day) == (date(2026, 10, 30), date(2026, 11, 28))
    assert period.start == datetime(2026, 10, 29, 18, 30, tzinfo=UTC)
    assert period.end == datetime(2026, 11, 28, 18, 30, tzinfo=UTC)
    assert len(period.days) == 30


@pytest.mark.parametrize(
    ("first", "last", "message"),
    [
        ("2026-11-20", "2026-11-01", "from: must be on or before the 'to' date"),
        ("last week", None, "from: use a date like 2026-10-30"),
        (None, "2026-13-01", "to: use a date like 2026-11-28"),
        ("2024-01-01", "2026-11-28", "from: a period can be at most 366 days"),
        ("0001-01-01", "2026-01-02", "from: choose dates between 2000 and 2100"),
        (None, "0001-01-01", "to: choose a date between 2000 and 2100"),
    ],
)
def test_a_period_that_cannot_be_shown_says_why(first: str | None, last: str | None, message: str) -> None:
    with pytest.raises(PeriodError, match=message):
        period_for(datetime(2026, 11, 28, tzinfo=UTC), "Asia/Kolkata", first, last)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("1E+30", "must be at most 10000000"),
        ("99.999", "can have at most 2 decimal places"),
        ("NaN", "must be a number, like 100 or 99.50"),
    ],
)
def test_an_offer_amount_the_platforms_could_not_hold_is_refused(value: str, message: str) -> None:
    problems = _problems({"steps": [{"delay_minutes": 15, "offer": {"kind": "fixed", "value": value}}]})

    assert problems == {"steps.0.offer.value": message}
