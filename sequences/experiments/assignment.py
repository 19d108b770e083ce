"""Which arm a cart is in, and the settings that arm gives it.

Assignment is deterministic and sticky per shopper: a keyed hash of the experiment and the
contact picks the arm, so every cart of one shopper lands in the same arm for the
experiment's life, and no one can tell a shopper's arm from their contact id. It is decided,
and recorded, when a cart becomes abandoned and reachable (engine: sending and batches),
before anything is sent: carts that never become eligible are in no arm, and every arm is
analysed by intent to treat. A cart keeps its arm until its sequence ends, even after the
experiment stops.

While an experiment runs, a cart becomes eligible after the shortest inactivity of the
store's and the arms' settings (``eligibility_settings``): an arm that waits longer must not
decide which carts are counted at all, or a shopper who comes back in between would be
counted only in the arms that wait less.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlmodel import Session, col, select

from sequences.engine import policy
from sequences.merchant.store_settings import StoreSettings
from sequences.models import Cart, Experiment, ExperimentArm, ExperimentAssignment, ExperimentStatus

log = logging.getLogger("cartback.experiments")

# Every step of a holdout cart is skipped with this reason: it is tracked, never messaged.
HOLDOUT_REASON = "holdout: no message (experiment)"
# How long after their first cart a shopper's orders count as their customer value: long
# enough to see a discount teach shoppers to wait for one (they buy less at full price).
CUSTOMER_VALUE_DAYS = 90


@dataclass(frozen=True)
class RunningExperiment:
    experiment: Experiment
    arms: tuple[ExperimentArm, ...]

    @property
    def id(self) -> int:
        assert self.experiment.id is not None
        return self.experiment.id


@dataclass(frozen=True)
class CartArm:
    """A cart's arm: the settings it runs with, and whether it is the holdout."""

    arm_id: int
    experiment_id: int
    name: str
    settings: StoreSettings
    holdout: bool


@dataclass(frozen=True)
class CartSettings:
    """What one cart runs with: its arm's settings, or (in no arm yet) the store's with the
    running experiment's shortest inactivity, and that experiment, which gives it an arm when
    it becomes eligible."""

    settings: StoreSettings
    arm: CartArm | None
    running: RunningExperiment | None


def pick_arm(experiment: Experiment, arms: Sequence[ExperimentArm], contact_id: int) -> ExperimentArm:
    """The contact's arm: a keyed hash mapped onto the arms' weights, in their order."""
    ordered = sorted(arms, key=lambda arm: (arm.position, arm.id or 0))
    total = sum(max(arm.weight, 0) for arm in ordered)
    if total <= 0:
        raise ValueError("an experiment's arms need a positive weight")
    digest = hmac.new(experiment.assignment_key.encode(), f"contact:{contact_id}".encode(), hashlib.sha256)
    # 64 bits: the modulo bias over a total weight of at most hundreds is ~1e-17.
    point = int.from_bytes(digest.digest()[:8], "big") % total
    for arm in ordered:
        point -= max(arm.weight, 0)
        if point < 0:
            return arm
    return ordered[-1]


def arm_settings(store_settings: StoreSettings, arm: ExperimentArm) -> StoreSettings:
    """The store's settings with the arm's changes (a holdout keeps the store's: it sends
    nothing, but its carts are timed and tracked like the others).

    Never raises: the arm was checked against the store's settings when the experiment
    started, but the merchant may change those since (a longer inactivity than the arm's first
    step). The arm's own steps then win (its carts count as abandoned by its first step), and
    an arm that still does not fit runs with the store's settings, logged, rather than
    stopping its carts' sequences."""
    if not arm.overrides or arm.is_holdout:
        return store_settings
    merged = {**store_settings.to_stored(), **arm.overrides}
    try:
        return StoreSettings.model_validate(merged)
    except ValidationError:
        pass
    steps = merged.get("steps") or []
    first = steps[0].get("delay_minutes") if steps and isinstance(steps[0], dict) else None
    if isinstance(first, int) and "inactivity_minutes" not in arm.overrides:
        with contextlib.suppress(ValidationError):
            return StoreSettings.model_validate(
                merged | {"inactivity_minutes": min(store_settings.inactivity_minutes, first)}
            )
    log.warning(
        "an experiment arm no longer fits the store's settings: its carts run with the store's",
        extra={"experiment_id": arm.experiment_id, "arm_id": arm.id},
    )
    return store_settings


def eligibility_settings(store_settings: StoreSettings, running: RunningExperiment | None) -> StoreSettings:
    """The settings that say when a cart becomes eligible: the shortest inactivity of the store
    and the running experiment's arms."""
    if running is None:
        return store_settings
    shortest = min(
        [store_settings.inactivity_minutes]
        + [arm_settings(store_settings, arm).inactivity_minutes for arm in running.arms]
    )
    if shortest == store_settings.inactivity_minutes:
        return store_settings
    return store_settings.model_copy(update={"inactivity_minutes": shortest})


def running_experiments(session: Session, store_ids: Iterable[int]) -> dict[int, RunningExperiment]:
    """Each store's running experiment (a store runs one at a time), with its arms."""
    ids = sorted(set(store_ids))
    if not ids:
        return {}
    experiments = session.exec(
        select(Experiment).where(
            col(Experiment.store_id).in_(ids), Experiment.status == ExperimentStatus.RUNNING
        )
    ).all()
    if not experiments:
        return {}
    arms: dict[int, list[ExperimentArm]] = {}
    for arm in session.exec(
        select(ExperimentArm).where(col(ExperimentArm.experiment_id).in_([e.id for e in experiments]))
    ):
        arms.setdefault(arm.experiment_id, []).append(arm)
    return {
        experiment.store_id: RunningExperiment(experiment, tuple(arms.get(experiment.id or 0, ())))
        for experiment in experiments
    }


def cart_arms(
    session: Session, cart_ids: Iterable[int], store_settings: dict[int, StoreSettings]
) -> dict[int, CartArm]:
    """The arm of each of these carts that has one (any experiment, running or stopped).
    ``store_settings``: each store's settings by store id."""
    ids = sorted(set(cart_ids))
    if not ids:
        return {}
    rows = session.exec(
        select(ExperimentAssignment, ExperimentArm)
        .join(ExperimentArm, col(ExperimentArm.id) == col(ExperimentAssignment.arm_id))
        .where(col(ExperimentAssignment.cart_id).in_(ids))
        .order_by(col(ExperimentAssignment.id))
    ).all()
    found: dict[int, CartArm] = {}
    for assignment, arm in rows:
        # A cart is assigned once per experiment; with several, the latest experiment's arm.
        found[assignment.cart_id] = CartArm(
            arm_id=assignment.arm_id,
            experiment_id=assignment.experiment_id,
            name=arm.name,
            settings=arm_settings(store_settings[assignment.store_id], arm),
            holdout=arm.is_holdout,
        )
    return found


def assign(
    running: RunningExperiment,
    store_settings: StoreSettings,
    cart: Cart,
    contact_id: int,
    at: datetime,
    time_scale: float,
) -> tuple[dict[str, Any], CartArm]:
    """The cart's arm in the running experiment, as it becomes eligible at ``at``: the row to
    record (``ExperimentAssignment``) and the arm. Its orders count as recovered up to the end
    of the store's attribution window from ``at``, in every arm alike."""
    arm = pick_arm(running.experiment, running.arms, contact_id)
    assert arm.id is not None and cart.id is not None
    row = {
        "experiment_id": running.id,
        "arm_id": arm.id,
        "store_id": cart.store_id,
        "cart_id": cart.id,
        "contact_id": contact_id,
        "assigned_at": at,
        "counts_until": at + policy.attribution_window(store_settings, time_scale),
        "value_until": at + policy.scaled(CUSTOMER_VALUE_DAYS * 24 * 60, time_scale),
    }
    return row, CartArm(arm.id, running.id, arm.name, arm_settings(store_settings, arm), arm.is_holdout)


def cart_settings(
    session: Session, cart_id: int, store_id: int, store_settings: StoreSettings, *, may_have_arm: bool = True
) -> CartSettings:
    """One cart's settings (``may_have_arm=False``: a cart just created, which has no arm yet)."""
    arm = cart_arms(session, [cart_id], {store_id: store_settings}).get(cart_id) if may_have_arm else None
    if arm is not None:
        return CartSettings(arm.settings, arm, None)
    running = running_experiments(session, [store_id]).get(store_id)
    return CartSettings(eligibility_settings(store_settings, running), None, running)
