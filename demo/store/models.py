"""The demo platform's own tables (kept in cartback's database, prefixed ``demo_``).

Money is ``Decimal`` (stored exactly through ``MoneyAmount``); times are aware UTC.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, Column, String
from sqlmodel import Field, SQLModel

from sequences.models import MoneyAmount, UTCDateTime, utcnow

# The one demo store this simulation serves (its Store.platform_store_id in cartback).
DEMO_STORE_SLUG = "demo-bazaar"


def new_checkout_id() -> str:
    return "chk_" + secrets.token_hex(8)


def new_checkout_token() -> str:
    return secrets.token_urlsafe(24)


def _time(*, nullable: bool = True) -> Any:
    return Field(default=None, sa_column=Column(UTCDateTime(), nullable=nullable))


def _money(*, nullable: bool = True) -> Any:
    return Field(default=None, sa_column=Column(MoneyAmount(), nullable=nullable))


class DemoCheckout(SQLModel, table=True):
    __tablename__ = "demo_checkout"

    id: str = Field(default_factory=new_checkout_id, sa_column=Column(String(32), primary_key=True))
    token: str = Field(
        default_factory=new_checkout_token,
        sa_column=Column(String(64), nullable=False, unique=True, index=True),
    )
    store: str = Field(default=DEMO_STORE_SLUG, sa_column=Column(String(64), nullable=False))
    # [{"variant_id": int, "qty": int}, ...]; always assign a new list (JSON is not mutation-tracked).
    lines: list[dict[str, int]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    first_name: str | None = Field(default=None, sa_column=Column(String(255)))
    # E.164 once validated (the storefront refuses anything else).
    phone: str | None = Field(default=None, sa_column=Column(String(20)))
    email: str | None = Field(default=None, sa_column=Column(String(320)))
    accepts_marketing: bool = Field(default=False)
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    # Strictly increases on every change (webhook consumers order snapshots by it).
    updated_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    completed_at: datetime | None = _time()
    order_id: int | None = Field(default=None)


class DemoDiscount(SQLModel, table=True):
    __tablename__ = "demo_discount"

    id: int | None = Field(default=None, primary_key=True)
    store: str = Field(default=DEMO_STORE_SLUG, sa_column=Column(String(64), nullable=False))
    code: str = Field(sa_column=Column(String(64), nullable=False, unique=True))
    kind: str = Field(sa_column=Column(String(16), nullable=False))  # fixed | percent
    value: Decimal = _money(nullable=False)
    max_amount: Decimal | None = _money()
    min_subtotal: Decimal | None = _money()
    currency: str = Field(sa_column=Column(String(3), nullable=False))
    ends_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    # None: unlimited.
    usage_limit: int | None = Field(default=None)
    times_used: int = Field(default=0)
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class DemoOrder(SQLModel, table=True):
    __tablename__ = "demo_order"

    id: int | None = Field(default=None, primary_key=True)
    store: str = Field(default=DEMO_STORE_SLUG, sa_column=Column(String(64), nullable=False))
    checkout_id: str = Field(sa_column=Column(String(32), nullable=False, index=True))
    checkout_token: str = Field(sa_column=Column(String(64), nullable=False))
    currency: str = Field(default="INR", sa_column=Column(String(3), nullable=False))
    subtotal: Decimal = _money(nullable=False)
    discount_code: str | None = Field(default=None, sa_column=Column(String(64)))
    discount_amount: Decimal = _money(nullable=False)
    total: Decimal = _money(nullable=False)
    phone: str | None = Field(default=None, sa_column=Column(String(20)))
    # What was bought, frozen at order time (catalogue prices may change later).
    lines: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
