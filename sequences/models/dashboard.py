"""The dashboard's kept figures: per-store 15-minute buckets of carts and their messages.

``sequences.merchant.rollups`` keeps them exact in the same transaction as the carts and
messages they count; the column lists below are what its recount reads, carried in the carts'
and messages' indexes.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import Column, String
from sqlmodel import Field, SQLModel

from sequences.models.types import MoneyAmount, UTCDateTime

# What the dashboard's recount of a bucket reads, carried in its indexes on PostgreSQL
# (INCLUDE): a bucket of a flash sale's thousands of carts is recounted from the index alone.
DASHBOARD_CART_COLUMNS = [
    "status",
    "first_message_at",
    "order_cancelled_at",
    "order_verified_at",
    "order_total_store",
    "order_refunded",
    "discount_given",
    "recovered_step",
]
DASHBOARD_MESSAGE_COLUMNS = [
    "step_number",
    "contact_id",
    "status",
    "sent_at",
    "delivered_at",
    "read_at",
    "clicked_at",
    "cost",
    "cost_currency",
]


class DashboardCartBucket(SQLModel, table=True):
    """The dashboard's cart figures for the carts one store abandoned in 15 minutes (UTC).

    Kept exact as carts change, in the same transaction (``sequences.merchant.rollups``), so a period's
    figures are a sum over at most 96 rows a day, however many carts the store has. 15 minutes
    because every time zone's offset is a multiple of it: a bucket lies in one store day.
    """

    __tablename__ = "dashboard_cart_bucket"

    store_id: int = Field(foreign_key="store.id", primary_key=True)
    bucket_start: datetime = Field(sa_column=Column(UTCDateTime(), primary_key=True))
    abandoned: int = Field(default=0)
    reachable: int = Field(default=0)
    recovered: int = Field(default=0)
    # Carts messaged at least once, and those of them whose shopper opted out meanwhile.
    messaged: int = Field(default=0)
    opted_out: int = Field(default=0)
    # Recovered carts credited to each step (the last one messaged before the order).
    recovered_step_1: int = Field(default=0)
    recovered_step_2: int = Field(default=0)
    recovered_step_3: int = Field(default=0)
    # In the store's currency: order totals less refunds, that much verified, our discounts.
    revenue: Decimal = Field(default=Decimal(0), sa_column=Column(MoneyAmount(), nullable=False))
    revenue_verified: Decimal = Field(default=Decimal(0), sa_column=Column(MoneyAmount(), nullable=False))
    discounts: Decimal = Field(default=Decimal(0), sa_column=Column(MoneyAmount(), nullable=False))


class DashboardMessageBucket(SQLModel, table=True):
    """The messages for the carts of a ``DashboardCartBucket``, per step and cost currency."""

    __tablename__ = "dashboard_message_bucket"

    store_id: int = Field(foreign_key="store.id", primary_key=True)
    bucket_start: datetime = Field(sa_column=Column(UTCDateTime(), primary_key=True))
    step_number: int = Field(primary_key=True)
    # The rate card's currency of the costs summed here; "" for messages not priced.
    cost_currency: str = Field(default="", sa_column=Column(String(3), primary_key=True))
    sent: int = Field(default=0)
    delivered: int = Field(default=0)
    read: int = Field(default=0)
    clicked: int = Field(default=0)
    failed: int = Field(default=0)
    priced: int = Field(default=0)
    cost: Decimal = Field(default=Decimal(0), sa_column=Column(MoneyAmount(), nullable=False))
