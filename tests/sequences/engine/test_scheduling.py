"""The cart's wake-ups follow its activity (sequences.engine.scheduling): an alarm set before the
shopper came back does nothing but set the next one."""

from __future__ import annotations

from datetime import timedelta

from sequences.models import StepStatus

MIN = timedelta(minutes=1)
H = timedelta(hours=1)


def test_activity_before_the_deadline_pushes_the_message_back(journey):
    journey.checkout()
    journey.checkout(10 * MIN, first_name="Asha")
    journey.run(15 * MIN)
    assert journey.outbox() == []
    journey.run(25 * MIN)
    assert len(journey.outbox()) == 1


def test_activity_after_a_message_re_times_the_remaining_steps(journey):
    journey.checkout()
    journey.run(15 * MIN)
    journey.checkout(1 * H)  # the shopper came back, then left again
    journey.run(4 * H)
    assert len(journey.outbox()) == 1
    journey.run(5 * H + MIN)
    assert len(journey.outbox()) == 2
    step2 = journey.steps()[1]
    assert step2.status == StepStatus.SENT
