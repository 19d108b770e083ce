"""The timing policy as pure functions: when a cart is abandoned, when each step is due.

Durations are policy time; ``time_scale`` (demo only) divides them so 15 policy minutes can
pass in 15 seconds. Quiet hours are wall-clock hours in the store's time zone and are never
scaled. All datetimes in and out are aware UTC.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from sequences.merchant.store_settings import SEQUENCE_WINDOW_MINUTES, Offer, StoreSettings


@dataclass(frozen=True)
class PlannedStep:
    step_number: int
    due_at: datetime | None
    offer: Offer | None
    # Why the step will not be sent (then due_at is None).
    skip_reason: str | None = None


def scaled(minutes: float, time_scale: float) -> timedelta:
    return timedelta(minutes=minutes / time_scale)


def abandoned_at(last_activity_at: datetime, settings: StoreSettings, time_scale: float = 1) -> datetime:
    """The moment a quiet cart counts as abandoned."""
    return last_activity_at + scaled(settings.inactivity_minutes, time_scale)


def sequence_window_end(last_activity_at: datetime, time_scale: float = 1) -> datetime:
    """No step is sent later than 24 h after the cart's last activity."""
    return last_activity_at + scaled(SEQUENCE_WINDOW_MINUTES, time_scale)


def in_quiet_hours(moment: datetime, settings: StoreSettings, timezone: str) -> bool:
    if not settings.quiet_hours_enabled:
        return False
    local = moment.astimezone(ZoneInfo(timezone)).time()
    return _within(local, settings.quiet_hours_start, settings.quiet_hours_end)


def _within(local: time, start: time, end: time) -> bool:
    if start == end:
        return False
    if start < end:
        return start <= local < end
    # The window crosses midnight (21:00-09:00).
    return local >= start or local < end


def after_quiet_hours(moment: datetime, settings: StoreSettings, timezone: str) -> datetime:
    """The first instant at or after ``moment`` outside quiet hours (the next quiet_hours_end)."""
    if not in_quiet_hours(moment, settings, timezone):
        return moment
    zone = ZoneInfo(timezone)
    local = moment.astimezone(zone)
    candidate = datetime.combine(local.date(), settings.quiet_hours_end, tzinfo=zone)
    if candidate <= local:
        candidate = datetime.combine(local.date() + timedelta(days=1), settings.quiet_hours_end, tzinfo=zone)
    # combine() with a zone picks the wall time; normalise through UTC for DST gaps.
    return candidate.astimezone(moment.tzinfo)


def place_step(
    due_at: datetime,
    last_activity_at: datetime,
    settings: StoreSettings,
    timezone: str,
    time_scale: float = 1,
) -> tuple[datetime | None, str | None]:
    """Apply quiet hours and the 24 h window to one step's natural due time."""
    window_end = sequence_window_end(last_activity_at, time_scale)
    moved = after_quiet_hours(due_at, settings, timezone)
    if moved > window_end:
        reason = (
            "quiet hours: next morning is past the 24 h window" if moved != due_at else "past the 24 h window"
        )
        return None, reason
    return moved, None


def plan_steps(
    last_activity_at: datetime,
    settings: StoreSettings,
    timezone: str,
    time_scale: float = 1,
) -> list[PlannedStep]:
    """Every configured step, timed from the cart's last activity.

    A step moved by quiet hours onto (or before) an earlier step's time is skipped rather than
    sent as a double message.
    """
    planned: list[PlannedStep] = []
    previous_due: datetime | None = None
    for number, step in enumerate(settings.steps, start=1):
        natural = last_activity_at + scaled(step.delay_minutes, time_scale)
        due_at, reason = place_step(natural, last_activity_at, settings, timezone, time_scale)
        if due_at is not None and previous_due is not None and due_at <= previous_due:
            due_at, reason = None, "quiet hours: would coincide with an earlier step"
        planned.append(PlannedStep(number, due_at, step.offer, reason))
        if due_at is not None:
            previous_due = due_at
    return planned


def attribution_window(settings: StoreSettings, time_scale: float = 1) -> timedelta:
    return scaled(settings.attribution_days * 24 * 60, time_scale)


def frequency_window(time_scale: float = 1) -> timedelta:
    return scaled(24 * 60, time_scale)
