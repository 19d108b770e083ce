"""The recovery sequence's ledger: one ``RecoveryStep`` per (cart, step), and its ``Message``.

A step is sent at most once: its row is written before the transport is called, and a step
whose outcome is unknown is never sent again.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Column, Index, String, Text, UniqueConstraint, text
from sqlmodel import Field, SQLModel

from sequences.models.dashboard import DASHBOARD_MESSAGE_COLUMNS
from sequences.models.types import UTCDateTime, json_field, money_field, time_field, utcnow


class StepStatus(StrEnum):
    SCHEDULED = "scheduled"
    # Ledger written, transport called; if we never learn the outcome the step stays here
    # until the sweep marks it UNCERTAIN. Never sent again either way.
    SENDING = "sending"
    SENT = "sent"
    UNCERTAIN = "uncertain"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"
    FAILED = "failed"


# Steps that count as "a message may have reached the shopper" (frequency cap, attribution).
ATTEMPTED_STEP_STATUSES = frozenset({StepStatus.SENDING, StepStatus.SENT, StepStatus.UNCERTAIN})
OPEN_STEP_STATUSES = frozenset({StepStatus.SCHEDULED})


class MessageStatus(StrEnum):
    QUEUED = "queued"
    SENT = "sent"
    DELIVERED = "delivered"
    READ = "read"
    FAILED = "failed"
    UNCERTAIN = "uncertain"


class RecoveryStep(SQLModel, table=True):
    """The (cart, step) ledger: one row per step, so a step can be sent at most once."""

    __tablename__ = "recovery_step"
    __table_args__ = (
        UniqueConstraint("cart_id", "step_number"),
        Index("ix_recovery_step_status_due", "status", "due_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    store_id: int = Field(foreign_key="store.id", index=True)
    cart_id: int = Field(foreign_key="cart.id")
    step_number: int
    status: str = Field(default=StepStatus.SCHEDULED, sa_column=Column(String(16), nullable=False))
    reason: str | None = Field(default=None, sa_column=Column(Text))
    due_at: datetime | None = time_field()
    # The offer as planned (kept so a settings change does not alter a link already sent).
    offer: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    attempted_at: datetime | None = time_field()
    sent_at: datetime | None = time_field()
    # The rebuilt checkout URL, cached after the first click.
    checkout_url: str | None = Field(default=None, sa_column=Column(Text))


class Message(SQLModel, table=True):
    __tablename__ = "message"
    # The dashboard's period is carts abandoned in it, messages included: recounted by the
    # cart's abandonment time copied here (fixed once a message exists), without a join.
    __table_args__ = (
        Index(
            "ix_message_store_abandoned",
            "store_id",
            "cart_abandoned_at",
            postgresql_include=DASHBOARD_MESSAGE_COLUMNS,
        ),
        # The dashboard's latest failures: few rows, found without reading the others.
        Index(
            "ix_message_store_failed",
            "store_id",
            "id",
            postgresql_where=text("status = 'failed'"),
            sqlite_where=text("status = 'failed'"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    store_id: int = Field(foreign_key="store.id", index=True)
    cart_id: int = Field(foreign_key="cart.id", index=True)
    step_id: int = Field(foreign_key="recovery_step.id", unique=True)
    contact_id: int = Field(foreign_key="contact.id", index=True)
    # The step's number (1-3), copied here so the funnel by step needs no join.
    step_number: int = Field(default=1)
    cart_abandoned_at: datetime | None = time_field()
    transport: str = Field(sa_column=Column(String(16), nullable=False))
    template_name: str = Field(sa_column=Column(String(128), nullable=False))
    language: str = Field(sa_column=Column(String(16), nullable=False))
    components: list[Any] = json_field(default=list)
    preview: dict[str, Any] = json_field(default=dict)
    status: str = Field(default=MessageStatus.QUEUED, sa_column=Column(String(16), nullable=False))
    provider_message_id: str | None = Field(default=None, sa_column=Column(String(255), index=True))
    error_code: str | None = Field(default=None, sa_column=Column(String(32)))
    error_detail: str | None = Field(default=None, sa_column=Column(Text))
    # Meta's pricing on status webhooks: the category it was charged as and whether it was;
    # the cost is that category's rate for the recipient's country (Meta sends no amount).
    pricing_category: str | None = Field(default=None, sa_column=Column(String(32)))
    billable: bool | None = Field(default=None)
    cost: Decimal | None = money_field()
    cost_currency: str | None = Field(default=None, sa_column=Column(String(3)))
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    sent_at: datetime | None = time_field()
    delivered_at: datetime | None = time_field()
    read_at: datetime | None = time_field()
    failed_at: datetime | None = time_field()
    # The shopper's first click on the message's link.
    clicked_at: datetime | None = time_field()
