"""An experiment end to end through the demo platform: three arms (holdout, ₹0 off, ₹100 off),
a few hundred shoppers who buy with probabilities fixed per arm, and the results page and API
equal to a recount from the carts and orders."""

from __future__ import annotations

import random
from datetime import timedelta
from decimal import Decimal
from typing import Any

from sqlmodel import select

from sequences.models import Cart, ExperimentArm, ExperimentAssignment, Message
from tests.support.admin import sign_in
from tests.support.factories import order_payload

SHOPPERS = 420
# The chance a shopper in each arm buys within the day (the test's own truth).
BUY = {"Holdout (no messages)": 0.05, "₹0 off": 0.10, "₹100 off": 0.30}
OFFER = {"steps": [{"delay_minutes": 15, "offer": {"kind": "fixed", "value": "100"}}, {"delay_minutes": 240}]}


def test_a_three_arm_experiment_counts_exactly_what_the_carts_and_orders_say(journey: Any) -> None:
    with journey.at(timedelta(0)):
        csrf = sign_in(journey.client, journey.runtime, 1)
        started = journey.client.post(
            "/api/experiments",
            json={
                "name": "Does ₹100 off pay?",
                "holdout_share": 0.34,
                "arms": [{"name": "₹0 off", "control": True}, {"name": "₹100 off", "overrides": OFFER}],
            },
            headers={"X-CSRF-Token": csrf},
        )
    assert started.status_code == 201, started.get_json()
    experiment_id = started.get_json()["id"]
    for n in range(SHOPPERS):
        journey.checkout(checkout_id=f"chk_{n}", token=f"tok_{n}", phone=f"+91987650{n:04d}")
    journey.run(timedelta(minutes=16))

    with journey.runtime.database.session() as session:
        arm_names = {arm.id: arm.name for arm in session.exec(select(ExperimentArm)).all()}
        arm_of_cart = {
            a.cart_id: arm_names[a.arm_id] for a in session.exec(select(ExperimentAssignment)).all()
        }
        carts = {cart.id: cart.platform_cart_id for cart in session.exec(select(Cart)).all()}
        messaged = {message.cart_id for message in session.exec(select(Message)).all()}
    assert len(arm_of_cart) == SHOPPERS
    held = {cart_id for cart_id, name in arm_of_cart.items() if name.startswith("Holdout")}
    assert held and not held & messaged and messaged == set(arm_of_cart) - held

    # Shoppers buy an hour later, each with their arm's chance.
    chance = random.Random(2026)
    buyers = sorted(cart_id for cart_id, name in arm_of_cart.items() if chance.random() < BUY[name])
    for cart_id in buyers:
        platform_id = carts[cart_id]
        n = int(platform_id.removeprefix("chk_"))
        journey.webhook(
            timedelta(hours=1, seconds=n),
            "orders/create",
            order_payload(checkout_id=platform_id, token=f"tok_{n}", total="2198.00"),
        )

    with journey.at(timedelta(hours=2)):
        api = journey.client.get(f"/api/experiments/{experiment_id}").get_json()
        page = journey.client.get(f"/admin/experiments?id={experiment_id}").get_data(as_text=True)

    # The recount: cart by cart, from the carts and their orders.
    with journey.runtime.database.session() as session:
        recount: dict[str, dict[str, Any]] = {
            name: {"eligible": 0, "recovered": 0, "revenue": Decimal(0)} for name in BUY
        }
        for cart_id, name in arm_of_cart.items():
            cart = session.get(Cart, cart_id)
            assert cart is not None
            recount[name]["eligible"] += 1
            if cart.ordered_at is not None:
                recount[name]["recovered"] += 1
                recount[name]["revenue"] += cart.order_total_store or Decimal(0)
    arms = {arm["name"]: arm for arm in api["arms"]}
    for name, expected in recount.items():
        assert arms[name]["eligible"] == expected["eligible"]
        assert arms[name]["recovered"] == expected["recovered"]
        assert Decimal(arms[name]["revenue"]) == expected["revenue"]
        assert f'data-arm="{name}"' in page
    assert sum(arm["recovered"] for arm in arms.values()) == len(buyers)
    assert arms["Holdout (no messages)"]["messaged"] == 0
    # The lift against the holdout, with its range, for each messaging arm.
    for name in ("₹0 off", "₹100 off"):
        lift = arms[name]["lift_vs_holdout"]["recovery_rate"]
        assert lift["low"] is not None and lift["low"] < lift["estimate"] < lift["high"]
        expected_lift = arms[name]["recovery_rate"] - arms["Holdout (no messages)"]["recovery_rate"]
        # Three figures each rounded to 6 decimals by the API: up to 1.5e-6 apart.
        assert abs(lift["estimate"] - expected_lift) < 2e-6
    assert 'id="lift-rate-holdout"' in page
