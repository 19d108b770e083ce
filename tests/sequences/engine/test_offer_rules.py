"""The store's discount rules as messages go out: no repeat offer to a shopper within N days,
a monthly budget, a ceiling as a share of the cart. The message still goes, without the offer."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from sqlmodel import select

from sequences.engine import sending
from sequences.merchant.store_settings import Offer, StepSetting, StoreSettings
from sequences.models import Cart, RecoveryStep, StepStatus
from tests.support.factories import make_store
from tests.support.journey import Journey

HUNDRED_OFF = Offer(kind="fixed", value=Decimal("100"))


def _journey(client, runtime, drain, **rules) -> Journey:
    settings = StoreSettings(
        quiet_hours_enabled=False, steps=[StepSetting(delay_minutes=15, offer=HUNDRED_OFF)], **rules
    )
    make_store(runtime, settings=settings)
    return Journey(client, runtime, drain)


def _sent_offer(journey: Journey, platform_cart_id: str) -> dict | None:
    [step] = [s for s in journey.steps(platform_cart_id) if s.status == StepStatus.SENT]
    return step.offer


def test_a_shopper_offered_a_discount_gets_none_for_another_cart_within_30_days(client, runtime, drain):
    journey = _journey(client, runtime, drain)
    journey.checkout(checkout_id="chk_a", token="tok_a")
    journey.run(timedelta(minutes=16))
    assert _sent_offer(journey, "chk_a") == HUNDRED_OFF.model_dump(mode="json")

    journey.checkout(timedelta(days=10), checkout_id="chk_b", token="tok_b")
    journey.run(timedelta(days=10, minutes=16))
    assert _sent_offer(journey, "chk_b") is None
    assert "Claim" not in journey.outbox()[-1].body  # the reminder went, without the offer

    journey.checkout(timedelta(days=31), checkout_id="chk_c", token="tok_c")
    journey.run(timedelta(days=31, minutes=16))
    assert _sent_offer(journey, "chk_c") == HUNDRED_OFF.model_dump(mode="json")


def test_with_the_rule_off_every_cart_gets_its_offer(client, runtime, drain):
    journey = _journey(client, runtime, drain, repeat_offer_days=0)
    journey.checkout(checkout_id="chk_a", token="tok_a")
    journey.run(timedelta(minutes=16))
    journey.checkout(timedelta(days=1), checkout_id="chk_b", token="tok_b")
    journey.run(timedelta(days=1, minutes=16))
    assert _sent_offer(journey, "chk_b") is not None


def test_once_the_months_budget_is_used_offers_stop_until_the_next_month(client, runtime, drain):
    journey = _journey(client, runtime, drain, monthly_discount_budget=Decimal("150"), repeat_offer_days=0)
    # Shoppers used ₹200 of discounts on orders this month (T0 is 1 Dec, store time).
    journey.checkout(checkout_id="chk_old", token="tok_old", phone="+919876500077")
    with journey.runtime.database.session() as session:
        cart = session.exec(select(Cart).where(Cart.platform_cart_id == "chk_old")).one()
        cart.discount_given, cart.ordered_at = Decimal("200.00"), journey.runtime.now()
        session.add(cart)
        session.commit()
    journey.checkout(timedelta(days=2), checkout_id="chk_a", token="tok_a")
    journey.run(timedelta(days=2, minutes=16))
    assert _sent_offer(journey, "chk_a") is None


def test_an_offer_above_the_ceiling_is_cut_down_to_it(client, runtime, drain):
    journey = _journey(client, runtime, drain, max_offer_percent=Decimal("3"))
    journey.checkout(checkout_id="chk_a", token="tok_a")  # ₹2,198 cart: 3 % is ₹65.94
    journey.run(timedelta(minutes=16))
    assert _sent_offer(journey, "chk_a") == Offer(kind="fixed", value=Decimal("65")).model_dump(mode="json")
    assert "₹65" in journey.outbox()[-1].body


@pytest.mark.parametrize("path", ["batches", "per cart"])
def test_both_send_paths_apply_the_repeat_rule(client, runtime, drain, path):
    journey = _journey(client, runtime, drain)
    journey.checkout(checkout_id="chk_a", token="tok_a")
    journey.run(timedelta(minutes=16))
    journey.checkout(timedelta(days=1), checkout_id="chk_b", token="tok_b")
    if path == "batches":
        journey.run(timedelta(days=1, minutes=16))
    else:
        with journey.at(timedelta(days=1, minutes=16)):
            sending.advance_cart(runtime, journey.cart("chk_b").id or 0)
            drain()
    with runtime.database.session() as session:
        steps = session.exec(
            select(RecoveryStep).where(RecoveryStep.cart_id == journey.cart("chk_b").id)
        ).all()
    assert [s.status for s in steps] == [StepStatus.SENT] and steps[0].offer is None
