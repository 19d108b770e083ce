"""The cart: the platform's checkout as we hold it, its lines and its timeline.

``CartStatus`` names the states of DESIGN.md's cart state machine; a terminal cart never sends
again.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Column, Index, String, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from sequences.models.dashboard import DASHBOARD_CART_COLUMNS
from sequences.models.types import UTCDateTime, json_field, money_field, time_field, utcnow


class CartStatus(StrEnum):
    ACTIVE = "active"
    ABANDONED = "abandoned"
    RECOVERING = "recovering"
    RECOVERED = "recovered"
    CONVERTED_UNASSISTED = "converted_unassisted"
    OPTED_OUT = "opted_out"
    UNREACHABLE = "unreachable"
    EXPIRED = "expired"


# A terminal cart never sends again (DESIGN.md, cart states).
TERMINAL_CART_STATUSES = frozenset(
    {
        CartStatus.RECOVERED,
        CartStatus.CONVERTED_UNASSISTED,
        CartStatus.OPTED_OUT,
        CartStatus.UNREACHABLE,
        CartStatus.EXPIRED,
    }
)


class Cart(SQLModel, table=True):
    __tablename__ = "cart"
    __table_args__ = (
        UniqueConstraint("store_id", "platform_cart_id"),
        Index("ix_cart_store_status", "store_id", "status"),
        Index("ix_cart_store_token", "store_id", "platform_cart_token"),
        Index("ix_cart_contact", "contact_id", "status"),
        Index("ix_cart_next_wake", "next_wake_at"),
        # The dashboard's recount of 15 minutes of abandoned carts, and the carts list.
        Index(
            "ix_cart_store_abandoned", "store_id", "abandoned_at", postgresql_include=DASHBOARD_CART_COLUMNS
        ),
        Index("ix_cart_store_activity", "store_id", "last_activity_at"),
        Index("ix_cart_store_order", "store_id", "order_platform_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    store_id: int = Field(foreign_key="store.id")
    platform_cart_id: str = Field(sa_column=Column(String(255), nullable=False))
    platform_cart_token: str | None = Field(default=None, sa_column=Column(String(255)))
    contact_id: int | None = Field(default=None, foreign_key="contact.id")
    status: str = Field(default=CartStatus.ACTIVE, sa_column=Column(String(24), nullable=False))
    status_reason: str | None = Field(default=None, sa_column=Column(Text))
    currency: str = Field(sa_column=Column(String(3), nullable=False))
    subtotal: Decimal = money_field(nullable=False)
    total: Decimal = money_field(nullable=False)
    checkout_url: str | None = Field(default=None, sa_column=Column(Text))
    line_count: int = Field(default=0)
    # The platform's updated_at of the snapshot we hold: older deliveries are ignored.
    platform_updated_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    last_activity_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    abandoned_at: datetime | None = time_field()
    first_message_at: datetime | None = time_field()
    closed_at: datetime | None = time_field()
    # When the engine next needs to look at this cart; the sweep rebuilds Redis from it.
    next_wake_at: datetime | None = time_field()
    order_platform_id: str | None = Field(default=None, sa_column=Column(String(255)))
    order_total: Decimal | None = money_field()
    order_currency: str | None = Field(default=None, sa_column=Column(String(3)))
    # The order's total in the store's own currency (differs when the shopper paid in
    # another): recovered revenue is summed in this, refunds are recorded in it too.
    order_total_store: Decimal | None = money_field()
    ordered_at: datetime | None = time_field()
    # Reconciliation (sequences.reconciliation): what the platform says of the order since;
    # refunds in the store's currency. ``order_verified_at``: when the platform last confirmed
    # the order (paid, or settled by a refund or cancellation); None while it is pending
    # (not read again yet, cash on delivery not collected, no longer on the platform).
    order_financial_status: str | None = Field(default=None, sa_column=Column(String(32)))
    order_refunded: Decimal | None = money_field()
    order_cancelled_at: datetime | None = time_field()
    order_verified_at: datetime | None = time_field()
    # What our discount took off the recovered order, in the store's currency (dashboard).
    discount_given: Decimal | None = money_field()
    # The last step messaged before a recovered order: the funnel credits it.
    recovered_step: int | None = Field(default=None)
    # The shopper wrote back (anything but STOP/START): the sequence waits for a person.
    shopper_replied_at: datetime | None = time_field()
    # The billing details the shopper typed (personal data: erased with the contact), kept
    # only where the platform builds the cart's order from them at the click (WooCommerce
    # carts captured before any order).
    buyer_details: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class CartLine(SQLModel, table=True):
    __tablename__ = "cart_line"

    id: int | None = Field(default=None, primary_key=True)
    cart_id: int = Field(foreign_key="cart.id", index=True)
    position: int = Field(default=0)
    platform_product_id: str | None = Field(default=None, sa_column=Column(String(255)))
    platform_variant_id: str | None = Field(default=None, sa_column=Column(String(255)))
    title: str = Field(sa_column=Column(Text, nullable=False))
    variant_title: str | None = Field(default=None, sa_column=Column(Text))
    quantity: int = Field(default=1)
    unit_price: Decimal = money_field(nullable=False)
    image_url: str | None = Field(default=None, sa_column=Column(Text))


class CartEvent(SQLModel, table=True):
    """The cart's timeline, in the words a merchant would use; append-only."""

    __tablename__ = "cart_event"

    id: int | None = Field(default=None, primary_key=True)
    store_id: int = Field(foreign_key="store.id", index=True)
    cart_id: int = Field(foreign_key="cart.id", index=True)
    kind: str = Field(sa_column=Column(String(32), nullable=False))
    detail: dict[str, Any] = json_field(default=dict)
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
