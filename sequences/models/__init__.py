"""Tables of the recovery engine (SQLModel).

They live in ``sequences`` because the RQ worker uses them without Flask; ``app`` imports them
(the dependency runs app -> sequences). Money is ``Decimal`` with an ISO currency code; times
are timezone-aware UTC; phones are E.164. Every row that belongs to a merchant carries
``store_id`` so every query can be scoped by store.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Dialect,
    Index,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    event,
    text,
)
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite keeps no zone; we add it back)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column; use datetime.now(UTC)")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class MoneyAmount(TypeDecorator[Decimal]):
    """Exact decimal amounts. SQLite has no decimal type, so it stores the canonical text."""

    impl = Numeric(18, 4)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(40))
        return dialect.type_descriptor(Numeric(18, 4, asdecimal=True))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if not isinstance(value, Decimal):
            raise TypeError(f"money must be Decimal, got {type(value).__name__}")
        return str(value) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        return value if isinstance(value, Decimal) else Decimal(str(value))


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


def _time(*, nullable: bool = True, index: bool = False) -> Any:
    return Field(
        default=None,
        sa_column=Column(UTCDateTime(), nullable=nullable, index=index),
    )


def _money(*, nullable: bool = True) -> Any:
    return Field(default=None, sa_column=Column(MoneyAmount(), nullable=nullable))


def _json(*, default: Any) -> Any:
    return Field(default_factory=default, sa_column=Column(JSON, nullable=False))


class StoreStatus(StrEnum):
    ACTIVE = "active"
    UNINSTALLED = "uninstalled"


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


class OptOutSync(StrEnum):
    """Telling the platform about an opt-out (ConsentEvent.platform_sync)."""

    PENDING = "pending"
    DONE = "done"
    SKIPPED = "skipped"
    FAILED = "failed"


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    PROCESSED = "processed"
    IGNORED = "ignored"
    FAILED = "failed"


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
    access_token_expires_at: datetime | None = _time()
    refresh_token_expires_at: datetime | None = _time()
    scopes: str | None = Field(default=None, sa_column=Column(Text))
    # The latest (re)install: an uninstall event older than this belongs to an earlier install.
    installed_at: datetime | None = _time()
    # Orders modified up to this time have been read back from the platform (WooCommerce's
    # reconcile poll, which catches the deliveries it never retries).
    orders_synced_at: datetime | None = _time()
    sending_paused: bool = Field(default=False)
    pause_reason: str | None = Field(default=None, sa_column=Column(Text))
    # Who paused: "merchant", or the health rule that did ("quality", "whatsapp_error",
    # "failure_rate"). A quality pause lifts itself when the number recovers; the others wait
    # for the merchant.
    pause_source: str | None = Field(default=None, sa_column=Column(String(32)))
    paused_at: datetime | None = _time()
    settings: dict[str, Any] = _json(default=dict)
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


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
    consent_observed_at: datetime | None = _time()
    # Set once and for good by an opt-out; only an explicit opt-in clears it.
    opted_out_at: datetime | None = _time()
    # The phone's last 4 digits, for the merchant's search (kept in step by the ORM events
    # below; None once the contact is erased).
    phone_last4: str | None = Field(default=None, sa_column=Column(String(4)))
    # When the shopper last said STOP or START (the time they said it, not when we heard):
    # a retried, older word arriving later changes nothing.
    consent_changed_at: datetime | None = _time()
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


@event.listens_for(Contact, "before_insert")
@event.listens_for(Contact, "before_update")
def _keep_phone_last4(_mapper: Any, _connection: Any, contact: Contact) -> None:
    # An erased contact's phone_e164 is a key, not a number: nothing to search by.
    phone = contact.phone_e164 or ""
    contact.phone_last4 = phone[-4:] if phone.startswith("+") else None


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
    subtotal: Decimal = _money(nullable=False)
    total: Decimal = _money(nullable=False)
    checkout_url: str | None = Field(default=None, sa_column=Column(Text))
    line_count: int = Field(default=0)
    # The platform's updated_at of the snapshot we hold: older deliveries are ignored.
    platform_updated_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    last_activity_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    abandoned_at: datetime | None = _time()
    first_message_at: datetime | None = _time()
    closed_at: datetime | None = _time()
    # When the engine next needs to look at this cart; the sweep rebuilds Redis from it.
    next_wake_at: datetime | None = _time()
    order_platform_id: str | None = Field(default=None, sa_column=Column(String(255)))
    order_total: Decimal | None = _money()
    order_currency: str | None = Field(default=None, sa_column=Column(String(3)))
    # The order's total in the store's own currency (differs when the shopper paid in
    # another): recovered revenue is summed in this, refunds are recorded in it too.
    order_total_store: Decimal | None = _money()
    ordered_at: datetime | None = _time()
    # Reconciliation (`cartback reconcile`): what the platform says of the order since; refunds
    # in the store's currency.
    order_financial_status: str | None = Field(default=None, sa_column=Column(String(32)))
    order_refunded: Decimal | None = _money()
    order_cancelled_at: datetime | None = _time()
    order_verified_at: datetime | None = _time()
    # What our discount took off the recovered order, in the store's currency (dashboard).
    discount_given: Decimal | None = _money()
    # The last step messaged before a recovered order: the funnel credits it.
    recovered_step: int | None = Field(default=None)
    # The shopper wrote back (anything but STOP/START): the sequence waits for a person.
    shopper_replied_at: datetime | None = _time()
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
    unit_price: Decimal = _money(nullable=False)
    image_url: str | None = Field(default=None, sa_column=Column(Text))


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
    due_at: datetime | None = _time()
    # The offer as planned (kept so a settings change does not alter a link already sent).
    offer: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    attempted_at: datetime | None = _time()
    sent_at: datetime | None = _time()
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
    cart_abandoned_at: datetime | None = _time()
    transport: str = Field(sa_column=Column(String(16), nullable=False))
    template_name: str = Field(sa_column=Column(String(128), nullable=False))
    language: str = Field(sa_column=Column(String(16), nullable=False))
    components: list[Any] = _json(default=list)
    preview: dict[str, Any] = _json(default=dict)
    status: str = Field(default=MessageStatus.QUEUED, sa_column=Column(String(16), nullable=False))
    provider_message_id: str | None = Field(default=None, sa_column=Column(String(255), index=True))
    error_code: str | None = Field(default=None, sa_column=Column(String(32)))
    error_detail: str | None = Field(default=None, sa_column=Column(Text))
    # Meta's pricing on status webhooks: the category it was charged as and whether it was;
    # the cost is that category's rate for the recipient's country (Meta sends no amount).
    pricing_category: str | None = Field(default=None, sa_column=Column(String(32)))
    billable: bool | None = Field(default=None)
    cost: Decimal | None = _money()
    cost_currency: str | None = Field(default=None, sa_column=Column(String(3)))
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    sent_at: datetime | None = _time()
    delivered_at: datetime | None = _time()
    read_at: datetime | None = _time()
    failed_at: datetime | None = _time()
    # The shopper's first click on the message's link.
    clicked_at: datetime | None = _time()


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
    value: Decimal = _money(nullable=False)
    max_amount: Decimal | None = _money()
    currency: str = Field(sa_column=Column(String(3), nullable=False))
    min_subtotal: Decimal | None = _money()
    ends_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    platform_discount_id: str | None = Field(default=None, sa_column=Column(String(255)))
    # An order used this code (then the platform keeps it); unused expired codes are deleted.
    redeemed_at: datetime | None = _time()
    platform_deleted_at: datetime | None = _time()
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class ConsentEvent(SQLModel, table=True):
    """Append-only proof of every consent change."""

    __tablename__ = "consent_event"
    __table_args__ = (Index("ix_consent_event_store_created", "store_id", "created_at"),)

    id: int | None = Field(default=None, primary_key=True)
    store_id: int = Field(foreign_key="store.id", index=True)
    contact_id: int = Field(foreign_key="contact.id", index=True)
    kind: str = Field(sa_column=Column(String(16), nullable=False))  # opt_out | opt_in
    source: str = Field(sa_column=Column(String(64), nullable=False))
    evidence: dict[str, Any] = _json(default=dict)
    # Telling the platform (e.g. Shopify's WhatsApp consent): pending, done, skipped, failed.
    platform_sync: str | None = Field(default=None, sa_column=Column(String(16)))
    platform_sync_detail: str | None = Field(default=None, sa_column=Column(Text))
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


class CartEvent(SQLModel, table=True):
    """The cart's timeline, in the words a merchant would use; append-only."""

    __tablename__ = "cart_event"

    id: int | None = Field(default=None, primary_key=True)
    store_id: int = Field(foreign_key="store.id", index=True)
    cart_id: int = Field(foreign_key="cart.id", index=True)
    kind: str = Field(sa_column=Column(String(32), nullable=False))
    detail: dict[str, Any] = _json(default=dict)
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


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
    triggered_at: datetime | None = _time()
    topic: str = Field(sa_column=Column(String(64), nullable=False))
    # SHA-256 of topic + raw body: the same content under a new delivery id is a replay too.
    content_sha256: str = Field(sa_column=Column(String(64), nullable=False))
    payload: str = Field(sa_column=Column(Text, nullable=False))
    status: str = Field(default=DeliveryStatus.PENDING, sa_column=Column(String(16), nullable=False))
    outcome: str | None = Field(default=None, sa_column=Column(Text))
    received_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    processed_at: datetime | None = _time()
    # The cart it was about, once processed (what an erasure empties payloads by).
    cart_id: int | None = Field(default=None, index=True)


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
    buttons: list[Any] = _json(default=list)
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


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


class DataExport(SQLModel, table=True):
    """Everything held about one customer, produced for a platform's data request."""

    __tablename__ = "data_export"

    id: int | None = Field(default=None, primary_key=True)
    store_id: int = Field(foreign_key="store.id", index=True)
    request_ref: str | None = Field(default=None, sa_column=Column(String(255)))
    customer_ref: str | None = Field(default=None, sa_column=Column(String(255)))
    content: dict[str, Any] = _json(default=dict)
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


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
    quality_at: datetime | None = _time()
    # Meta's per-number throughput: 80 messages/s by default, 1,000 once upgraded.
    messages_per_second: int = Field(default=80)
    checked_at: datetime | None = _time()
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
    status_at: datetime | None = _time()
    pushed_at: datetime | None = _time()
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
    confirmation_sent_at: datetime | None = _time()
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


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
    keys_received_at: datetime | None = _time()
    # The keys the store posted, encrypted, until they are proven on the store (then the
    # store's own; cleared here).
    keys_ciphertext: str | None = Field(default=None, sa_column=Column(Text))
    # Why the keys could not be proven yet, in words for the merchant.
    problem: str | None = Field(default=None, sa_column=Column(Text))
    store_id: int | None = Field(default=None, foreign_key="store.id")
    # The merchant came back and was signed in: a second return signs nobody in.
    returned_at: datetime | None = _time()


class AdminLogin(SQLModel, table=True):
    """A one-time sign-in link to a store's standalone admin (``cartback admin-link STORE``).

    The link carries this row's id and a random nonce; only the nonce's SHA-256 is stored, so
    a database reader cannot sign in. Used once: ``used_at`` is set by a conditional update.
    """

    __tablename__ = "admin_login"

    id: int | None = Field(default=None, primary_key=True)
    store_id: int = Field(foreign_key="store.id", index=True)
    nonce_sha256: str = Field(sa_column=Column(String(64), nullable=False))
    # Who asked for the link, for the audit trail ("cli", "woocommerce connect").
    issued_by: str = Field(sa_column=Column(String(64), nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    expires_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    used_at: datetime | None = _time()
    # Signing out ends the session everywhere: a copied cookie of this sign-in stops working.
    signed_out_at: datetime | None = _time()


class SettingsChange(SQLModel, table=True):
    """Append-only audit trail of a store's settings: who changed what, and when."""

    __tablename__ = "settings_change"

    id: int | None = Field(default=None, primary_key=True)
    store_id: int = Field(foreign_key="store.id", index=True)
    # "Shopify user 123", "admin link 7 (cli)": an id, never a name or email.
    actor: str = Field(sa_column=Column(String(128), nullable=False))
    # What changed: [{"field": "steps.2.offer.value", "from": "100", "to": "150"}, ...].
    changes: list[Any] = _json(default=list)
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


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
