"""Platform webhook deliveries, stored before they are processed.

One row per delivery, unique by delivery id, by content and by the platform's event id, so a
replay or a retry is recognised and processed once. Workers claim pending rows in batches
(``sequences.engine.intake``): ``claimed_until`` keeps a claimed or failing row from being
claimed again before then, ``attempts`` counts the claims.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Column, Index, Integer, String, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from sequences.models.types import UTCDateTime, time_field, utcnow


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    PROCESSED = "processed"
    IGNORED = "ignored"
    FAILED = "failed"


class WebhookDelivery(SQLModel, table=True):
    __tablename__ = "webhook_delivery"
    __table_args__ = (
        UniqueConstraint("platform", "delivery_id"),
        UniqueConstraint("platform", "store_id", "content_sha256"),
        # The platform's event id (Shopify's X-Shopify-Event-Id): one event, one delivery per topic.
        UniqueConstraint("platform", "store_id", "topic", "event_id", name="uq_webhook_delivery_event"),
        Index("ix_webhook_delivery_status", "status", "received_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    platform: str = Field(sa_column=Column(String(32), nullable=False))
    store_id: int = Field(foreign_key="store.id", index=True)
    delivery_id: str = Field(sa_column=Column(String(255), nullable=False))
    event_id: str | None = Field(default=None, sa_column=Column(String(255)))
    # When the platform says the event happened (Shopify's X-Shopify-Triggered-At): a job run
    # later must judge an uninstall by this, not by when it got round to it.
    triggered_at: datetime | None = time_field()
    topic: str = Field(sa_column=Column(String(64), nullable=False))
    # SHA-256 of topic + raw body: the same content under a new delivery id is a replay too.
    content_sha256: str = Field(sa_column=Column(String(64), nullable=False))
    payload: str = Field(sa_column=Column(Text, nullable=False))
    status: str = Field(default=DeliveryStatus.PENDING, sa_column=Column(String(16), nullable=False))
    outcome: str | None = Field(default=None, sa_column=Column(Text))
    received_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    processed_at: datetime | None = time_field()
    # The cart it was about, once processed (what an erasure empties payloads by).
    cart_id: int | None = Field(default=None, index=True)
    # Not claimable before this (a drainer is on it, or it failed and is backing off); None: free.
    claimed_until: datetime | None = time_field()
    # How many times a drainer claimed it: the back-off after a failure grows with it.
    attempts: int = Field(default=0, sa_column=Column(Integer, nullable=False, default=0, server_default="0"))
