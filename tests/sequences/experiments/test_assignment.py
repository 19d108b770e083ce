"""Experiments in the engine: each eligible cart gets an arm, sticky per shopper, recorded
before anything is sent; the holdout is tracked and never messaged; an arm's settings are the
ones its carts run with."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlmodel import col, select

from sequences.engine import sending
from sequences.experiments.assignment import HOLDOUT_REASON, pick_arm
from sequences.experiments.manage import (
    ArmSpec,
    ExperimentError,
    start_experiment,
    stop_experiment,
    with_holdout,
)
from sequences.models import (
    Cart,
    Experiment,
    ExperimentArm,
    ExperimentAssignment,
    Message,
    RecoveryStep,
    StepStatus,
)

HUNDRED_OFF = {
    "steps": [
        {
            "delay_minutes": 15,
            "offer": {"kind": "fixed", "value": "100"},
            "copy_lines": {"en": "{offer} on your cart, today only"},
        },
        {"delay_minutes": 240},
    ]
}


def _three_arms(runtime, store_id: int = 1) -> Experiment:
    arms = with_holdout([ArmSpec("₹0 off", control=True), ArmSpec("₹100 off", overrides=HUNDRED_OFF)], 0.34)
    return start_experiment(runtime, store_id, "Does ₹100 off pay?", arms)


def _assignments(runtime) -> dict[int, tuple[int, str, bool]]:
    """cart id -> (contact id, arm name, holdout)"""
    with runtime.database.session() as session:
        rows = session.exec(
            select(ExperimentAssignment, ExperimentArm).join(
                ExperimentArm, col(ExperimentArm.id) == col(ExperimentAssignment.arm_id)
            )
        ).all()
        return {a.cart_id: (a.contact_id, arm.name, arm.is_holdout) for a, arm in rows}


def _shopper(n: int) -> str:
    return f"+91987650{n:04d}"


def test_an_arm_is_picked_by_the_weights_and_always_the_same_for_a_contact():
    experiment = Experiment(store_id=1, name="x", assignment_key="k" * 64)
    arms = [
        ExperimentArm(id=1, experiment_id=1, name="a", weight=1, position=0),
        ExperimentArm(id=2, experiment_id=1, name="b", weight=3, position=1),
    ]
    picks = Counter(pick_arm(experiment, arms, contact).name for contact in range(20_000))
    assert 0.23 < picks["a"] / 20_000 < 0.27
    assert all(
        pick_arm(experiment, arms, contact).name == pick_arm(experiment, arms, contact).name
        for contact in range(200)
    )
    other = Experiment(store_id=1, name="y", assignment_key="j" * 64)
    # Another experiment's key shuffles shoppers afresh.
    assert (
        sum(pick_arm(experiment, arms, c).name != pick_arm(other, arms, c).name for c in range(1_000)) > 200
    )


def test_each_reachable_cart_gets_an_arm_when_it_is_abandoned_and_the_holdout_gets_no_message(journey):
    _three_arms(journey.runtime)
    for n in range(40):
        journey.checkout(checkout_id=f"chk_{n}", token=f"tok_{n}", phone=_shopper(n), consent=n % 10 != 0)
    assert _assignments(journey.runtime) == {}  # nothing before the carts are abandoned
    journey.run(timedelta(minutes=16))
    assigned = _assignments(journey.runtime)
    with journey.runtime.database.session() as session:
        carts = {cart.platform_cart_id: cart for cart in session.exec(select(Cart)).all()}
        messaged = {m.cart_id for m in session.exec(select(Message)).all()}
    # Carts without consent never become eligible: in no arm.
    unreachable = {carts[f"chk_{n}"].id for n in range(0, 40, 10)}
    assert set(assigned) == {cart.id for cart in carts.values()} - unreachable
    arms = Counter(name for _contact, name, _holdout in assigned.values())
    assert set(arms) == {"₹0 off", "₹100 off", "Holdout (no messages)"}
    held = {cart_id for cart_id, (_c, _n, holdout) in assigned.items() if holdout}
    assert held and not held & messaged
    assert messaged == set(assigned) - held
    for cart_id in held:
        cart = next(c for c in carts.values() if c.id == cart_id)
        steps = journey.steps(cart.platform_cart_id)
        assert {step.status for step in steps} == {StepStatus.SKIPPED}
        assert {step.reason for step in steps} == {HOLDOUT_REASON}
        assert "experiment_arm" in journey.events(cart.platform_cart_id)


def test_an_arms_offer_and_line_are_what_its_carts_are_sent(journey):
    _three_arms(journey.runtime)
    for n in range(30):
        journey.checkout(checkout_id=f"chk_{n}", token=f"tok_{n}", phone=_shopper(n))
    journey.run(timedelta(minutes=16))
    assigned = _assignments(journey.runtime)
    with journey.runtime.database.session() as session:
        messages = session.exec(select(Message)).all()
    by_arm = {assigned[m.cart_id][1]: m for m in messages}
    assert set(by_arm) == {"₹0 off", "₹100 off"}
    offered = str(by_arm["₹100 off"].preview)
    assert "today only" in offered and "100" in offered
    assert "today only" not in str(by_arm["₹0 off"].preview)
    # The arm's two steps, not the store's three.
    offer_cart = next(c for c, (_x, name, _h) in assigned.items() if name == "₹100 off")
    with journey.runtime.database.session() as session:
        cart = session.get(Cart, offer_cart)
        assert cart is not None
    assert len(journey.steps(cart.platform_cart_id)) == 2


def test_a_shoppers_carts_stay_in_one_arm_even_after_the_experiment_stops(journey):
    experiment = _three_arms(journey.runtime)
    for n in range(12):
        journey.checkout(checkout_id=f"chk_{n}", token=f"tok_{n}", phone=_shopper(n))
    journey.run(timedelta(minutes=16))
    first = _assignments(journey.runtime)
    # The same shoppers come back the next day with new carts.
    for n in range(12):
        journey.checkout(timedelta(days=1), checkout_id=f"chk_b{n}", token=f"tok_b{n}", phone=_shopper(n))
    journey.run(timedelta(days=1, minutes=16))
    both = _assignments(journey.runtime)
    arm_of_contact = {contact: name for contact, name, _h in first.values()}
    later = {cart_id: value for cart_id, value in both.items() if cart_id not in first}
    assert len(later) == 12
    assert all(arm_of_contact[contact] == name for contact, name, _h in later.values())
    stop_experiment(journey.runtime, 1, experiment.id)
    for n in range(12):
        journey.checkout(timedelta(days=2), checkout_id=f"chk_c{n}", token=f"tok_c{n}", phone=_shopper(n))
    journey.run(timedelta(days=2, minutes=16))
    # Stopped: new carts are in no arm, and run with the store's own settings.
    assert len(_assignments(journey.runtime)) == 24


def test_a_cart_in_the_holdout_stays_unmessaged_when_its_shopper_comes_back(journey):
    _three_arms(journey.runtime)
    for n in range(30):
        journey.checkout(checkout_id=f"chk_{n}", token=f"tok_{n}", phone=_shopper(n))
    journey.run(timedelta(minutes=16))
    held = [cart_id for cart_id, (_c, _n, holdout) in _assignments(journey.runtime).items() if holdout]
    with journey.runtime.database.session() as session:
        cart = session.get(Cart, held[0])
        assert cart is not None
    n = int(cart.platform_cart_id.removeprefix("chk_"))
    journey.checkout(
        timedelta(minutes=30), checkout_id=cart.platform_cart_id, token=f"tok_{n}", phone=_shopper(n)
    )
    journey.run(timedelta(hours=6))
    with journey.runtime.database.session() as session:
        assert not session.exec(select(Message).where(Message.cart_id == cart.id)).all()


def test_the_per_cart_path_assigns_as_the_batches_do(journey):
    _three_arms(journey.runtime)
    for n in range(20):
        journey.checkout(checkout_id=f"chk_{n}", token=f"tok_{n}", phone=_shopper(n))
    with journey.at(timedelta(minutes=16)):
        with journey.runtime.database.session() as session:
            ids = [cart.id for cart in session.exec(select(Cart)).all()]
        for cart_id in ids:
            sending.advance_cart(journey.runtime, cart_id)
    assigned = _assignments(journey.runtime)
    assert set(assigned) == set(ids)
    with journey.runtime.database.session() as session:
        messaged = {m.cart_id for m in session.exec(select(Message)).all()}
    assert messaged == {cart_id for cart_id, (_c, _n, holdout) in assigned.items() if not holdout}
    # Step 2, four hours on: the arm's (no offer), not the store's (₹100 off).
    with journey.at(timedelta(hours=4, minutes=1)):
        for cart_id in ids:
            sending.advance_cart(journey.runtime, cart_id)
    with journey.runtime.database.session() as session:
        second = session.exec(select(RecoveryStep).where(RecoveryStep.step_number == 2)).all()
    offers = {assigned[step.cart_id][1]: step.offer for step in second if step.status == StepStatus.SENT}
    assert set(offers) == {"₹0 off", "₹100 off"}
    assert offers["₹100 off"] is None
    assert offers["₹0 off"] is not None


def test_an_arm_that_waits_less_makes_every_cart_eligible_that_soon(journey):
    sooner = {"inactivity_minutes": 5, "steps": [{"delay_minutes": 5}]}
    start_experiment(
        journey.runtime, 1, "Sooner", [ArmSpec("15 min", control=True), ArmSpec("5 min", overrides=sooner)]
    )
    for n in range(20):
        journey.checkout(checkout_id=f"chk_{n}", token=f"tok_{n}", phone=_shopper(n))
    journey.run(timedelta(minutes=6))
    assigned = _assignments(journey.runtime)
    # Every cart is in an arm at 5 minutes, both arms' carts alike; only the 5-minute arm's
    # have had their message.
    assert len(assigned) == 20
    with journey.runtime.database.session() as session:
        messaged = {m.cart_id for m in session.exec(select(Message)).all()}
    assert messaged == {cart_id for cart_id, (_c, name, _h) in assigned.items() if name == "5 min"}
    journey.run(timedelta(minutes=16))
    with journey.runtime.database.session() as session:
        assert len(session.exec(select(Message)).all()) == 20


@pytest.mark.parametrize(
    ("arms", "reason"),
    [
        ([ArmSpec("a", control=True)], "2 to 6 arms"),
        ([ArmSpec("a"), ArmSpec("b")], "exactly one arm as the control"),
        ([ArmSpec("a", control=True), ArmSpec("A")], "its own name"),
        (
            [ArmSpec("a", control=True), ArmSpec("b", overrides={"quiet_hours_enabled": False})],
            "only steps and inactivity",
        ),
        (
            [ArmSpec("a", control=True), ArmSpec("b", overrides={"steps": [{"delay_minutes": 2}]})],
            "steps.0.delay_minutes",
        ),
        ([ArmSpec("a", control=True), ArmSpec("b", weight=0)], "whole number from 1"),
    ],
)
def test_an_experiment_that_cannot_run_is_refused_with_its_reason(journey, arms, reason):
    with pytest.raises(ExperimentError, match=reason):
        start_experiment(journey.runtime, 1, "Bad", arms)
    with journey.runtime.database.session() as session:
        assert not session.exec(select(Experiment)).all()


def test_a_store_runs_one_experiment_at_a_time(journey):
    _three_arms(journey.runtime)
    with pytest.raises(ExperimentError, match="is running: stop it first"):
        _three_arms(journey.runtime)


def test_a_holdout_share_becomes_whole_percent_weights():
    arms = with_holdout([ArmSpec("a", control=True), ArmSpec("b")])
    assert [arm.weight for arm in arms] == [45, 45, 10]
    assert arms[-1].holdout and not arms[-1].control
    assert Decimal(arms[-1].weight) / sum(arm.weight for arm in arms) == Decimal("0.1")


def test_deleting_a_stores_data_deletes_its_experiments(journey):
    from sequences.models import Store
    from sequences.privacy.requests import redact_store

    _three_arms(journey.runtime)
    for n in range(10):
        journey.checkout(checkout_id=f"chk_{n}", token=f"tok_{n}", phone=_shopper(n))
    journey.run(timedelta(minutes=16))
    assert _assignments(journey.runtime)
    with journey.runtime.database.locked_session() as session:
        store = session.get(Store, 1)
        assert store is not None
        redact_store(session, store)
    with journey.runtime.database.session() as session:
        for table in (Experiment, ExperimentArm, ExperimentAssignment):
            assert not session.exec(select(table)).all()


def test_an_arm_keeps_running_when_the_store_waits_longer_than_its_first_step_since(journey):
    from sequences.merchant.settings_changes import as_payload, save
    from sequences.models import Store

    start_experiment(
        journey.runtime,
        1,
        "Early offer",
        [ArmSpec("store", control=True), ArmSpec("offer", overrides=HUNDRED_OFF)],
    )
    # The merchant moves the store's first message to 30 minutes: the arm's 15 no longer fits.
    with journey.runtime.database.session() as session:
        store = session.get(Store, 1)
        assert store is not None
        payload = as_payload(store, journey.runtime.store_settings(store))
    payload["inactivity_minutes"] = 30
    payload["steps"][0]["delay_minutes"] = 30
    save(journey.runtime, 1, payload, "test")
    for n in range(20):
        journey.checkout(checkout_id=f"chk_{n}", token=f"tok_{n}", phone=_shopper(n))
    journey.run(timedelta(minutes=16))
    assigned = _assignments(journey.runtime)
    with journey.runtime.database.session() as session:
        messaged = {m.cart_id for m in session.exec(select(Message)).all()}
    # Every cart is in an arm; the arm's carts had their message at 15 minutes, the others wait.
    assert len(assigned) == 20
    assert messaged == {cart_id for cart_id, (_c, name, _h) in assigned.items() if name == "offer"}
    journey.run(timedelta(minutes=31))
    with journey.runtime.database.session() as session:
        assert len(session.exec(select(Message)).all()) == 20
