"""A store's experiments: their arms, and which arm each eligible cart was given.

An arm changes some of the store's recovery settings for the carts it is given
(``ExperimentArm.overrides``, the same fields as ``StoreSettings``) or, as the holdout, sends
them nothing. ``ExperimentAssignment`` is written when a cart becomes abandoned and reachable,
before anything is sent, and its arm never changes: every arm is analysed by intent to treat.

What each assigned cart counts in its arm's results (messaged, read, recovered, the money) is
kept on its assignment and summed per arm in ``ExperimentArmFigures`` as carts and messages
change (``sequences.experiments.figures``), so an experiment's results read a few rows
however many carts it has.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import Column, Float, Index, String, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from sequences.models.types import MoneyAmount, UTCDateTime, json_field, time_field, utcnow


class ExperimentStatus(StrEnum):
    RUNNING = "running"
    # No new cart is assigned; carts already in an arm keep it until their sequence ends.
    STOPPED = "stopped"


class Experiment(SQLModel, table=True):
    __tablename__ = "experiment"
    __table_args__ = (Index("ix_experiment_store_status", "store_id", "status"),)

    id: int | None = Field(default=None, primary_key=True)
    store_id: int = Field(foreign_key="store.id")
    name: str = Field(sa_column=Column(Text, nullable=False))
    status: str = Field(default=ExperimentStatus.RUNNING, sa_column=Column(String(16), nullable=False))
    # The figure an arm must beat the control on to be declared better.
    metric: str = Field(default="net_revenue_per_cart", sa_column=Column(String(32), nullable=False))
    # The eligible carts per arm the intervals are tuned for (the planner's answer).
    planned_per_arm: int = Field(default=5_000)
    # The key of the assignment hash: an arm cannot be guessed from a contact id, and a new
    # experiment shuffles shoppers afresh.
    assignment_key: str = Field(sa_column=Column(String(64), nullable=False))
    started_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    stopped_at: datetime | None = time_field()
    promoted_arm_id: int | None = Field(default=None)
    # The merchant lets cartback promote the winner by itself: the sweep promotes an arm as
    # soon as it is declared better (``manage.promote_winners``), as the merchant's click would.
    auto_promote: bool = Field(default=False)
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class ExperimentArm(SQLModel, table=True):
    __tablename__ = "experiment_arm"

    id: int | None = Field(default=None, primary_key=True)
    experiment_id: int = Field(foreign_key="experiment.id", index=True)
    name: str = Field(sa_column=Column(Text, nullable=False))
    # Relative share of the carts (weights 1, 1, 8 give 10 %, 10 %, 80 %).
    weight: int = Field(default=1)
    is_control: bool = Field(default=False)
    # Sends nothing: the carts that show what happens without cartback.
    is_holdout: bool = Field(default=False)
    # Store settings this arm changes (steps, inactivity_minutes), as StoreSettings stores them.
    overrides: dict[str, Any] = json_field(default=dict)
    position: int = Field(default=0)


class ExperimentAssignment(SQLModel, table=True):
    __tablename__ = "experiment_assignment"
    __table_args__ = (
        UniqueConstraint("experiment_id", "cart_id"),
        Index("ix_experiment_assignment_arm", "experiment_id", "arm_id"),
        Index("ix_experiment_assignment_cart", "cart_id"),
        Index("ix_experiment_assignment_contact", "contact_id", "experiment_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    experiment_id: int = Field(foreign_key="experiment.id")
    arm_id: int = Field(foreign_key="experiment_arm.id")
    store_id: int = Field(foreign_key="store.id")
    cart_id: int = Field(foreign_key="cart.id")
    contact_id: int = Field(foreign_key="contact.id")
    assigned_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    # An order up to this moment counts as the cart recovered, in every arm alike (the store's
    # attribution window from the moment the cart became eligible, not from a message: the
    # holdout gets none).
    counts_until: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    # The shopper's orders up to this moment (90 days on from ``assigned_at``) are their
    # customer value, counted on their first cart in the experiment.
    value_until: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    # What the cart counts in its arm's kept figures (``sequences.experiments.figures``), as last
    # counted: ``counted`` once it is in them at all; then each outcome, the money in the
    # store's currency (recovered order less refunds, the discount it used, its messages' cost).
    counted: bool = Field(default=False)
    messaged: bool = Field(default=False)
    read: bool = Field(default=False)
    clicked: bool = Field(default=False)
    recovered: bool = Field(default=False)
    opted_out: bool = Field(default=False)
    revenue: Decimal = Field(
        default=Decimal(0), sa_column=Column(MoneyAmount(), nullable=False, default=Decimal(0))
    )
    discount: Decimal = Field(
        default=Decimal(0), sa_column=Column(MoneyAmount(), nullable=False, default=Decimal(0))
    )
    messaging_cost: Decimal = Field(
        default=Decimal(0), sa_column=Column(MoneyAmount(), nullable=False, default=Decimal(0))
    )
    # The shopper's first cart in the experiment (a shopper counts once however often they
    # abandon), their orders until ``value_until``, and whether they abandoned another cart by then.
    shopper: bool = Field(default=False)
    customer_value: Decimal = Field(
        default=Decimal(0), sa_column=Column(MoneyAmount(), nullable=False, default=Decimal(0))
    )
    abandoned_again: bool = Field(default=False)


class ExperimentArmFigures(SQLModel, table=True):
    """An arm's results kept as sums over its carts, split in ``shard`` rows by cart id so that
    concurrent transactions seldom wait on one row. A read sums an arm's shards."""

    __tablename__ = "experiment_arm_figures"
    __table_args__ = (Index("ix_experiment_arm_figures_experiment", "experiment_id"),)

    arm_id: int = Field(foreign_key="experiment_arm.id", primary_key=True)
    shard: int = Field(primary_key=True)
    experiment_id: int = Field(foreign_key="experiment.id")
    eligible: int = Field(default=0)
    messaged: int = Field(default=0)
    read: int = Field(default=0)
    clicked: int = Field(default=0)
    recovered: int = Field(default=0)
    opted_out: int = Field(default=0)
    revenue: Decimal = Field(
        default=Decimal(0), sa_column=Column(MoneyAmount(), nullable=False, default=Decimal(0))
    )
    discounts: Decimal = Field(
        default=Decimal(0), sa_column=Column(MoneyAmount(), nullable=False, default=Decimal(0))
    )
    messaging_cost: Decimal = Field(
        default=Decimal(0), sa_column=Column(MoneyAmount(), nullable=False, default=Decimal(0))
    )
    # For the variance of net revenue per cart, r·m − s (r revenue, s discount plus messaging
    # cost, m the gross margin the merchant may change at any time): Σr², Σs² and Σr·s. Floats:
    # a variance needs no cent-exact sum, and Σr² of a million carts overflows Numeric(18, 4).
    revenue_squares: float = Field(default=0.0, sa_column=Column(Float, nullable=False))
    spend_squares: float = Field(default=0.0, sa_column=Column(Float, nullable=False))
    revenue_spend: float = Field(default=0.0, sa_column=Column(Float, nullable=False))
    # Per shopper (their first cart in the experiment): how many, their orders over 90 days,
    # its sum of squares, and how many abandoned another cart within them.
    shoppers: int = Field(default=0)
    customer_value: Decimal = Field(
        default=Decimal(0), sa_column=Column(MoneyAmount(), nullable=False, default=Decimal(0))
    )
    customer_value_squares: float = Field(default=0.0, sa_column=Column(Float, nullable=False))
    abandoned_again: int = Field(default=0)


class ShopperOrder(SQLModel, table=True):
    """An order of a shopper in an experiment, whichever cart it came from or none: their
    90-day customer value counts every one. Kept only for shoppers some experiment assigned
    (``tracking.apply_order``), with nothing more about the order than its total and time."""

    __tablename__ = "shopper_order"
    __table_args__ = (
        UniqueConstraint("store_id", "order_platform_id"),
        Index("ix_shopper_order_contact", "contact_id", "ordered_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    store_id: int = Field(foreign_key="store.id")
    contact_id: int = Field(foreign_key="contact.id")
    order_platform_id: str = Field(sa_column=Column(String(255), nullable=False))
    ordered_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    # In the store's currency; None when the platform gave it only in another.
    total_store: Decimal | None = Field(default=None, sa_column=Column(MoneyAmount(), nullable=True))
    cart_id: int | None = Field(default=None, foreign_key="cart.id")
