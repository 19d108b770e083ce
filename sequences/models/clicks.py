"""What a click on a recovery link leaves behind: the discount code and the click's record.

``LinkClick`` is append-only; a ``Discount`` is made at most once per (cart, step).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import Column, String, UniqueConstraint
from sqlmodel import Field, SQLModel

from sequences.models.types import UTCDateTime, money_field, time_field, utcnow


class Discount(SQLModel, table=True):
    __tablename__ = "discount"
    __table_args__ = (
        UniqueConstraint("cart_id", "step_number"),
        UniqueConstraint("store_id", "code"),
    )

    id: int | None = Field(default=None, primary_key=True)
    store_id: int = Field(foreign_key="store.id")
    cart_id: int = Field(foreign_key="cart.id")
    step_number: int
    code: str = Field(sa_column=Column(String(64), nullable=False))
    kind: str = Field(sa_column=Column(String(16), nullable=False))
    value: Decimal = money_field(nullable=False)
    max_amount: Decimal | None = money_field()
    currency: str = Field(sa_column=Column(String(3), nullable=False))
    min_subtotal: Decimal | None = money_field()
    ends_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    platform_discount_id: str | None = Field(default=None, sa_column=Column(String(255)))
    # An order used this code (then the platform keeps it); unused expired codes are deleted.
    redeemed_at: datetime | None = time_field()
    platform_deleted_at: datetime | None = time_field()
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class LinkClick(SQLModel, table=True):
    """Append-only record of recovery-link clicks."""

    __tablename__ = "link_click"

    id: int | None = Field(default=None, primary_key=True)
    store_id: int = Field(foreign_key="store.id", index=True)
    cart_id: int = Field(foreign_key="cart.id", index=True)
    message_id: int = Field(foreign_key="message.id")
    outcome: str = Field(sa_column=Column(String(32), nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
