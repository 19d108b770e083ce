"""The common cart model and the protocol every platform connector implements.

Platform payloads become these frozen dataclasses at the edge, so the engine never sees a
platform's field names. Money is ``Decimal`` with an ISO 4217 code; phones are E.164; times
are aware UTC.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from enum import StrEnum
from typing import Any, Protocol, TypeVar, runtime_checkable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import phonenumbers

CURRENCY_CODE = re.compile(r"^[A-Z]{3}$")
# No cart is worth more than this (in any currency's major unit); also keeps amounts inside
# the database's NUMERIC(18, 4).
MAX_AMOUNT = Decimal("100000000000")


class PayloadError(ValueError):
    """A webhook body that is not what the platform documents; the message says which field."""


class MalformedPayload(PayloadError):
    """The body is not parseable at all (not JSON, not an object)."""


class WebhookRejected(Exception):
    """A delivery refused before parsing (missing headers, bad signature): HTTP status + reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class PlatformError(Exception):
    """A platform API call failed. ``retryable`` says whether trying again later may help."""

    def __init__(self, reason: str, *, retryable: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


class PlatformUnauthorized(PlatformError):
    """The platform refused our access token (expired or revoked): refresh it, then retry once."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, retryable=False)


class InvalidPhone(PayloadError):
    pass


# "+91" and ten digits, the first 6 to 9: how most Indian shoppers' numbers arrive, already
# E.164. phonenumbers.parse reads country code 91 and those ten digits from it (India's
# national prefix, "0", cannot start them), so the number is built directly and validated
# unchanged: parse was ~60% of the cost of a number, and ingest reads one per delivery.
_INDIAN_MOBILE_E164 = re.compile(r"\+91[6-9][0-9]{9}")


def normalise_phone(raw: str, default_region: str) -> str:
    """E.164 for a phone as shoppers type it ("98765 43210", "+91-98765-43210", "0 98765 43210").

    Raises InvalidPhone (without echoing the number: it is personal data) when it is not a
    valid number for the region.
    """
    if _INDIAN_MOBILE_E164.fullmatch(raw):
        if not phonenumbers.is_valid_number(
            phonenumbers.PhoneNumber(country_code=91, national_number=int(raw[3:]))
        ):
            raise InvalidPhone(f"phone is not a valid number for region {default_region}")
        return raw
    try:
        parsed = phonenumbers.parse(raw, default_region.upper())
    except phonenumbers.NumberParseException:
        raise InvalidPhone(f"phone is not a phone number (region {default_region})") from None
    if not phonenumbers.is_valid_number(parsed):
        raise InvalidPhone(f"phone is not a valid number for region {default_region}")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def parse_decimal(value: Any, field_name: str) -> Decimal:
    """Platforms send money as strings ("1499.00"); floats are refused, never rounded."""
    if isinstance(value, (bool, float)):
        raise PayloadError(f"{field_name} must be a decimal string, not a float")
    try:
        amount = Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise PayloadError(f"{field_name} is not a number") from None
    if not amount.is_finite() or amount < 0:
        raise PayloadError(f"{field_name} must be a non-negative amount")
    if amount > MAX_AMOUNT:
        raise PayloadError(f"{field_name} is implausibly large")
    return amount


def parse_currency(value: Any, field_name: str = "currency") -> str:
    if not isinstance(value, str) or not CURRENCY_CODE.match(value.upper()):
        raise PayloadError(f"{field_name} must be an ISO 4217 code such as INR")
    return value.upper()


def parse_timestamp(value: Any, field_name: str) -> datetime:
    """ISO 8601 with an offset, returned in UTC. A time without a zone is refused, not guessed."""
    if not isinstance(value, str):
        raise PayloadError(f"{field_name} must be an ISO 8601 timestamp")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise PayloadError(f"{field_name} is not an ISO 8601 timestamp") from None
    if parsed.tzinfo is None:
        raise PayloadError(f"{field_name} must carry a UTC offset")
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        # Year 1 or 9999 with an offset falls outside what a datetime can hold in UTC.
        raise PayloadError(f"{field_name} is out of range") from None


def with_query(url: str, **params: str) -> str:
    """The URL with these query parameters set (replacing any of the same name)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in params]
    return urlunsplit(parts._replace(query=urlencode([*query, *params.items()])))


def cart_permalink(storefront_url: str, lines: Sequence[CartLine], discount_code: str | None) -> str | None:
    """``{store}/cart/{variant}:{qty},…?discount=CODE``: the cart rebuilt from its lines (Shopify's
    cart permalinks; the demo store copies them). None when no line names a variant."""
    items = ",".join(f"{line.variant_id}:{line.quantity}" for line in lines if line.variant_id)
    if not items:
        return None
    permalink = f"{storefront_url.rstrip('/')}/cart/{items}"
    return with_query(permalink, discount=discount_code) if discount_code else permalink


class HeaderMap(Mapping[str, str]):
    """HTTP headers with case-insensitive names, as HTTP defines them."""

    def __init__(self, pairs: Mapping[str, str] | Sequence[tuple[str, str]]) -> None:
        items = pairs.items() if isinstance(pairs, Mapping) else pairs
        self._values = {name.lower(): value for name, value in items}

    def __getitem__(self, name: str) -> str:
        return self._values[name.lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


@dataclass(frozen=True)
class Money:
    amount: Decimal
    currency: str

    def __post_init__(self) -> None:
        if not isinstance(self.amount, Decimal):
            raise TypeError("Money.amount must be a Decimal")
        if not CURRENCY_CODE.match(self.currency):
            raise ValueError(f"not an ISO 4217 currency code: {self.currency!r}")


@dataclass(frozen=True)
class CartLine:
    title: str
    quantity: int
    unit_price: Decimal
    product_id: str | None = None
    variant_id: str | None = None
    variant_title: str | None = None
    image_url: str | None = None

    @property
    def line_total(self) -> Decimal:
        return self.unit_price * self.quantity


class ConsentSource(StrEnum):
    CHECKOUT_CHECKBOX = "checkout_checkbox"
    # The platform's customer record says they subscribed to WhatsApp (or SMS) marketing.
    CUSTOMER_RECORD = "customer_record"
    STORE_POLICY = "store_policy"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Buyer:
    phone_e164: str | None = None
    email: str | None = None
    first_name: str | None = None
    customer_id: str | None = None
    marketing_consent: bool = False
    consent_source: ConsentSource = ConsentSource.UNKNOWN


@dataclass(frozen=True)
class CartSnapshot:
    """A checkout as the platform last described it."""

    cart_id: str
    updated_at: datetime
    currency: str
    subtotal: Decimal
    total: Decimal
    lines: tuple[CartLine, ...]
    buyer: Buyer
    cart_token: str | None = None
    checkout_url: str | None = None
    # The platform says this checkout became an order (its own completed_at).
    completed: bool = False
    # Billing details as typed, where the platform will need them to build the cart's order.
    billing: Mapping[str, str] = field(default_factory=dict, repr=False)
    # When the shopper last did something, where the platform's update time says more than
    # that (a WooCommerce order is also modified by the merchant, and by cartback's coupon).
    activity_at: datetime | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class CartDeleted:
    cart_id: str
    occurred_at: datetime
    # Another key for the same cart, for platforms whose delete body lacks the usual one.
    cart_token: str | None = None


@dataclass(frozen=True)
class OrderEvent:
    """An order, with everything that can point back at the cart it came from."""

    order_id: str
    created_at: datetime
    currency: str
    total: Decimal
    cart_id: str | None = None
    cart_token: str | None = None
    discount_codes: tuple[str, ...] = ()
    phone_e164: str | None = None
    email: str | None = None
    # The total in the store's own currency, when the platform says (the shopper may have
    # paid in another); None: the same as ``total`` if the currencies agree, else unknown.
    store_total: Decimal | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    # What the body says of the order now (refunds, cancellation, payment) where it says all of
    # it (WooCommerce's order bodies): an order already recorded takes it as a change.
    status: OrderStatus | None = field(default=None, compare=False)

    def total_in(self, store_currency: str) -> Decimal | None:
        """The total in the store's currency, None when the platform did not say."""
        if self.store_total is not None:
            return self.store_total
        return self.total if self.currency == store_currency else None


@dataclass(frozen=True)
class OrderChanged:
    """An order was refunded, cancelled or edited after it was placed. ``status`` is what the
    platform says of it now when the body holds all of that (WooCommerce's order bodies);
    None: read the order again (Shopify's refund and update bodies hold only part of it)."""

    order_id: str
    occurred_at: datetime
    status: OrderStatus | None = None


@dataclass(frozen=True)
class AppUninstalled:
    """The merchant removed cartback: stop everything for that store at once."""

    occurred_at: datetime


@dataclass(frozen=True)
class CustomerRef:
    """Whom a privacy request is about, as the platform names them (any field may be missing)."""

    customer_id: str | None = None
    email: str | None = None
    phone_e164: str | None = None


@dataclass(frozen=True)
class CustomerDataRequest:
    """The merchant must be given everything we hold about this customer."""

    customer: CustomerRef
    request_id: str | None = None
    order_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class CustomerRedact:
    """Erase this customer's personal data."""

    customer: CustomerRef
    order_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class StoreRedact:
    """Delete everything held for the store (it uninstalled long enough ago)."""

    # The uninstall this request follows happened by then (Shopify: 48 h before it was sent).
    uninstalled_by: datetime | None = None


# Privacy obligations outlive an install: they are processed for uninstalled stores too.
PrivacyRequest = CustomerDataRequest | CustomerRedact | StoreRedact


@dataclass(frozen=True)
class Ignored:
    """A topic we acknowledge but do not act on."""

    reason: str


WebhookEvent = (
    CartSnapshot | CartDeleted | OrderEvent | OrderChanged | AppUninstalled | PrivacyRequest | Ignored
)


@dataclass(frozen=True)
class WebhookIdentity:
    """What the headers say before the body is trusted."""

    store_ref: str
    topic: str
    delivery_id: str
    # The platform's id for the event behind the delivery (several deliveries may share it).
    event_id: str | None = None
    triggered_at: datetime | None = None


@dataclass(frozen=True)
class StoreAccess:
    """How to reach one store's Admin API (secrets already decrypted, kept in memory only)."""

    platform_store_id: str
    api_base_url: str
    access_token: str
    storefront_url: str
    # The per-store secret (WooCommerce signs webhooks with it, links to the store carry it).
    webhook_secret: str = field(default="", repr=False)


@dataclass(frozen=True)
class IssuedToken:
    """An access token as the platform issued it (expiring tokens carry a refresh token)."""

    access_token: str
    scope: str = ""
    expires_at: datetime | None = None
    refresh_token: str | None = None
    refresh_token_expires_at: datetime | None = None


@dataclass(frozen=True)
class OrderStatus:
    """What the platform says of an order now (for reconciling recovered revenue); amounts in
    the store's currency."""

    order_id: str
    found: bool
    financial_status: str | None = None
    cancelled_at: datetime | None = None
    current_total: Decimal | None = None
    refunded: Decimal | None = None
    currency: str | None = None
    # The platform's word for why it was cancelled (Shopify: customer, declined, fraud...).
    cancel_reason: str | None = None
    # Paid in cash on delivery: a cancellation before payment is a parcel returned to origin.
    cash_on_delivery: bool = False
    # The money is not collected yet (cash on delivery in transit, a bank transfer on hold):
    # its revenue is pending until the platform says it was paid.
    awaiting_payment: bool = False


class DiscountKind(StrEnum):
    FIXED = "fixed"
    PERCENT = "percent"


@dataclass(frozen=True)
class DiscountRequest:
    code: str
    kind: DiscountKind
    value: Decimal
    currency: str
    ends_at: datetime
    min_subtotal: Decimal | None = None
    max_amount: Decimal | None = None
    # Single use: a leaked code is worth one order at most.
    usage_limit: int = 1
    # The cart's subtotal when the code is made: lets a platform without percentage caps
    # turn a capped percentage into the fixed amount it comes to.
    cart_subtotal: Decimal | None = None
    starts_at: datetime | None = None
    # Only this shopper may use the code, on platforms that restrict codes by email.
    customer_email: str | None = None

    def amount_off(self) -> Decimal:
        """The fixed amount the offer comes to on this cart.

        A percentage code would grow with the cart and neither platform caps one, so recovery
        codes are always the amount the message promised, fixed at the click (rounded as
        ``sequences.engine.messages.discount_amount`` rounds it) and capped.
        """
        if self.kind == DiscountKind.FIXED:
            return self.value
        if self.cart_subtotal is None:
            raise ValueError("a percentage offer needs the cart's subtotal")
        amount = (self.cart_subtotal * self.value / 100).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
        return min(amount, self.max_amount) if self.max_amount is not None else amount


@dataclass(frozen=True)
class CreatedDiscount:
    code: str
    platform_discount_id: str


@dataclass(frozen=True)
class CheckoutRef:
    """The cart to rebuild, as we hold it."""

    cart_id: str
    cart_token: str | None
    checkout_url: str | None
    lines: Sequence[CartLine]
    # What the shopper typed at checkout (billing name, email, phone, address), where the
    # platform builds a new order from it (WooCommerce carts captured before any order).
    billing: Mapping[str, str] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class RebuiltCheckout:
    url: str
    # The cart's new platform token when the rebuild made a new checkout for it (WooCommerce:
    # the order it created), so that later steps reuse it instead of making another.
    cart_token: str | None = None
    # The cart's order has gone through meanwhile: ``url`` is the store, with nothing to pay.
    already_ordered: bool = False


@runtime_checkable
class Connector(Protocol):
    """What the engine needs from a platform; a method exists only when a caller needs it."""

    platform: str
    # True when the platform signs every store's webhooks with the app's own secret
    # (Shopify): they are verified before the store is looked up.
    signs_with_app_secret: bool

    def webhook_identity(self, headers: Mapping[str, str]) -> WebhookIdentity:
        """Read store, topic and delivery id from the headers; WebhookRejected(400) if absent."""
        ...

    def verify_webhook(self, raw_body: bytes, headers: Mapping[str, str], secret: str) -> bool:
        """Constant-time check of the platform's signature over the raw body."""
        ...

    def parse_webhook(
        self, identity: WebhookIdentity, raw_body: bytes, *, default_region: str
    ) -> WebhookEvent:
        """Turn a verified body into the common model; PayloadError says what is wrong."""
        ...

    def create_discount(self, store: StoreAccess, request: DiscountRequest) -> CreatedDiscount:
        """Create a single-use code on the platform; PlatformError on failure."""
        ...

    def rebuild_checkout(
        self, store: StoreAccess, checkout: CheckoutRef, discount_code: str | None
    ) -> RebuiltCheckout:
        """A URL that opens the shopper's checkout with the code applied, no login needed."""
        ...


# Optional capabilities: a connector implements them when its platform needs them.


@runtime_checkable
class RefreshesTokens(Protocol):
    def refresh_access(
        self,
        store: StoreAccess,
        refresh_token: str,
        *,
        expires_at: datetime | None,
        refresh_expires_at: datetime | None,
        force: bool,
    ) -> IssuedToken | None:
        """A new token when the current one expires soon (or ``force``); None when still valid."""
        ...


@runtime_checkable
class FetchesVariantImages(Protocol):
    def fetch_variant_images(self, store: StoreAccess, variant_ids: Sequence[str]) -> dict[str, str | None]:
        """Image URL per variant id, in one platform call; None where it has no image."""
        ...


@runtime_checkable
class DeletesDiscounts(Protocol):
    def delete_discount(self, store: StoreAccess, platform_discount_id: str) -> None: ...


@runtime_checkable
class SyncsOptOuts(Protocol):
    def sync_opt_out(self, store: StoreAccess, customer_id: str) -> None:
        """Tell the platform the customer unsubscribed from WhatsApp marketing."""
        ...


@runtime_checkable
class ReconcilesOrders(Protocol):
    def order_statuses(self, store: StoreAccess, order_ids: Sequence[str]) -> list[OrderStatus]: ...


@dataclass(frozen=True)
class StoreDetails:
    name: str
    currency: str
    timezone: str
    country: str | None
    storefront_url: str


@runtime_checkable
class DescribesStore(Protocol):
    def store_details(self, store: StoreAccess) -> StoreDetails:
        """The store's name, currency, IANA zone, country and storefront (proves access works)."""
        ...


@runtime_checkable
class VerifiesKeys(Protocol):
    def verify_keys(self, typed_site: str, access_token: str) -> str:
        """The site's own address, once a call there with keys the merchant handed us (held as
        ``StoreAccess.access_token`` holds them) succeeded; PlatformError when it did not."""
        ...


@runtime_checkable
class AnswersPings(Protocol):
    def is_ping(self, raw_body: bytes, headers: Mapping[str, str]) -> bool:
        """An unsigned test delivery the platform sends when a webhook is created (answer 2xx)."""
        ...


@runtime_checkable
class AcknowledgesUnreadable(Protocol):
    def acknowledges_unreadable(self, identity: WebhookIdentity) -> bool:
        """True when an authentic delivery that cannot be read must still get a 2xx: the
        platform stops delivering anything after a few refusals (WooCommerce's orders)."""
        ...


@runtime_checkable
class KeysDeliveries(Protocol):
    def delivery_key(
        self, identity: WebhookIdentity, raw_body: bytes, event: WebhookEvent | None = None
    ) -> str:
        """The key that makes two deliveries the same event, for platforms whose delivery ids
        do not (replaces ``WebhookIdentity.delivery_id``)."""
        ...


@dataclass
class WebhookSync:
    """What making sure a store's webhooks exist and deliver found and did (topics)."""

    created: list[str] = field(default_factory=list)
    reactivated: list[str] = field(default_factory=list)
    resecreted: list[str] = field(default_factory=list)
    healthy: list[str] = field(default_factory=list)
    # Paused by the merchant: left as they are.
    paused: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        parts = [
            f"{len(self.healthy)} active",
            f"{len(self.created)} created",
            f"{len(self.reactivated)} re-activated",
        ]
        if self.resecreted:
            parts.append(f"{len(self.resecreted)} given the current secret")
        if self.paused:
            parts.append(f"{len(self.paused)} paused by the merchant (left paused)")
        return "webhooks: " + ", ".join(parts)


@runtime_checkable
class RegistersWebhooks(Protocol):
    """Platforms that do not retry failed deliveries for ever (WooCommerce disables a webhook
    after a few) have their webhooks checked and their orders polled by ``cartback reconcile``."""

    def ensure_webhooks(
        self, store: StoreAccess, delivery_url: str, *, set_secret: bool = False
    ) -> WebhookSync:
        """Create missing webhooks, re-activate disabled ones (``set_secret``: re-send ours)."""
        ...

    def changed_orders(self, store: StoreAccess, since: datetime) -> Iterator[tuple[str, bytes]]:
        """Each order modified since then: the topic and body of the webhook that says so."""
        ...


C = TypeVar("C")


class ConnectorRegistry:
    """Maps a store's platform to its connector (built once per process by the app)."""

    def __init__(self, connectors: Sequence[Connector] = ()) -> None:
        self._by_platform: dict[str, Connector] = {}
        # (platform, capability) -> has it: isinstance against a runtime-checkable Protocol
        # inspects every member (~40 µs on Python 3.11), and ingest asks on every request.
        self._capabilities: dict[tuple[str, type], bool] = {}
        for connector in connectors:
            self.register(connector)

    def register(self, connector: Connector) -> None:
        self._by_platform[connector.platform] = connector
        self._capabilities.clear()

    def get(self, platform: str) -> Connector | None:
        return self._by_platform.get(platform)

    def capable(self, platform: str | None, capability: type[C]) -> C | None:
        """The platform's connector if it has this optional capability (e.g. ReconcilesOrders)."""
        connector: object = self._by_platform.get(platform) if platform else None
        if connector is None or platform is None:
            return None
        key = (platform, capability)
        if key not in self._capabilities:
            self._capabilities[key] = isinstance(connector, capability)
        return connector if self._capabilities[key] else None  # type: ignore[return-value]

    def __getitem__(self, platform: str) -> Connector:
        connector = self._by_platform.get(platform)
        if connector is None:
            raise KeyError(f"no connector for platform {platform!r}")
        return connector

    def platforms(self) -> list[str]:
        return sorted(self._by_platform)
