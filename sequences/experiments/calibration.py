"""Discount calibration: net revenue per eligible cart at each offer level, and the level that
maximises it.

Two sources, shown side by side and never pooled:

- **The store's history**: its carts abandoned in the last ``HISTORY_DAYS`` days and messaged,
  each at the strongest offer its reminders showed (none, ₹100 off, 10 % up to ₹200 …). Not
  randomised: the levels ran at different times, for different carts (an offer may apply only
  above a cart value), so a gap between them is a lead to test, not a proof.
- **Its offer experiments**: each arm's net revenue per eligible cart, by intent to treat,
  from the kept figures (``experiments.figures``). Randomised: this is the evidence to act on.

A cart's net revenue is what the experiments count (``experiments.results``): the recovered
order less refunds, times the store's gross margin, less the discount it used and its
messages' cost. Each level's mean comes with an always-valid interval (``stats.mean``), at
alpha split over the levels compared.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from pydantic import ValidationError
from sqlalchemy import String, and_, case, cast, select
from sqlmodel import Session, col

from sequences.engine.messages import offer_text
from sequences.experiments import figures, stats
from sequences.merchant import rollups
from sequences.merchant.rollups import exact
from sequences.merchant.store_settings import Offer, StoreSettings
from sequences.models import (
    Cart,
    CartStatus,
    Experiment,
    ExperimentArm,
    Message,
    RecoveryStep,
    Store,
)

HISTORY_DAYS = 90
NO_OFFER = "No offer"
ZERO = Decimal(0)


@dataclass(frozen=True)
class Level:
    """One offer level's carts and their net revenue."""

    label: str
    # "history", or the experiment and arm the level ran in.
    source: str
    carts: int
    recovered: int
    net_revenue: Decimal
    # The mean net revenue per cart and its interval (None below stats.MIN_CARTS_PER_ARM carts).
    interval: stats.Interval | None
    # What one cart is worth giving at this level, for ordering the levels (0 for no offer).
    offer_worth: Decimal = ZERO

    @property
    def net_per_cart(self) -> Decimal:
        return (self.net_revenue / self.carts).quantize(Decimal("0.01")) if self.carts else ZERO


@dataclass(frozen=True)
class Calibration:
    since: datetime
    history: list[Level]
    experiments: list[Level]
    # The history level with the highest net revenue per cart (among those with an interval),
    # and whether its interval lies above every other level's.
    best: Level | None
    clear: bool


def _label(offer: Offer | None, store: Store) -> tuple[str, Decimal]:
    if offer is None:
        return NO_OFFER, ZERO
    worth = offer.value if offer.kind == "fixed" else (offer.max_amount or offer.value)
    return offer_text(offer, store.currency, store.locale), worth


def _offer(raw: Any) -> Offer | None:
    """A step's recorded offer (JSON text or a dict); None for none or one no longer valid."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return None
    if not isinstance(raw, dict):
        return None
    try:
        return Offer.model_validate(raw)
    except ValidationError:
        return None


def _history(session: Session, store: Store, since: datetime, margin: Decimal) -> list[Level]:
    """The store's messaged carts since ``since``, per the strongest offer they were shown."""
    offers = (
        select(col(RecoveryStep.cart_id), cast(col(RecoveryStep.offer), String))
        .join(Cart, col(Cart.id) == col(RecoveryStep.cart_id))
        .where(
            col(Cart.store_id) == store.id,
            col(Cart.abandoned_at) >= since,
            col(RecoveryStep.sent_at).is_not(None),
        )
    )
    shown: dict[int, tuple[str, Decimal]] = {}
    for cart_id, raw in session.execute(offers):
        label = _label(_offer(raw), store)
        if cart_id not in shown or label[1] > shown[cart_id][1]:
            shown[cart_id] = label
    costs = (
        select(
            col(Message.cart_id).label("cart_id"),
            rollups.exact_sum(rollups.amount(col(Message.cost))).label("cost"),
        )
        .where(col(Message.store_id) == store.id, col(Message.cart_abandoned_at) >= since)
        .group_by(col(Message.cart_id))
        .subquery()
    )
    recovered = and_(col(Cart.status) == CartStatus.RECOVERED, col(Cart.order_cancelled_at).is_(None))
    carts = session.execute(
        select(
            col(Cart.id),
            case((recovered, 1), else_=0),
            col(Cart.order_total_store),
            col(Cart.order_refunded),
            col(Cart.discount_given),
            costs.c.cost,
        )
        .outerjoin(costs, costs.c.cart_id == col(Cart.id))
        .where(
            col(Cart.store_id) == store.id,
            col(Cart.abandoned_at) >= since,
            col(Cart.first_message_at).is_not(None),
        )
    )
    sums: dict[tuple[str, Decimal], list[Any]] = {}
    for cart_id, bought, total, refunded, discount, cost in carts:
        revenue = (total or ZERO) - (refunded or ZERO) if bought else ZERO
        net = revenue * margin / 100 - ((discount or ZERO) if bought else ZERO) - exact(cost)
        level = sums.setdefault(shown.get(cart_id, (NO_OFFER, ZERO)), [0, 0, ZERO, 0.0])
        level[0] += 1
        level[1] += bought
        level[2] += net
        level[3] += float(net) ** 2
    return _levels(
        [(label, worth, "history", *values) for (label, worth), values in sums.items()], comparisons=len(sums)
    )


def _levels(rows: list[tuple[Any, ...]], *, comparisons: int) -> list[Level]:
    levels = [
        Level(
            label=label,
            source=source,
            carts=carts,
            recovered=recovered,
            net_revenue=exact(net),
            interval=stats.mean(
                stats.Sample(carts, float(net), squares), planned=max(carts, 1), comparisons=comparisons
            ),
            offer_worth=worth,
        )
        for label, worth, source, carts, recovered, net, squares in rows
    ]
    return sorted(levels, key=lambda level: (level.source, level.offer_worth, level.label))


def _experiment_levels(session: Session, store: Store, margin: Decimal) -> list[Level]:
    """Each arm of the store's experiments that varies the offer, as the kept figures count it."""
    rows: list[tuple[Any, ...]] = []
    experiments = session.execute(
        select(Experiment, ExperimentArm)
        .join(ExperimentArm, col(ExperimentArm.experiment_id) == col(Experiment.id))
        .where(col(Experiment.store_id) == store.id, col(ExperimentArm.is_holdout).is_(False))
        .order_by(col(Experiment.id), col(ExperimentArm.position))
    ).all()
    kept: dict[int, dict[int, dict[str, Any]]] = {}
    for experiment, arm in experiments:
        assert experiment.id is not None and arm.id is not None
        if experiment.id not in kept:
            kept[experiment.id] = figures.arm_figures(session, experiment.id)
        steps = arm.overrides.get("steps")
        if not isinstance(steps, list):
            label, worth = "Your settings at the time", ZERO
        else:
            shown = [
                _label(_offer(step.get("offer")) if isinstance(step, dict) else None, store) for step in steps
            ]
            label, worth = max(shown, key=lambda item: item[1], default=(NO_OFFER, ZERO))
        arm_figures = kept[experiment.id].get(arm.id)
        if arm_figures is None:
            continue
        net, squares = figures.net_revenue(arm_figures, margin)
        rows.append(
            (
                label,
                worth,
                f"{experiment.name} · {arm.name}",
                arm_figures["eligible"],
                arm_figures["recovered"],
                net,
                squares,
            )
        )
    return _levels(rows, comparisons=max(len(rows), 1))


def calibrate(session: Session, store: Store, settings: StoreSettings, now: datetime) -> Calibration:
    margin = settings.gross_margin_percent
    since = now - timedelta(days=HISTORY_DAYS)
    history = _history(session, store, since, margin)
    measured = [level for level in history if level.interval is not None]
    best = max(measured, key=lambda level: level.interval.estimate if level.interval else 0.0, default=None)
    clear = (
        best is not None
        and best.interval is not None
        and len(measured) > 1
        and all(
            best.interval.low > other.interval.high
            for other in measured
            if other is not best and other.interval is not None
        )
    )
    return Calibration(since, history, _experiment_levels(session, store, margin), best, clear)
