"""The whole recovery flow through webhooks, alarms and the sandbox transport."""

from __future__ import annotations

from datetime import timedelta

from sequences.models import CartStatus

MIN = timedelta(minutes=1)
H = timedelta(hours=1)


def test_nothing_is_sent_while_the_shopper_is_within_the_inactivity_time(journey):
    journey.checkout()
    journey.run(14 * MIN)
    assert journey.outbox() == []
    assert journey.cart().status == CartStatus.ACTIVE


def test_a_quiet_cart_gets_its_first_message_15_minutes_after_the_last_activity(journey):
    journey.checkout()
    journey.run(15 * MIN)
    outbox = journey.outbox()
    assert len(outbox) == 1
    assert outbox[0].to_phone == "+919876543210"
    assert journey.cart().status == CartStatus.RECOVERING
    assert journey.events()[:3] == ["cart_captured", "cart_abandoned", "message_sent"]


def test_three_steps_then_the_sequence_expires_and_never_sends_a_fourth(journey):
    journey.checkout()
    for moment in (15 * MIN, 4 * H, 22 * H, 24 * H, 30 * H, 48 * H):
        journey.run(moment)
    bodies = [message.body for message in journey.outbox()]
    assert len(bodies) == 3
    assert "Claim ₹100 off!" not in bodies[0]
    assert "Claim ₹100 off!" in bodies[1] and "Claim ₹100 off!" in bodies[2]
    assert journey.cart().status == CartStatus.EXPIRED
