"""Discount calibration: net revenue per eligible cart at each offer level shown, from the
store's history and its offer experiments, and the level that maximises it."""

from __future__ import annotations

import random
from datetime import timedelta
from decimal import Decimal

from sqlmodel import select

from sequences.experiments.calibration import NO_OFFER, calibrate
from sequences.models import Cart, Contact, RecoveryStep, StepStatus, Store
from tests.support.experiments import seed_experiment, sold_or_not

HUNDRED = {"kind": "fixed", "value": "100"}
TEN_PERCENT = {"kind": "percent", "value": "10", "max_amount": "300"}


def _history(
    runtime, levels: dict[str, tuple[dict | None, int, float]], store_id: int = 1
) -> dict[str, Decimal]:
    """Messaged carts per offer level ({label: (offer, carts, rate)}); returns each level's net
    revenue summed by hand (margin 40 %, no messaging cost)."""
    chooser = random.Random(5)
    now = runtime.now()
    expected: dict[str, Decimal] = {}
    number = 0
    with runtime.database.session() as session:
        for label, (offer, carts, rate) in levels.items():
            expected[label] = Decimal(0)
            for _ in range(carts):
                number += 1
                contact = Contact(
                    store_id=store_id, phone_e164=f"+9190000{number:05d}", marketing_consent=True
                )
                session.add(contact)
                session.flush()
                abandoned = now - timedelta(days=10, minutes=number)
                bought = chooser.random() < rate
                total = Decimal("1000.00")
                discount = Decimal("100.00") if bought and offer else None
                cart = sold_or_not(
                    store_id,
                    f"cal_{number}",
                    contact.id,
                    abandoned,
                    total=total,
                    bought_after=timedelta(hours=3) if bought else None,
                    discount=discount,
                    first_message_at=abandoned + timedelta(minutes=15),
                )
                session.add(cart)
                session.flush()
                session.add(
                    RecoveryStep(
                        store_id=store_id,
                        cart_id=cart.id,
                        step_number=1,
                        status=StepStatus.SENT,
                        offer=offer,
                        attempted_at=abandoned + timedelta(minutes=15),
                        sent_at=abandoned + timedelta(minutes=15),
                    )
                )
                if bought:
                    expected[label] += total * Decimal("0.40") - (discount or Decimal(0))
        session.commit()
    return expected


def _calibrate(runtime):
    with runtime.database.session() as session:
        store = session.get(Store, 1)
        assert store is not None
        return calibrate(session, store, runtime.store_settings(store), runtime.now())


def test_each_offer_level_shows_its_carts_and_net_revenue_and_the_best_is_named(journey):
    expected = _history(
        journey.runtime,
        {
            NO_OFFER: (None, 300, 0.05),
            "₹100 off": (HUNDRED, 300, 0.60),
            "10% off, up to ₹300": (TEN_PERCENT, 40, 0.3),
        },
    )
    found = _calibrate(journey.runtime)
    by_label = {level.label: level for level in found.history}
    assert by_label[NO_OFFER].carts == 300 and by_label[NO_OFFER].net_revenue == expected[NO_OFFER]
    hundred = next(level for label, level in by_label.items() if "100" in label and "%" not in label)
    assert hundred.carts == 300 and hundred.net_revenue == expected["₹100 off"]
    # Under 100 carts: shown, with no range, and never named best.
    small = next(level for level in found.history if "%" in level.label)
    assert small.carts == 40 and small.interval is None
    # ₹100 off brings 60 % back at ₹300 net each, against 5 % at ₹400: clearly best.
    assert found.best is hundred and found.clear
    assert hundred.interval is not None and hundred.interval.covers(float(hundred.net_per_cart))


def test_levels_whose_ranges_overlap_name_the_highest_but_not_as_clearly_best(journey):
    _history(journey.runtime, {NO_OFFER: (None, 150, 0.30), "₹100 off": (HUNDRED, 150, 0.33)})
    found = _calibrate(journey.runtime)
    assert found.best is not None and not found.clear


def test_carts_not_messaged_or_older_than_90_days_are_left_out(journey):
    _history(journey.runtime, {NO_OFFER: (None, 5, 0.5)})
    with journey.runtime.database.session() as session:
        carts = session.exec(select(Cart).where(Cart.store_id == 1)).all()
        carts[0].abandoned_at = journey.runtime.now() - timedelta(days=91)
        carts[1].first_message_at = None
        session.commit()
    found = _calibrate(journey.runtime)
    assert sum(level.carts for level in found.history) == 3


def test_an_offer_experiments_arms_show_with_the_offer_they_test(journey):
    seed_experiment(journey.runtime, 1, per_arm=120)
    found = _calibrate(journey.runtime)
    labels = {level.source.split(" · ")[1]: level for level in found.experiments}
    assert set(labels) == {"₹0 off", "₹100 off"}
    assert "100" in labels["₹100 off"].label
    assert labels["₹0 off"].carts == 120 and labels["₹100 off"].carts == 120
