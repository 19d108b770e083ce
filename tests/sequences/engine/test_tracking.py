"""What the store tells us moves the cart (sequences.engine.tracking): snapshots, orders and their
attribution, deleted checkouts."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from sequences.models import CartStatus, StepStatus
from tests.support.factories import order_payload

MIN = timedelta(minutes=1)
H = timedelta(hours=1)


def test_a_stale_snapshot_arriving_late_changes_nothing(journey):
    journey.checkout(2 * MIN, prices=("1499.00",))
    journey.checkout(3 * MIN, prices=("1499.00", "699.00", "849.00"))
    journey.checkout(0 * MIN, prices=("5.00",), first_name="Old")  # an older update, delivered last
    cart = journey.cart()
    assert cart.line_count == 3 and cart.total == Decimal("3047.00")


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
