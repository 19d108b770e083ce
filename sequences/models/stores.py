"""The store: a merchant's shop on a platform, how it gets connected, and what it caches.

``Store`` holds the platform credentials (encrypted, invariant 7) and the merchant's settings;
``SettingsChange`` is their append-only audit trail. Every other row of a merchant points at a
store by ``store_id``.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Column, String, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from sequences.models.types import UTCDateTime, json_field, time_field, utcnow


class StoreStatus(StrEnum):
    ACTIVE = "active"
    UNINSTALLED = "uninstalled"


class Store(SQLModel, table=True):
    __tablename__ = "store"
    __table_args__ = (UniqueConstraint("platform", "platform_store_id"),)

    id: int | None = Field(default=None, primary_key=True)
    platform: str = Field(sa_column=Column(String(32), nullable=False, index=True))
    # The platform's name for the store: shop domain, site URL, demo slug.
    platform_store_id: str = Field(sa_column=Column(String(255), nullable=False))
    name: str = Field(sa_column=Column(String(255), nullable=False))
    status: str = Field(default=StoreStatus.ACTIVE, sa_column=Column(String(16), nullable=False))
    currency: str = Field(default="INR", sa_column=Column(String(3), nullable=False))
    locale: str = Field(default="en_IN", sa_column=Column(String(16), nullable=False))
    timezone: str = Field(default="Asia/Kolkata", sa_column=Column(String(64), nullable=False))
    default_region: str = Field(default="IN", sa_column=Column(String(2), nullable=False))
    # Platform Admin API base and the public storefront (where a bad link lands the shopper).
    api_base_url: str = Field(default="", sa_column=Column(Text, nullable=False))
    storefront_url: str = Field(default="", sa_column=Column(Text, nullable=False))
    # Fernet ciphertexts (invariant 7); see sequences.secrets.
    access_token_ciphertext: str | None = Field(default=None, sa_column=Column(Text))
    webhook_secret_ciphertext: str | None = Field(default=None, sa_column=Column(Text))
    # Expiring access tokens (Shopify's expiring offline tokens): refreshed before expiry.
    refresh_token_ciphertext: str | None = Field(default=None, sa_column=Column(Text))
    access_token_expires_at: datetime | None = time_field()
    refresh_token_expires_at: datetime | None = time_field()
    scopes: str | None = Field(default=None, sa_column=Column(Text))
    # The latest (re)install: an uninstall event older than this belongs to an earlier install.
    installed_at: datetime | None = time_field()
    # Orders modified up to this time have been read back from the platform (WooCommerce's
    # reconcile poll, which catches the deliveries it never retries).
    orders_synced_at: datetime | None = time_field()
    sending_paused: bool = Field(default=False)
    pause_reason: str | None = Field(default=None, sa_column=Column(Text))
    # Who paused: "merchant", or the health rule that did ("quality", "whatsapp_error",
    # "failure_rate"). A quality pause lifts itself when the number recovers; the others wait
    # for the merchant.
    pause_source: str | None = Field(default=None, sa_column=Column(String(32)))
    paused_at: datetime | None = time_field()
    # The store's platform API has refused or failed every call since then (None: the last call
    # worked); its last answer in words. An incident opens when it lasts (sequences.alerts).
    platform_failing_since: datetime | None = time_field()
    platform_failure: str | None = Field(default=None, sa_column=Column(Text))
    settings: dict[str, Any] = json_field(default=dict)
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class PlatformConnection(SQLModel, table=True):
    """A store connection under way (WooCommerce's app authorization): the one-time id we
    give the store as ``user_id``, which its key delivery and the merchant's return name."""

    __tablename__ = "platform_connection"

    id: int | None = Field(default=None, primary_key=True)
    # Random and single-use; only its SHA-256 is kept (whoever reads the table cannot finish
    # someone's connection).
    connection_sha256: str = Field(sa_column=Column(String(64), nullable=False, unique=True))
    # The browser that started it (a cookie's SHA-256): only it is signed in at the return.
    browser_sha256: str = Field(sa_column=Column(String(64), nullable=False))
    platform: str = Field(sa_column=Column(String(32), nullable=False))
    store_url: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    expires_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    keys_received_at: datetime | None = time_field()
    # The keys the store posted, encrypted, until they are proven on the store (then the
    # store's own; cleared here).
    keys_ciphertext: str | None = Field(default=None, sa_column=Column(Text))
    # Why the keys could not be proven yet, in words for the merchant.
    problem: str | None = Field(default=None, sa_column=Column(Text))
    store_id: int | None = Field(default=None, foreign_key="store.id")
    # The merchant came back and was signed in: a second return signs nobody in.
    returned_at: datetime | None = time_field()


class VariantImage(SQLModel, table=True):
    """Product images per variant, cached: platforms' cart payloads carry none."""

    __tablename__ = "variant_image"
    __table_args__ = (UniqueConstraint("store_id", "platform_variant_id"),)

    id: int | None = Field(default=None, primary_key=True)
    store_id: int = Field(foreign_key="store.id")
    platform_variant_id: str = Field(sa_column=Column(String(255), nullable=False))
    # None: the platform has no image for it (cached too, so we do not ask on every cart).
    image_url: str | None = Field(default=None, sa_column=Column(Text))
    fetched_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class SettingsChange(SQLModel, table=True):
    """Append-only audit trail of a store's settings: who changed what, and when."""

    __tablename__ = "settings_change"

    id: int | None = Field(default=None, primary_key=True)
    store_id: int = Field(foreign_key="store.id", index=True)
    # "Shopify user 123", "admin link 7 (cli)": an id, never a name or email.
    actor: str = Field(sa_column=Column(String(128), nullable=False))
    # What changed: [{"field": "steps.2.offer.value", "from": "100", "to": "150"}, ...].
    changes: list[Any] = json_field(default=list)
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
