"""The shopper (``Contact``, one per store and phone) and the append-only proof of consent.

An opt-out is set once and for good; only an explicit opt-in clears it. Every change is recorded
in ``ConsentEvent``.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Column, Index, String, Text, UniqueConstraint, event
from sqlmodel import Field, SQLModel

from sequences.models.types import UTCDateTime, json_field, time_field, utcnow


class OptOutSync(StrEnum):
    """Telling the platform about an opt-out (ConsentEvent.platform_sync)."""

    PENDING = "pending"
    DONE = "done"
    SKIPPED = "skipped"
    FAILED = "failed"


class Contact(SQLModel, table=True):
    __tablename__ = "contact"
    __table_args__ = (
        UniqueConstraint("store_id", "phone_e164"),
        Index("ix_contact_store_last4", "store_id", "phone_last4"),
    )

    id: int | None = Field(default=None, primary_key=True)
    store_id: int = Field(foreign_key="store.id", index=True)
    phone_e164: str = Field(sa_column=Column(String(20), nullable=False))
    first_name: str | None = Field(default=None, sa_column=Column(String(255)))
    email: str | None = Field(default=None, sa_column=Column(String(320)))
    platform_customer_id: str | None = Field(default=None, sa_column=Column(String(255)))
    marketing_consent: bool = Field(default=False)
    consent_source: str | None = Field(default=None, sa_column=Column(String(64)))
    # The platform time of the snapshot consent was last read from: one contact can have
    # several checkouts, and an older one arriving late must not overrule a newer one.
    consent_observed_at: datetime | None = time_field()
    # Set once and for good by an opt-out; only an explicit opt-in clears it.
    opted_out_at: datetime | None = time_field()
    # The phone's last 4 digits, for the merchant's search (kept in step by the ORM events
    # below; None once the contact is erased).
    phone_last4: str | None = Field(default=None, sa_column=Column(String(4)))
    # When the shopper last said STOP or START (the time they said it, not when we heard):
    # a retried, older word arriving later changes nothing.
    consent_changed_at: datetime | None = time_field()
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


@event.listens_for(Contact, "before_insert")
@event.listens_for(Contact, "before_update")
def _keep_phone_last4(_mapper: Any, _connection: Any, contact: Contact) -> None:
    # An erased contact's phone_e164 is a key, not a number: nothing to search by.
    phone = contact.phone_e164 or ""
    contact.phone_last4 = phone[-4:] if phone.startswith("+") else None


class ConsentEvent(SQLModel, table=True):
    """Append-only proof of every consent change."""

    __tablename__ = "consent_event"
    __table_args__ = (Index("ix_consent_event_store_created", "store_id", "created_at"),)

    id: int | None = Field(default=None, primary_key=True)
    store_id: int = Field(foreign_key="store.id", index=True)
    contact_id: int = Field(foreign_key="contact.id", index=True)
    kind: str = Field(sa_column=Column(String(16), nullable=False))  # opt_out | opt_in
    source: str = Field(sa_column=Column(String(64), nullable=False))
    evidence: dict[str, Any] = json_field(default=dict)
    # Telling the platform (e.g. Shopify's WhatsApp consent): pending, done, skipped, failed.
    platform_sync: str | None = Field(default=None, sa_column=Column(String(16)))
    platform_sync_detail: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
