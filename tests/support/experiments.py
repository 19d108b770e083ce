"""A store's experiment with carts already in its arms and their orders, for pages and benches."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlmodel import col, select

from sequences.experiments.manage import ArmSpec, start_experiment, with_holdout
from sequences.models import (
    Cart,
    CartStatus,
    Contact,
    Experiment,
    ExperimentArm,
    ExperimentAssignment,
    ShopperOrder,
)
from sequences.runtime import Runtime

OFFER = {"steps": [{"delay_minutes": 15, "offer": {"kind": "fixed", "value": "100"}}]}


def sold_or_not(
    store_id: int,
    reference: str,
    contact_id: int | None,
    abandoned: datetime,
    *,
    total: Decimal,
    bought_after: timedelta | None,
    discount: Decimal | None = None,
    **fields: Any,
) -> Cart:
    """An abandoned one-line cart in INR, recovered ``bought_after`` it was abandoned (its
    order named ``<reference>_order``, ``discount`` used) or, with None, expired unbought."""
    bought = bought_after is not None
    return Cart(
        store_id=store_id,
        platform_cart_id=reference,
        contact_id=contact_id,
        status=CartStatus.RECOVERED if bought else CartStatus.EXPIRED,
        currency="INR",
        subtotal=total,
        total=total,
        line_count=1,
        platform_updated_at=abandoned,
        last_activity_at=fields.pop("last_activity_at", abandoned),
        abandoned_at=abandoned,
        ordered_at=abandoned + bought_after if bought_after is not None else None,
        order_platform_id=f"{reference}_order" if bought else None,
        order_total=total if bought else None,
        order_total_store=total if bought else None,
        order_currency="INR" if bought else None,
        discount_given=discount if bought else None,
        **fields,
    )


def seed_experiment(
    runtime: Runtime,
    store_id: int,
    *,
    per_arm: int = 600,
    rates: tuple[float, float, float] = (0.08, 0.15, 0.03),
) -> Experiment:
    """“Does ₹100 off pay?”: control, ₹100 off and a holdout, ``per_arm`` carts each (roughly,
    as weights 45/45/10 are scaled to equal counts here), recovered at ``rates``."""
    arms = with_holdout([ArmSpec("₹0 off", control=True), ArmSpec("₹100 off", overrides=OFFER)])
    experiment = start_experiment(runtime, store_id, "Does ₹100 off pay?", arms, planned_per_arm=per_arm)
    chooser = random.Random(17)
    now = runtime.now()
    with runtime.database.session() as session:
        arm_rows = list(
            session.exec(
                select(ExperimentArm)
                .where(ExperimentArm.experiment_id == experiment.id)
                .order_by(col(ExperimentArm.position))
            ).all()
        )
        number = 0
        for arm, rate in zip(arm_rows, rates, strict=True):
            count = per_arm if not arm.is_holdout else per_arm // 4
            for _ in range(count):
                number += 1
                contact = Contact(
                    store_id=store_id, phone_e164=f"+9170000{number:05d}", marketing_consent=True
                )
                session.add(contact)
                session.flush()
                abandoned = now - timedelta(days=3, minutes=number % 600)
                bought = chooser.random() < rate
                total = Decimal(chooser.choice(["899.00", "1499.00", "2198.00", "3499.00"]))
                cart = sold_or_not(
                    store_id,
                    f"exp_{number}",
                    contact.id,
                    abandoned,
                    total=total,
                    bought_after=timedelta(hours=5) if bought else None,
                    discount=Decimal("100.00") if arm.overrides else None,
                    last_activity_at=abandoned - timedelta(minutes=15),
                )
                session.add(cart)
                session.flush()
                assert arm.id is not None and cart.id is not None and contact.id is not None
                session.add(
                    ExperimentAssignment(
                        experiment_id=experiment.id or 0,
                        arm_id=arm.id,
                        store_id=store_id,
                        cart_id=cart.id,
                        contact_id=contact.id,
                        assigned_at=abandoned,
                        counts_until=abandoned + timedelta(days=7),
                        value_until=abandoned + timedelta(days=90),
                    )
                )
                if bought:
                    # What tracking.apply_order keeps for a shopper in an experiment.
                    session.add(
                        ShopperOrder(
                            store_id=store_id,
                            contact_id=contact.id,
                            order_platform_id=f"exp_{number}_order",
                            ordered_at=abandoned + timedelta(hours=5),
                            total_store=total,
                            cart_id=cart.id,
                        )
                    )
        session.commit()
    return experiment
