"""A store's experiments: their arms, and which arm each eligible cart was given.

An arm changes some of the store's recovery settings for the carts it is given
(``ExperimentArm.overrides``, the same fields as ``StoreSettings``) or, as the holdout, sends
them nothing. ``ExperimentAssignment`` is written when a cart becomes abandoned and reachable,
before anything is sent, and never changes: every arm is analysed by intent to treat.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Column, Index, String, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from sequences.models.types import UTCDateTime, json_field, time_field, utcnow


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
