"""The whole recovery flow through webhooks, alarms and the sandbox transport."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from sequences.merchant.store_settings import Offer, StepSetting, StoreSettings
from sequences.models import CartStatus, StepStatus
from tests.support.factories import make_store, order_payload
from tests.support.journey import Journey

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


def test_the_message_shows_the_shopper_the_items_total_image_link_and_how_to_stop(journey):
    journey.checkout(prices=("1499.00", "699.00", "849.00"))
    journey.run(15 * MIN)
    message = journey.outbox()[0]
    assert message.body.startswith("Hi Asha, you left Handloom Cotton Kurta and 2 more in your cart")
    assert "Total: ₹3,047.00" in message.body
    assert message.body.endswith("Not interested? Tap Stop promotions.")
    assert message.image_url == "http://localhost/demo-store/images/p0.svg"
    assert message.buttons[0]["url"].startswith("http://localhost/r/")
    assert message.buttons[1]["text"] == "Stop promotions"


def test_activity_before_the_deadline_pushes_the_message_back(journey):
    journey.checkout()
    journey.checkout(10 * MIN, first_name="Asha")
    journey.run(15 * MIN)
    assert journey.outbox() == []
    journey.run(25 * MIN)
    assert len(journey.outbox()) == 1


def test_three_steps_then_the_sequence_expires_and_never_sends_a_fourth(journey):
    journey.checkout()
    for moment in (15 * MIN, 4 * H, 22 * H, 24 * H, 30 * H, 48 * H):
        journey.run(moment)
    bodies = [message.body for message in journey.outbox()]
    assert len(bodies) == 3
    assert "Claim ₹100 off!" not in bodies[0]
    assert "Claim ₹100 off!" in bodies[1] and "Claim ₹100 off!" in bodies[2]
    assert journey.cart().status == CartStatus.EXPIRED


def test_a_cart_below_the_offer_minimum_gets_no_discount_line(journey):
    journey.checkout(prices=("399.00",))
    journey.run(15 * MIN)
    journey.run(4 * H)
    assert "Claim" not in journey.outbox()[1].body


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


def test_a_shopper_without_consent_is_never_messaged(journey):
    journey.checkout(consent=False)
    journey.run(15 * MIN)
    journey.run(4 * H)
    assert journey.outbox() == []
    assert journey.cart().status == CartStatus.UNREACHABLE
    assert journey.cart().status_reason == "no marketing consent"


def test_a_cart_without_a_phone_is_unreachable(journey):
    journey.checkout(phone=None)
    journey.run(15 * MIN)
    assert journey.cart().status == CartStatus.UNREACHABLE


def test_an_emptied_cart_is_not_chased(journey):
    journey.checkout()
    journey.checkout(MIN, prices=())
    journey.run(20 * MIN)
    assert journey.outbox() == []


def test_buying_before_any_message_is_unassisted_and_stops_the_sequence(journey):
    journey.checkout()
    journey.webhook(5 * MIN, "orders/create", order_payload(total="2198.00"))
    journey.run(15 * MIN)
    assert journey.outbox() == []
    cart = journey.cart()
    assert cart.status == CartStatus.CONVERTED_UNASSISTED
    assert cart.order_total == Decimal("2198.00")


def test_buying_after_a_message_recovers_the_cart_with_the_real_order_total(journey):
    journey.checkout()
    journey.run(15 * MIN)
    journey.webhook(30 * MIN, "orders/create", order_payload(total="2098.00"))
    journey.run(4 * H)
    cart = journey.cart()
    assert cart.status == CartStatus.RECOVERED
    assert cart.order_total == Decimal("2098.00") and cart.order_currency == "INR"
    assert len(journey.outbox()) == 1
    assert [step.status for step in journey.steps()][1:] == [StepStatus.CANCELLED, StepStatus.CANCELLED]


def test_orders_paid_after_orders_create_does_not_count_twice(journey):
    journey.checkout()
    journey.run(15 * MIN)
    order = order_payload(order_id="ord_77", total="2098.00")
    journey.webhook(30 * MIN, "orders/create", order)
    journey.webhook(31 * MIN, "orders/paid", order)
    assert journey.cart().order_platform_id == "ord_77"
    assert journey.events().count("cart_recovered") == 1


def test_an_order_matched_by_phone_within_the_window_is_attributed(journey):
    journey.checkout()
    journey.run(15 * MIN)
    order = order_payload(checkout_id=None, token=None, phone="98765 43210", created_at=None)
    journey.webhook(2 * H, "orders/create", order)
    assert journey.cart().status == CartStatus.RECOVERED


def test_an_order_after_the_attribution_window_is_not_credited(journey):
    journey.checkout()
    journey.run(15 * MIN)
    from tests.support.journey import T0

    journey.webhook(8 * 24 * H, "orders/create", order_payload(created_at=T0 + 8 * 24 * H))
    cart = journey.cart()
    assert cart.status == CartStatus.CONVERTED_UNASSISTED
    assert cart.status_reason == "outside the attribution window"


def test_a_deleted_checkout_stops_its_sequence(journey):
    journey.checkout()
    journey.webhook(5 * MIN, "checkouts/delete", {"id": "chk_1", "deleted_at": "2026-11-28T09:05:00Z"})
    journey.run(15 * MIN)
    assert journey.outbox() == []
    assert journey.cart().status == CartStatus.EXPIRED


def test_a_newer_cart_replaces_the_older_sequence_of_the_same_shopper(journey):
    journey.checkout()
    journey.run(15 * MIN)
    journey.checkout(20 * MIN, checkout_id="chk_2", token="tok_2")
    journey.run(35 * MIN)
    journey.run(4 * H)
    journey.run(5 * H)
    assert journey.cart("chk_1").status == CartStatus.EXPIRED
    assert journey.cart("chk_1").status_reason == f"replaced by newer cart {journey.cart('chk_2').id}"
    sent_for = [message.cart_id for message in journey.messages()]
    assert sent_for.count(journey.cart("chk_1").id) == 1  # its step 2 never went out
    assert sent_for.count(journey.cart("chk_2").id) == 2


def test_the_frequency_cap_limits_messages_to_one_shopper_across_carts(client, runtime, drain):
    make_store(runtime, settings=StoreSettings(quiet_hours_enabled=False, max_messages_per_24h=1))
    journey = Journey(client, runtime, drain)
    journey.checkout()
    journey.run(15 * MIN)
    journey.checkout(20 * MIN, checkout_id="chk_2", token="tok_2")
    journey.run(40 * MIN)
    assert len(journey.outbox()) == 1
    assert journey.steps("chk_2")[0].reason == "frequency cap: 1 messages in 24 h"


def test_a_step_due_in_quiet_hours_waits_for_the_morning(client, runtime, drain):
    settings = StoreSettings(
        steps=[
            StepSetting(delay_minutes=15),
            StepSetting(delay_minutes=8 * 60, offer=Offer(kind="fixed", value="100")),
        ]
    )
    make_store(runtime, settings=settings)
    journey = Journey(client, runtime, drain)
    journey.checkout()  # 14:30 IST; step 2 lands at 22:30 IST
    journey.run(15 * MIN)
    journey.run(8 * H + MIN)
    assert len(journey.outbox()) == 1
    journey.run(18 * H + 31 * MIN)  # 09:01 IST next day
    assert len(journey.outbox()) == 2


def test_a_stale_snapshot_arriving_late_changes_nothing(journey):
    journey.checkout(2 * MIN, prices=("1499.00",))
    journey.checkout(3 * MIN, prices=("1499.00", "699.00", "849.00"))
    journey.checkout(0 * MIN, prices=("5.00",), first_name="Old")  # an older update, delivered last
    cart = journey.cart()
    assert cart.line_count == 3 and cart.total == Decimal("3047.00")


def test_a_paused_store_skips_due_steps(client, runtime, drain, journey):
    from sqlmodel import select

    from sequences.models import Store

    with runtime.database.session() as session:
        store = session.exec(select(Store)).one()
        store.sending_paused, store.pause_reason = True, "merchant paused"
    journey.checkout()
    journey.run(15 * MIN)
    assert journey.outbox() == []
    assert journey.steps()[0].reason == "sending paused: merchant paused"


def test_after_an_outage_only_the_latest_overdue_step_is_sent(journey):
    journey.checkout()
    journey.run(5 * MIN)
    # Nothing ran between 5 minutes and 5 hours (workers down): steps 1 and 2 are both overdue.
    journey.run(5 * H)
    assert len(journey.outbox()) == 1
    assert "Claim ₹100 off!" in journey.outbox()[0].body
    statuses = [(step.status, step.reason) for step in journey.steps()[:2]]
    assert statuses == [
        (StepStatus.SKIPPED, "superseded: a later step was already due"),
        (StepStatus.SENT, None),
    ]
