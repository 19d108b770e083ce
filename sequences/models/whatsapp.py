"""The WhatsApp channel's tables: the store's number, its templates, what shoppers send us,
and the sandbox transport's outbox (development only).

The access token is stored encrypted (invariant 7); Meta's event times decide which status or
quality is the latest, so a late, older webhook changes nothing.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Column, String, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from sequences.models.types import UTCDateTime, json_field, time_field, utcnow


class WhatsAppAccount(SQLModel, table=True):
    """A store's WhatsApp Business number on the Cloud API (one per store)."""

    __tablename__ = "whatsapp_account"

    id: int | None = Field(default=None, primary_key=True)
    store_id: int = Field(foreign_key="store.id", unique=True)
    # Inbound webhooks name the number (metadata.phone_number_id) or the WABA (entry.id).
    waba_id: str = Field(sa_column=Column(String(64), nullable=False, index=True))
    phone_number_id: str = Field(sa_column=Column(String(64), nullable=False, unique=True))
    # A system-user token, Fernet-encrypted (invariant 7).
    access_token_ciphertext: str = Field(sa_column=Column(Text, nullable=False))
    display_phone_number: str | None = Field(default=None, sa_column=Column(String(32)))
    verified_name: str | None = Field(default=None, sa_column=Column(String(255)))
    # Template language used for this store's shoppers ("en" or "hi").
    default_language: str = Field(default="en", sa_column=Column(String(16), nullable=False))
    # GREEN / YELLOW / RED / UNKNOWN, from the Graph API check and quality webhooks.
    quality_rating: str = Field(default="UNKNOWN", sa_column=Column(String(16), nullable=False))
    # Meta's time of the quality we hold: an older event arriving late changes nothing.
    quality_at: datetime | None = time_field()
    # Meta's per-number throughput: 80 messages/s by default, 1,000 once upgraded.
    messages_per_second: int = Field(default=80)
    # Meta's daily messaging limit (unique shoppers a day, the business portfolio's): TIER_250,
    # TIER_2K, TIER_10K, TIER_100K or TIER_UNLIMITED, read with each check; None until read.
    messaging_limit_tier: str | None = Field(default=None, sa_column=Column(String(32)))
    checked_at: datetime | None = time_field()
    # What the last check found wrong, in words for the merchant; None when all was well.
    check_problem: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class TemplateStatus(StrEnum):
    """Meta's template statuses we act on; others are stored as Meta sends them."""

    NOT_PUSHED = "NOT_PUSHED"
    PENDING = "PENDING"
    APPROVED = "APPROVED"
    REJECTED = "REJECTED"
    PAUSED = "PAUSED"
    DISABLED = "DISABLED"
    # A send was refused with a 132xxx template error: not used until Meta says otherwise.
    FAILING = "FAILING"


class WhatsAppTemplate(SQLModel, table=True):
    """A cart-recovery template on a store's WABA and what Meta last said about it."""

    __tablename__ = "whatsapp_template"
    __table_args__ = (UniqueConstraint("store_id", "name", "language"),)

    id: int | None = Field(default=None, primary_key=True)
    store_id: int = Field(foreign_key="store.id", index=True)
    name: str = Field(sa_column=Column(String(128), nullable=False))
    language: str = Field(sa_column=Column(String(16), nullable=False))
    category: str = Field(default="MARKETING", sa_column=Column(String(32), nullable=False))
    status: str = Field(default=TemplateStatus.NOT_PUSHED, sa_column=Column(String(24), nullable=False))
    platform_template_id: str | None = Field(default=None, sa_column=Column(String(64), index=True))
    quality_score: str | None = Field(default=None, sa_column=Column(String(16)))
    # Meta's reason (rejection, pause) or the error that made us stop using it.
    reason: str | None = Field(default=None, sa_column=Column(Text))
    # Meta's time of the status we hold: an older webhook arriving late changes nothing.
    status_at: datetime | None = time_field()
    pushed_at: datetime | None = time_field()
    updated_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class InboundMessage(SQLModel, table=True):
    """What a shopper sent us on WhatsApp (and preference changes): one row per Meta event."""

    __tablename__ = "inbound_message"
    __table_args__ = (UniqueConstraint("store_id", "provider_event_id"),)

    id: int | None = Field(default=None, primary_key=True)
    store_id: int = Field(foreign_key="store.id", index=True)
    contact_id: int | None = Field(default=None, foreign_key="contact.id", index=True)
    # Meta's message id (wamid), or a key built from a preference change: replays hit it.
    provider_event_id: str = Field(sa_column=Column(String(255), nullable=False))
    kind: str = Field(sa_column=Column(String(32), nullable=False))
    intent: str = Field(sa_column=Column(String(16), nullable=False))  # stop | start | other
    # The shopper's words (personal data: erased with the contact), cut to a WhatsApp message.
    text: str | None = Field(default=None, sa_column=Column(Text))
    # Our message this answers (a button tap carries it), when known.
    reply_to_message_id: int | None = Field(default=None, foreign_key="message.id")
    sent_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    # The confirmation we sent back (opt-out / opt-in), once.
    confirmation_sent_at: datetime | None = time_field()
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class SandboxOutboxMessage(SQLModel, table=True):
    """What the sandbox transport "delivered": shown at /outbox instead of a phone."""

    __tablename__ = "sandbox_outbox_message"

    id: int | None = Field(default=None, primary_key=True)
    store_id: int = Field(foreign_key="store.id", index=True)
    # None for a reply sent outside the recovery sequence (the opt-out confirmation).
    message_id: int | None = Field(default=None, foreign_key="message.id", unique=True)
    provider_message_id: str = Field(sa_column=Column(String(64), nullable=False, unique=True))
    to_phone: str = Field(sa_column=Column(String(20), nullable=False))
    template_name: str = Field(sa_column=Column(String(128), nullable=False))
    body: str = Field(sa_column=Column(Text, nullable=False))
    image_url: str | None = Field(default=None, sa_column=Column(Text))
    buttons: list[Any] = json_field(default=list)
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
