"""An experiment's results per arm equal a recount from its carts, orders and messages, on
SQLite and PostgreSQL; the holdout's orders count as recovered as any arm's do."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from sqlmodel import select

from sequences.experiments.manage import ArmSpec, start_experiment, with_holdout
from sequences.experiments.results import NET_REVENUE, RECOVERY_RATE, experiment_results
from sequences.models import Cart, Experiment, ExperimentArm, ExperimentAssignment, Message, Store
from tests.support.factories import order_payload

HUNDRED_OFF = {"steps": [{"delay_minutes": 15, "offer": {"kind": "fixed", "value": "100"}}]}


def _shopper(n: int) -> str:
    return f"+91987650{n:04d}"


def _results(runtime):
    with runtime.database.session() as session:
        experiment = session.exec(select(Experiment)).one()
        store = session.get(Store, experiment.store_id)
        assert store is not None
        return experiment_results(session, experiment, runtime.store_settings(store))


def _recount(runtime) -> dict[str, dict[str, object]]:
    """Per arm name, counted cart by cart in Python."""
    with runtime.database.session() as session:
        store = session.get(Store, 1)
        assert store is not None
        margin = runtime.store_settings(store).gross_margin_percent / 100
        arms = {arm.id: arm.name for arm in session.exec(select(ExperimentArm)).all()}
        out: dict[str, dict[str, object]] = {
            name: {
                "eligible": 0,
                "recovered": 0,
                "messaged": 0,
                "revenue": Decimal(0),
                "net": Decimal(0),
                "squares": 0.0,
            }
            for name in arms.values()
        }
        for assignment in session.exec(select(ExperimentAssignment)).all():
            cart = session.get(Cart, assignment.cart_id)
            assert cart is not None
            row = out[arms[assignment.arm_id]]
            messages = session.exec(select(Message).where(Message.cart_id == cart.id)).all()
            cost = sum((m.cost or Decimal(0) for m in messages), Decimal(0))
            row["eligible"] = int(row["eligible"]) + 1
            row["messaged"] = int(row["messaged"]) + (1 if any(m.sent_at for m in messages) else 0)
            bought = (
                cart.ordered_at is not None
                and cart.ordered_at <= assignment.counts_until
                and cart.order_cancelled_at is None
            )
            revenue = (
                (cart.order_total_store or Decimal(0)) - (cart.order_refunded or Decimal(0))
                if bought
                else Decimal(0)
            )
            discount = (cart.discount_given or Decimal(0)) if bought else Decimal(0)
            row["recovered"] = int(row["recovered"]) + int(bought)
            row["revenue"] = Decimal(str(row["revenue"])) + revenue
            net = revenue * margin - discount - cost
            row["net"] = Decimal(str(row["net"])) + net
            row["squares"] = float(str(row["squares"])) + float(net) ** 2
    return out


@pytest.mark.postgres
def test_results_per_arm_equal_a_recount_from_carts_orders_and_messages(journey):
    arms = with_holdout([ArmSpec("₹0 off", control=True), ArmSpec("₹100 off", overrides=HUNDRED_OFF)], 0.34)
    start_experiment(journey.runtime, 1, "Does ₹100 off pay?", arms)
    for n in range(60):
        journey.checkout(checkout_id=f"chk_{n}", token=f"tok_{n}", phone=_shopper(n))
    journey.run(timedelta(minutes=16))
    # A third of the shoppers buy within the window, whatever their arm; one buys too late.
    for n in range(0, 60, 3):
        journey.webhook(
            timedelta(hours=2),
            "orders/create",
            order_payload(checkout_id=f"chk_{n}", token=f"tok_{n}", total=f"{1000 + n}.50"),
        )
    journey.webhook(
        timedelta(days=8), "orders/create", order_payload(checkout_id="chk_1", token="tok_1", total="999.00")
    )
    # Meta's charge on some messages, our discount on some orders, a refund on one.
    with journey.runtime.database.session() as session:
        for message in session.exec(select(Message)).all()[::2]:
            message.cost = Decimal("0.7846")
            session.add(message)
        for cart in session.exec(select(Cart).where(Cart.ordered_at != None)).all()[::2]:  # noqa: E711
            cart.discount_given = Decimal("100.00")
            session.add(cart)
        refunded = session.exec(select(Cart).where(Cart.platform_cart_id == "chk_3")).one()
        refunded.order_refunded = Decimal("250.25")
        session.add(refunded)
        # A cash-on-delivery order returned undelivered: no longer recovered.
        cancelled = session.exec(select(Cart).where(Cart.platform_cart_id == "chk_6")).one()
        cancelled.order_cancelled_at = cancelled.ordered_at
        session.add(cancelled)
        session.commit()
    results = _results(journey.runtime)
    recount = _recount(journey.runtime)
    assert {arm.name for arm in results.arms} == set(recount)
    for arm in results.arms:
        expected = recount[arm.name]
        assert arm.eligible == expected["eligible"]
        assert arm.recovered == expected["recovered"]
        assert arm.messaged == expected["messaged"]
        assert arm.revenue == expected["revenue"]
        assert arm.net_revenue == Decimal(str(expected["net"])).quantize(Decimal("0.0001"))
        # The intervals' sum of squares, from the kept Σr², Σr·s and Σs²: each cart's, summed.
        assert arm.net_squares == pytest.approx(float(str(expected["squares"])), rel=1e-9)
    assert sum(arm.eligible for arm in results.arms) == 60
    assert sum(arm.recovered for arm in results.arms) == 19
    holdout = next(arm for arm in results.arms if arm.holdout)
    # The holdout is never messaged, and its shoppers' orders count all the same.
    assert holdout.messaged == 0 and holdout.recovered > 0
    assert holdout.messaging_cost == 0


@pytest.mark.postgres
def test_below_a_hundred_carts_an_arm_has_no_interval_and_no_winner(journey):
    start_experiment(
        journey.runtime, 1, "Early", [ArmSpec("a", control=True), ArmSpec("b", overrides=HUNDRED_OFF)]
    )
    for n in range(10):
        journey.checkout(checkout_id=f"chk_{n}", token=f"tok_{n}", phone=_shopper(n))
    journey.run(timedelta(minutes=16))
    results = _results(journey.runtime)
    challenger = next(arm for arm in results.arms if not arm.control)
    for metric in (NET_REVENUE, RECOVERY_RATE):
        comparison = results.comparison(challenger.arm_id, "control", metric)
        assert comparison is not None and comparison.interval is None
    assert results.better == []
    assert results.sample_ratio.p_value is None


def test_an_experiment_with_no_cart_yet_shows_every_arm_at_zero(journey):
    start_experiment(
        journey.runtime, 1, "New", [ArmSpec("a", control=True), ArmSpec("b", overrides=HUNDRED_OFF)]
    )
    results = _results(journey.runtime)
    assert [(arm.name, arm.eligible, arm.net_revenue) for arm in results.arms] == [
        ("a", 0, Decimal("0.0000")),
        ("b", 0, Decimal("0.0000")),
    ]


def test_the_sample_ratio_check_flags_counts_far_from_the_weights():
    from sequences.experiments.results import ArmResult, _sample_ratio

    def arm(eligible: int, weight: int) -> ArmResult:
        zero = Decimal(0)
        return ArmResult(1, "x", weight, False, False, eligible, 0, 0, 0, 0, 0, zero, zero, zero, zero, 0.0)

    assert not _sample_ratio([arm(5_020, 1), arm(4_980, 1)]).mismatch
    assert _sample_ratio([arm(5_400, 1), arm(4_600, 1)]).mismatch
    assert not _sample_ratio([arm(9_010, 9), arm(990, 1)]).mismatch
    assert _sample_ratio([arm(9_500, 9), arm(500, 1)]).mismatch
