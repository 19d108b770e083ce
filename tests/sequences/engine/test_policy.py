"""The timing policy: pure functions, exact times."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest
from pydantic import ValidationError

from sequences.engine import policy
from sequences.merchant.store_settings import Offer, StepSetting, StoreSettings

IST = "Asia/Kolkata"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_default_steps_fall_at_15_minutes_4_hours_and_22_hours_after_last_activity():
    last_activity = utc(2026, 11, 28, 9, 0)  # 14:30 IST: no step lands in quiet hours
    plan = policy.plan_steps(last_activity, StoreSettings(), IST)
    assert [step.due_at for step in plan] == [
        last_activity + timedelta(minutes=15),
        last_activity + timedelta(hours=4),
        last_activity + timedelta(hours=22),
    ]
    assert plan[0].offer is None and plan[1].offer is not None


def test_a_step_inside_quiet_hours_moves_to_nine_in_the_morning_store_time():
    last_activity = utc(2026, 11, 28, 12, 0)  # 17:30 IST; step 2 lands at 21:30 IST
    step2 = policy.plan_steps(last_activity, StoreSettings(), IST)[1]
    assert step2.due_at == utc(2026, 11, 29, 3, 30)  # 09:00 IST next day


def test_a_step_whose_next_morning_is_past_the_24_hour_window_is_skipped():
    last_activity = utc(2026, 11, 28, 2, 0)  # 07:30 IST; step 3 at 22 h = 05:30 IST next day
    step3 = policy.plan_steps(last_activity, StoreSettings(), IST)[2]
    # 09:00 IST next day is 25.5 h after last activity: outside the window.
    assert step3.due_at is None
    assert step3.skip_reason is not None and "quiet hours" in step3.skip_reason


def test_two_steps_moved_onto_the_same_morning_do_not_both_send():
    settings = StoreSettings(
        steps=[StepSetting(delay_minutes=15), StepSetting(delay_minutes=60), StepSetting(delay_minutes=120)]
    )
    last_activity = utc(2026, 11, 28, 16, 0)  # 21:30 IST: everything is in quiet hours
    plan = policy.plan_steps(last_activity, settings, IST)
    assert plan[0].due_at == utc(2026, 11, 29, 3, 30)
    assert plan[1].due_at is None and plan[2].due_at is None


def test_quiet_hours_follow_the_store_time_zone_not_utc():
    moment = utc(2026, 11, 28, 16, 0)  # 21:30 in India, 16:00 in London
    settings = StoreSettings()
    assert policy.in_quiet_hours(moment, settings, IST)
    assert not policy.in_quiet_hours(moment, settings, "Europe/London")


def test_quiet_hours_end_is_found_across_a_daylight_saving_change():
    settings = StoreSettings(quiet_hours_start=time(21, 0), quiet_hours_end=time(9, 0))
    # Night of the 2026 spring-forward in London (29 March, 01:00 -> 02:00).
    moment = utc(2026, 3, 28, 23, 0)
    assert policy.after_quiet_hours(moment, settings, "Europe/London") == utc(2026, 3, 29, 8, 0)


def test_disabled_quiet_hours_never_move_a_step():
    settings = StoreSettings(quiet_hours_enabled=False)
    last_activity = utc(2026, 11, 28, 16, 0)
    assert policy.plan_steps(last_activity, settings, IST)[0].due_at == last_activity + timedelta(minutes=15)


def test_time_scale_shrinks_durations_for_the_demo():
    last_activity = utc(2026, 11, 28, 4, 0)
    assert policy.abandoned_at(last_activity, StoreSettings(), time_scale=60) == last_activity + timedelta(
        seconds=15
    )


@pytest.mark.parametrize(
    "changes",
    [
        {"inactivity_minutes": 4},
        {"inactivity_minutes": 121},
        {"steps": []},
        {"steps": [StepSetting(delay_minutes=15)] * 4},
        {"steps": [StepSetting(delay_minutes=60), StepSetting(delay_minutes=30)]},
        {"steps": [StepSetting(delay_minutes=10)]},
    ],
)
def test_settings_outside_the_bounds_are_refused(changes):
    with pytest.raises(ValidationError):
        StoreSettings(**changes)


def test_a_step_after_24_hours_is_refused():
    with pytest.raises(ValidationError):
        StepSetting(delay_minutes=24 * 60 + 1)


def test_a_percentage_offer_needs_a_cap():
    with pytest.raises(ValidationError, match="maximum amount"):
        Offer(kind="percent", value="10")


def test_settings_survive_a_round_trip_through_json():
    settings = StoreSettings(quiet_hours_enabled=False)
    assert StoreSettings.from_stored(settings.to_stored()) == settings
