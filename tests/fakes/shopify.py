"""A fake of the parts of Shopify that cartback talks to, served on 127.0.0.1 for tests.

It is strict on purpose: requests get the answer the real Admin API gives (as documented for
API version 2026-10), so a connector that passes against it has its shapes right. Shops are
addressed by their full domain under ``{origin}/shops/{shop}/...``; the connector's routing
transport maps ``https://{shop}/...`` there.

What it serves: the OAuth token endpoint (token exchange of App Bridge ID tokens, refresh of
expiring offline tokens), the six named Admin GraphQL operations in
``connectors/shopify/operations.py``, the storefront's checkout-recovery and cart-permalink pages
(reporting whether a ``discount`` code would apply), and signed webhooks to post to the app.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from types import TracebackType
from typing import Any, ClassVar, Self
from urllib.parse import parse_qsl, urlencode, urlsplit

import jwt
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

DEFAULT_CLIENT_ID = "test-client-id"
# pyjwt warns (an error under filterwarnings=error) for HS256 keys under 32 bytes (RFC 7518
# §3.2); real client secrets are "shpss_" + 32 hex characters, so tests use a long one too.
DEFAULT_CLIENT_SECRET = "test-client-secret-0123456789abcdef"
MIN_HMAC_KEY_BYTES = 32
DEFAULT_API_VERSION = "2026-10"
# customerWhatsAppMarketingConsentUpdate first appears in the 2026-07 Admin API.
WHATSAPP_CONSENT_SINCE = "2026-07"
DEFAULT_SCOPE = "read_orders,read_products,write_discounts,read_customers,write_customers"

TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
ID_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:id_token"
OFFLINE_TOKEN_TYPE = "urn:shopify:params:oauth:token-type:offline-access-token"
ONLINE_TOKEN_TYPE = "urn:shopify:params:oauth:token-type:online-access-token"
ACCESS_TOKEN_TTL = 3600  # seconds: expiring offline tokens last 60 minutes (changelog, 2025-12-10)
REFRESH_TOKEN_TTL = 7_776_000  # seconds (90 days), Shopify's refresh_token_expires_in
ONLINE_TOKEN_TTL = 86_399  # seconds: online tokens last until the user's session ends (~1 day)
JWT_LEEWAY = 10  # seconds of clock skew allowed on ID tokens, as shopifyapp allows

INVALID_TOKEN = "[API] Invalid API key or access token (unrecognized login or wrong password)"
MAX_NODE_IDS = 250  # nodes(ids:) limit
BUCKET_SIZE = 2000.0  # cost points; throttleStatus.maximumAvailable
RESTORE_RATE = 100.0  # cost points per second; throttleStatus.restoreRate
THROTTLED_DOCS = "https://shopify.dev/api/usage/rate-limits"

SHOP_DOMAIN = re.compile(r"^[a-z0-9][a-z0-9-]*\.myshopify\.com$")
OPERATION_HEAD = re.compile(r"^\s*(query|mutation)\s+(\w+)\s*(?:\(([^)]*)\))?")
VARIABLE_DECLARATION = re.compile(r"\$(\w+)\s*:\s*([\w\[\]!]+)")
GLOBAL_ID = re.compile(r"^gid://shopify/(\w+)/(\d+)$")
CART_ITEMS = re.compile(r"^\d+:[1-9]\d*(,\d+:[1-9]\d*)*$")


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _require_hmac_key(secret: str) -> None:
    if len(secret.encode()) < MIN_HMAC_KEY_BYTES:
        raise ValueError(f"HS256 secrets must be at least {MIN_HMAC_KEY_BYTES} bytes (pyjwt warns otherwise)")


def _shopify_decimal(value: Decimal) -> str:
    """Shopify serialises Decimal without trailing zeros but with one decimal: "2098.0", "10.5"."""
    text = format(value.normalize(), "f")
    return text if "." in text else f"{text}.0"


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: Any  # parsed JSON, a form dict, or None
    operation: str | None  # GraphQL operation name, or the OAuth grant_type

    @property
    def variables(self) -> dict[str, Any]:
        variables = self.body.get("variables") if isinstance(self.body, dict) else None
        return variables if isinstance(variables, dict) else {}


@dataclass(frozen=True)
class FakeShop:
    domain: str
    name: str
    currency: str
    timezone: str
    country: str


@dataclass
class FakeDiscount:
    id: str
    code: str
    input: dict[str, Any]
    starts_at: datetime
    ends_at: datetime | None
    usage_limit: int | None
    used_count: int = 0
    deleted: bool = False


@dataclass(frozen=True)
class FakeVariant:
    id: int
    image_url: str | None
    product_image_url: str | None


@dataclass
class FakeOrder:
    id: int
    total: Decimal
    currency: str
    cancelled_at: str | None
    financial_status: str
    refunded: Decimal


@dataclass(frozen=True)
class FakeCustomer:
    id: int
    phone: str | None


@dataclass
class _AccessToken:
    shop: str
    scope: str
    expires_at: float | None  # time.time(); None for non-expiring offline tokens


@dataclass
class _RefreshToken:
    shop: str
    expires_at: float
    spent: bool = False


# --- GraphQL variable coercion -------------------------------------------------------------
# Input types as the 2026-10 schema declares them, limited to the fields cartback may send: a
# field missing here is refused like an unknown one, and the message says the fake lacks it.
INPUT_TYPES: dict[str, dict[str, str]] = {
    "DiscountCodeBasicInput": {
        "appliesOncePerCustomer": "Boolean",
        "code": "String",
        "combinesWith": "DiscountCombinesWithInput",
        "context": "DiscountContextInput",
        "customerGets": "DiscountCustomerGetsInput",
        "customerSelection": "DiscountCustomerSelectionInput",  # deprecated for context
        "endsAt": "DateTime",
        "minimumRequirement": "DiscountMinimumRequirementInput",
        "recurringCycleLimit": "Int",
        "startsAt": "DateTime",
        "tags": "[String!]",
        "title": "String",
        "usageLimit": "Int",
    },
    "DiscountCombinesWithInput": {
        "orderDiscounts": "Boolean",
        "productDiscounts": "Boolean",
        "shippingDiscounts": "Boolean",
    },
    "DiscountContextInput": {"all": "DiscountBuyerSelection"},
    "DiscountCustomerSelectionInput": {"all": "Boolean"},
    "DiscountCustomerGetsInput": {
        "value": "DiscountCustomerGetsValueInput",
        "items": "DiscountItemsInput",
        "appliesOnOneTimePurchase": "Boolean",
        "appliesOnSubscription": "Boolean",
    },
    "DiscountCustomerGetsValueInput": {"discountAmount": "DiscountAmountInput", "percentage": "Float"},
    "DiscountAmountInput": {"amount": "Decimal", "appliesOnEachItem": "Boolean"},
    "DiscountItemsInput": {"all": "Boolean"},
    "DiscountMinimumRequirementInput": {
        "subtotal": "DiscountMinimumSubtotalInput",
        "quantity": "DiscountMinimumQuantityInput",
    },
    "DiscountMinimumSubtotalInput": {"greaterThanOrEqualToSubtotal": "Decimal"},
    "DiscountMinimumQuantityInput": {"greaterThanOrEqualToQuantity": "UnsignedInt64"},
    "CustomerWhatsAppMarketingConsentUpdateInput": {
        "customerId": "ID!",
        "whatsAppMarketingConsent": "CustomerMarketingConsentInput!",
    },
    "CustomerMarketingConsentInput": {
        "state": "CustomerMarketingConsentState!",
        "optInLevel": "CustomerMarketingOptInLevel",
        "updatedAt": "DateTime",
        "sourceLocationId": "ID",
    },
}
ENUMS: dict[str, frozenset[str]] = {
    "DiscountBuyerSelection": frozenset({"ALL"}),
    "CustomerMarketingConsentState": frozenset(
        {"INVALID", "NOT_SUBSCRIBED", "PENDING", "REDACTED", "SUBSCRIBED", "UNSUBSCRIBED"}
    ),
    "CustomerMarketingOptInLevel": frozenset({"CONFIRMED_OPT_IN", "SINGLE_OPT_IN", "UNKNOWN"}),
}
# Of the consent states, the ones a merchant or app may set.
SETTABLE_CONSENT_STATES = frozenset({"PENDING", "SUBSCRIBED", "UNSUBSCRIBED"})


def _parse_datetime(value: str) -> datetime:
    if "T" not in value:
        raise ValueError("DateTime needs a time")
    moment = datetime.fromisoformat(value)
    # Shopify reads an offset-less DateTime as UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _scalar(kind: str, value: Any) -> Any:
    """The coerced value, or ValueError. DateTime and Decimal stay the strings that were sent."""
    ok = {
        "String": isinstance(value, str),
        "Boolean": isinstance(value, bool),
        "Int": isinstance(value, int) and not isinstance(value, bool) and -(2**31) <= value < 2**31,
        "Float": isinstance(value, int | float) and not isinstance(value, bool),
        "ID": isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)),
        "UnsignedInt64": (isinstance(value, str) and value.isdigit())
        or (isinstance(value, int) and not isinstance(value, bool) and value >= 0),
        # Decimal is a string on Shopify's wire; the fake refuses JSON numbers to keep money exact.
        "Decimal": isinstance(value, str),
        "DateTime": isinstance(value, str),
    }[kind]
    if not ok:
        raise ValueError(kind)
    if kind == "DateTime":
        _parse_datetime(value)
    elif kind == "Decimal" and not Decimal(value).is_finite():
        raise ValueError(kind)
    return float(value) if kind == "Float" else str(value) if kind == "ID" else value


class GraphQLErrors(Exception):
    """Top-level GraphQL errors: the request is answered with these and no data."""

    def __init__(self, *errors: dict[str, Any]) -> None:
        super().__init__(errors[0]["message"])
        self.errors = list(errors)


def _invalid_variable(variable: tuple[str, str], path: tuple[Any, ...], explanation: str) -> GraphQLErrors:
    name, declared = variable
    where = f" for {'.'.join(str(part) for part in path)}" if path else ""
    return GraphQLErrors(
        {
            "message": f"Variable ${name} of type {declared} was provided invalid value{where} ({explanation})",
            "extensions": {
                "code": "INVALID_VARIABLE",
                "problems": [{"path": list(path), "explanation": explanation}],
            },
        }
    )


def coerce(value: Any, kind: str, variable: tuple[str, str], path: tuple[Any, ...] = ()) -> Any:
    """GraphQL input coercion of a variable's JSON value against its declared type."""
    if kind.endswith("!"):
        if value is None:
            raise _invalid_variable(variable, path, "Expected value to not be null")
        return coerce(value, kind[:-1], variable, path)
    if value is None:
        return None
    if kind.startswith("["):
        # GraphQL wraps a lone value into a one-item list.
        items = value if isinstance(value, list) else [value]
        return [coerce(item, kind[1:-1], variable, (*path, i)) for i, item in enumerate(items)]
    if kind in INPUT_TYPES:
        fields = INPUT_TYPES[kind]
        if not isinstance(value, dict):
            raise _invalid_variable(variable, path, f"Expected value to be an object of {kind}")
        for key in value:
            if key not in fields:
                raise _invalid_variable(
                    variable, (*path, key), f"Field is not defined on {kind} (or not modelled by the fake)"
                )
        return {
            key: coerce(value.get(key), field_kind, variable, (*path, key))
            for key, field_kind in fields.items()
            if key in value or field_kind.endswith("!")
        }
    if kind in ENUMS:
        if not isinstance(value, str) or value not in ENUMS[kind]:
            allowed = ", ".join(sorted(ENUMS[kind]))
            raise _invalid_variable(variable, path, f"Expected {json.dumps(value)} to be one of: {allowed}")
        return value
    try:
        return _scalar(kind, value)
    except (ValueError, InvalidOperation):
        raise _invalid_variable(
            variable, path, f"Could not coerce value {json.dumps(value)} to {kind}"
        ) from None


def parse_gid(value: str) -> tuple[str, int]:
    match = GLOBAL_ID.match(value)
    if not match:
        raise GraphQLErrors(
            {
                "message": f"Invalid global id '{value}'",
                "extensions": {"code": "argumentLiteralsIncompatible"},
            }
        )
    return match.group(1), int(match.group(2))


def discount_user_errors(given: dict[str, Any], taken: Iterable[str]) -> list[dict[str, Any]]:
    """What discountCodeBasicCreate refuses after the input's shape is right (userErrors)."""
    errors: list[dict[str, Any]] = []

    def error(path: list[str], message: str, code: str = "INVALID") -> None:
        errors.append({"field": ["basicCodeDiscount", *path], "code": code, "message": message})

    # Required when creating (the schema leaves them nullable because updates share the type).
    for key, label in (("title", "Title"), ("code", "Code"), ("startsAt", "Starts at")):
        if not given.get(key):
            error([key], f"{label} can't be blank")
    code = given.get("code") or ""
    if len(code) > 255:
        error(["code"], "Code is too long (maximum is 255 characters)")
    if "\n" in code or "\r" in code:
        error(["code"], "Code cannot contain newline characters.")
    if code and code.casefold() in {other.casefold() for other in taken}:
        error(["code"], "Code must be unique. Please try a different code.", "TAKEN")
    starts_at, ends_at = given.get("startsAt"), given.get("endsAt")
    if starts_at and ends_at and _parse_datetime(ends_at) <= _parse_datetime(starts_at):
        error(["endsAt"], "Ends at needs to be after starts_at")
    if given.get("usageLimit") is not None and given["usageLimit"] < 1:
        error(["usageLimit"], "Usage limit must be greater than 0")
    context, selection = given.get("context"), given.get("customerSelection")
    if context is not None and selection is not None:
        error(["context"], "Only one of context or customerSelection can be provided")
    elif context is None and selection is None:
        error(["context"], "Context can't be blank")
    elif context is not None and context.get("all") != "ALL":
        error(["context"], "Context must select buyers (the fake models only all: ALL)")
    elif selection is not None and selection.get("all") is not True:
        error(["customerSelection", "all"], "Customer selection must select customers (fake: all only)")
    gets = given.get("customerGets")
    if not gets:
        error(["customerGets"], "Customer gets can't be blank")
        return errors
    value = gets.get("value") or {}
    if len([kind for kind in ("discountAmount", "percentage") if value.get(kind) is not None]) != 1:
        error(["customerGets", "value"], "Value must have exactly one of discountAmount or percentage")
    elif value.get("percentage") is not None and not 0 < value["percentage"] <= 1:
        error(["customerGets", "value", "percentage"], "Value must be between 0.0 and 1.0")
    elif value.get("discountAmount") is not None:
        amount = value["discountAmount"].get("amount")
        if amount is None or Decimal(amount) <= 0:
            error(["customerGets", "value", "discountAmount", "amount"], "Value must be greater than 0")
    if (gets.get("items") or {}).get("all") is not True:
        error(["customerGets", "items"], "Items must be specified (the fake models only all: true)")
    minimum = given.get("minimumRequirement") or {}
    if minimum.get("subtotal") is not None and minimum.get("quantity") is not None:
        error(["minimumRequirement"], "Only one of subtotal or quantity can be provided")
    subtotal = (minimum.get("subtotal") or {}).get("greaterThanOrEqualToSubtotal")
    if subtotal is not None and Decimal(subtotal) <= 0:
        error(["minimumRequirement", "subtotal", "greaterThanOrEqualToSubtotal"], "Must be greater than 0")
    return errors


@dataclass(frozen=True)
class Operation:
    kind: str  # "query" or "mutation"
    root_field: str
    variables: dict[str, str]  # what the document must declare: name -> type
    scope: str | None  # access scope the token needs
    cost: int  # requested cost points, before per-id costs
    null_field: str | None = None  # the payload field fail_next() nulls (mutations only)


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """No access log per request; errors are still logged."""


class FakeShopify:
    OPERATIONS: ClassVar[dict[str, Operation]] = {
        "CartbackShop": Operation("query", "shop", {}, None, 1),
        "CartbackVariantImages": Operation("query", "nodes", {"ids": "[ID!]!"}, "read_products", 2),
        "CartbackDiscountCreate": Operation(
            "mutation",
            "discountCodeBasicCreate",
            {"basicCodeDiscount": "DiscountCodeBasicInput!"},
            "write_discounts",
            10,
            "codeDiscountNode",
        ),
        "CartbackDiscountDelete": Operation(
            "mutation", "discountCodeDelete", {"id": "ID!"}, "write_discounts", 10, "deletedCodeDiscountId"
        ),
        "CartbackWhatsAppOptOut": Operation(
            "mutation",
            "customerWhatsAppMarketingConsentUpdate",
            {"input": "CustomerWhatsAppMarketingConsentUpdateInput!"},
            "write_customers",
            10,
            "customerPhoneNumber",
        ),
        "CartbackOrderStatuses": Operation("query", "nodes", {"ids": "[ID!]!"}, "read_orders", 2),
    }

    def __init__(
        self,
        client_id: str = DEFAULT_CLIENT_ID,
        client_secret: str = DEFAULT_CLIENT_SECRET,
        api_version: str = DEFAULT_API_VERSION,
        *,
        scope: str = DEFAULT_SCOPE,
    ) -> None:
        _require_hmac_key(client_secret)
        self.client_id = client_id
        self.client_secret = client_secret
        self.api_version = api_version
        self.scope = scope
        self.port = 0
        self.origin = ""
        self.requests: list[RecordedRequest] = []
        self.shops: dict[str, FakeShop] = {}
        self.discounts: dict[str, dict[str, FakeDiscount]] = {}
        self.whatsapp_consent: dict[tuple[str, str], str] = {}
        self.variants: dict[int, FakeVariant] = {}
        self.customers: dict[int, FakeCustomer] = {}
        self.orders: dict[int, FakeOrder] = {}
        self.checkouts: dict[tuple[str, str], str] = {}  # (shop, token) -> key
        self._access: dict[str, _AccessToken] = {}
        self._refresh: dict[str, _RefreshToken] = {}
        self._throttle_next = 0
        self._fail_next: dict[str, list[list[dict[str, Any]]]] = {}
        self._next_id = 1000
        self._lock = threading.RLock()
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._urls = Map(
            [
                Rule("/shops/<shop>/admin/oauth/access_token", endpoint="token", methods=["POST"]),
                Rule("/shops/<shop>/admin/api/<version>/graphql.json", endpoint="graphql", methods=["POST"]),
                Rule(
                    "/shops/<shop>/<int:shop_id>/checkouts/<token>/recover",
                    endpoint="recover",
                    methods=["GET"],
                ),
                Rule("/shops/<shop>/cart/<items>", endpoint="cart", methods=["GET"]),
            ]
        )

    # --- serving ---------------------------------------------------------------------------

    def start(self) -> Self:
        self._server = make_server("127.0.0.1", 0, self._wsgi, threaded=True, request_handler=_QuietHandler)
        self.port = self._server.port
        self.origin = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-shopify",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    def admin_url_template(self) -> str:
        return f"{self.origin}/shops/{{shop}}/admin/api/{{version}}"

    def storefront_url(self, shop: str) -> str:
        return f"{self.origin}/shops/{shop}"

    def calls(self, operation: str) -> list[RecordedRequest]:
        """Recorded requests for one GraphQL operation (or OAuth grant_type)."""
        with self._lock:
            return [request for request in self.requests if request.operation == operation]

    # --- seeding and steering --------------------------------------------------------------

    def add_shop(
        self,
        shop: str,
        *,
        name: str = "Bazaar",
        currency: str = "INR",
        timezone: str = "Asia/Kolkata",
        country: str = "IN",
    ) -> FakeShop:
        if not SHOP_DOMAIN.match(shop):
            raise ValueError(f"{shop!r} is not a *.myshopify.com domain")
        with self._lock:
            self.shops[shop] = FakeShop(shop, name, currency, timezone, country)
            self.discounts.setdefault(shop, {})
            return self.shops[shop]

    def add_variant(
        self, variant_id: int, *, image_url: str | None = None, product_image_url: str | None = None
    ) -> None:
        with self._lock:
            self.variants[variant_id] = FakeVariant(variant_id, image_url, product_image_url)

    def add_customer(self, customer_id: int, phone: str | None = None) -> None:
        with self._lock:
            self.customers[customer_id] = FakeCustomer(customer_id, phone)

    def add_order(
        self,
        order_id: int,
        *,
        total: str = "2098.00",
        currency: str = "INR",
        cancelled_at: str | None = None,
        financial_status: str = "PAID",
        refunded: str = "0.00",
    ) -> None:
        with self._lock:
            self.orders[order_id] = FakeOrder(
                order_id, Decimal(total), currency, cancelled_at, financial_status, Decimal(refunded)
            )

    def refund_order(self, order_id: int, amount: str) -> None:
        with self._lock:
            order = self.orders[order_id]
            order.refunded += Decimal(amount)
            order.financial_status = "REFUNDED" if order.refunded >= order.total else "PARTIALLY_REFUNDED"

    def cancel_order(self, order_id: int) -> None:
        with self._lock:
            self.orders[order_id].cancelled_at = _iso(_now().replace(microsecond=0))

    def redeem_discount(self, shop: str, code: str) -> None:
        """A shopper completed an order with the code (counts towards usageLimit)."""
        with self._lock:
            discount = self._find_discount(shop, code)
            if discount is None:
                raise KeyError(code)
            discount.used_count += 1

    def register_checkout(self, shop: str, token: str, key: str) -> None:
        with self._lock:
            self.checkouts[(shop, token)] = key

    def checkout_url(
        self, shop: str, token: str, *, shop_numeric_id: int = 548380009, discount: str | None = None
    ) -> str:
        """The abandoned-checkout recovery URL Shopify puts in checkout webhooks."""
        with self._lock:
            key = self.checkouts.setdefault((shop, token), secrets.token_hex(16))
        query = {"key": key} | ({"discount": discount} if discount else {})
        return f"{self.storefront_url(shop)}/{shop_numeric_id}/checkouts/{token}/recover?{urlencode(query)}"

    def throttle_next(self, n: int = 1) -> None:
        with self._lock:
            self._throttle_next += n

    def fail_next(self, operation_name: str, user_errors: list[dict[str, Any]]) -> None:
        """The next call of that mutation (operation or root field name) answers these userErrors."""
        names = {name for name, op in self.OPERATIONS.items() if op.kind == "mutation"}
        names |= {self.OPERATIONS[name].root_field for name in names}
        if operation_name not in names:
            raise ValueError(f"{operation_name} is not a mutation the fake serves")
        with self._lock:
            self._fail_next.setdefault(operation_name, []).append(user_errors)

    # --- tokens ----------------------------------------------------------------------------

    def session_token(
        self,
        shop: str,
        *,
        user_id: str = "42",
        expires_in: int = 60,
        secret: str | None = None,
        aud: str | None = None,
    ) -> str:
        """An App Bridge ID token as the admin hands it to the app's frontend."""
        key = self.client_secret if secret is None else secret
        _require_hmac_key(key)
        now = int(time.time())
        claims = {
            "iss": f"https://{shop}/admin",
            "dest": f"https://{shop}",
            "aud": self.client_id if aud is None else aud,
            "sub": user_id,
            "exp": now + expires_in,
            "nbf": now,
            "iat": now,
            "jti": str(uuid.uuid4()),
            "sid": str(uuid.uuid4()),
        }
        return jwt.encode(claims, key, algorithm="HS256")

    def issue_token(self, shop: str, *, expires_in: int = ACCESS_TOKEN_TTL) -> tuple[str, str]:
        """Seed a store with an expiring offline token pair, as if it had installed the app."""
        with self._lock:
            return self._issue(shop, expires_in=expires_in, refresh=True)

    def expire_access_tokens(self, shop: str) -> None:
        with self._lock:
            for token in self._access.values():
                if token.shop == shop:
                    token.expires_at = time.time() - 1

    def revoke_all(self, shop: str) -> None:
        """The merchant uninstalled the app: every token of the shop stops working."""
        with self._lock:
            self._access = {value: t for value, t in self._access.items() if t.shop != shop}
            self._refresh = {value: t for value, t in self._refresh.items() if t.shop != shop}

    def _issue(
        self, shop: str, *, expires_in: int | None, refresh: bool, prefix: str = "shpat_"
    ) -> tuple[str, str]:
        access = prefix + secrets.token_hex(16)
        expires_at = None if expires_in is None else time.time() + expires_in
        self._access[access] = _AccessToken(shop, self.scope, expires_at)
        refresh_token = ""
        if refresh:
            refresh_token = "shprt_" + secrets.token_hex(16)
            self._refresh[refresh_token] = _RefreshToken(shop, time.time() + REFRESH_TOKEN_TTL)
        return access, refresh_token

    # --- webhooks --------------------------------------------------------------------------

    def signed_webhook(
        self,
        shop: str,
        topic: str,
        payload: dict[str, Any],
        *,
        webhook_id: str | None = None,
        event_id: str | None = None,
        secret: str | None = None,
        api_version: str | None = None,
    ) -> tuple[bytes, dict[str, str]]:
        """The exact body and headers Shopify would POST for this topic."""
        body = json.dumps(payload, ensure_ascii=False).encode()
        key = (self.client_secret if secret is None else secret).encode()
        signature = base64.b64encode(hmac.new(key, body, hashlib.sha256).digest()).decode()
        headers = {
            "Content-Type": "application/json",
            "X-Shopify-Topic": topic,
            "X-Shopify-Hmac-Sha256": signature,
            "X-Shopify-Shop-Domain": shop,
            "X-Shopify-Webhook-Id": webhook_id or str(uuid.uuid4()),
            "X-Shopify-Event-Id": event_id or str(uuid.uuid4()),
            "X-Shopify-Triggered-At": _iso(_now()),
            "X-Shopify-API-Version": api_version or self.api_version,
        }
        return body, headers

    # --- HTTP ------------------------------------------------------------------------------

    def _wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = Request(environ)
        with self._lock:
            response = self._dispatch(request)
        return response(environ, start_response)

    def _dispatch(self, request: Request) -> Response:
        body = _read_body(request)
        operation = None
        if isinstance(body, dict) and request.path.endswith("/graphql.json"):
            head = OPERATION_HEAD.match(body["query"]) if isinstance(body.get("query"), str) else None
            operation = head.group(2) if head else None
        elif isinstance(body, dict) and request.path.endswith("/access_token"):
            operation = body.get("grant_type")
        self.requests.append(
            RecordedRequest(request.method, request.path, dict(request.headers), body, operation)
        )
        try:
            endpoint, matched = self._urls.bind_to_environ(request.environ).match()
        except HTTPException as refused:
            return _json({"errors": refused.name}, refused.code or 404)
        args = dict(matched)
        shop = self.shops.get(args.pop("shop"))
        if shop is None:
            return _json({"errors": "Not Found"}, 404)
        handler: Callable[..., Response] = getattr(self, f"_serve_{endpoint}")
        return handler(request, shop, body, **args)

    def _serve_token(self, request: Request, shop: FakeShop, body: Any) -> Response:
        if not isinstance(body, dict):
            return _oauth_error("invalid_request", "send a JSON or form-encoded body", 400)
        fields = {key: value for key, value in body.items() if value is not None}
        client_ok = fields.get("client_id") == self.client_id and hmac.compare_digest(
            str(fields.get("client_secret", "")).encode(), self.client_secret.encode()
        )
        if not client_ok:
            return _oauth_error("invalid_client", "client_id or client_secret is wrong", 401)
        grant = fields.get("grant_type")
        if grant == TOKEN_EXCHANGE_GRANT:
            return self._token_exchange(shop, fields)
        if grant == "refresh_token":
            return self._token_refresh(shop, fields)
        return _oauth_error("unsupported_grant_type", f"grant_type {grant!r} is not supported", 400)

    def _token_exchange(self, shop: FakeShop, fields: dict[str, Any]) -> Response:
        if fields.get("subject_token_type") != ID_TOKEN_TYPE:
            return _oauth_error("invalid_request", f"subject_token_type must be {ID_TOKEN_TYPE}", 400)
        requested = fields.get("requested_token_type")
        if requested not in (OFFLINE_TOKEN_TYPE, ONLINE_TOKEN_TYPE):
            return _oauth_error(
                "invalid_request", "requested_token_type must be an offline or online token", 400
            )
        expiring = fields.get("expiring", 0)
        if expiring not in (0, 1, "0", "1"):
            return _oauth_error("invalid_request", "expiring must be 0 or 1", 400)
        subject = fields.get("subject_token")
        if not isinstance(subject, str) or not subject:
            return _oauth_error("invalid_request", "subject_token is required", 400)
        try:
            claims = jwt.decode(
                subject,
                self.client_secret,
                algorithms=["HS256"],
                audience=self.client_id,
                leeway=JWT_LEEWAY,
                options={"require": ["exp", "nbf", "iat", "aud", "iss", "dest", "sub"]},
            )
        except jwt.PyJWTError as refused:
            return _oauth_error("invalid_subject_token", f"ID token is invalid: {refused}", 400)
        if (
            urlsplit(str(claims["dest"])).hostname != shop.domain
            or claims["iss"] != f"https://{shop.domain}/admin"
        ):
            return _oauth_error("invalid_subject_token", "ID token was issued for another shop", 400)
        if requested == ONLINE_TOKEN_TYPE:
            # Online tokens always expire with the user's session and never carry a refresh token.
            access, _ = self._issue(shop.domain, expires_in=ONLINE_TOKEN_TTL, refresh=False, prefix="shpua_")
            return _json(
                {
                    "access_token": access,
                    "scope": self.scope,
                    "expires_in": ONLINE_TOKEN_TTL,
                    "associated_user_scope": self.scope,
                    "associated_user": {"id": _user_id(claims["sub"]), "account_owner": True},
                }
            )
        if expiring in (1, "1"):
            return self._token_pair(shop.domain)
        access, _ = self._issue(shop.domain, expires_in=None, refresh=False)
        return _json({"access_token": access, "scope": self.scope})

    def _token_refresh(self, shop: FakeShop, fields: dict[str, Any]) -> Response:
        token = self._refresh.get(str(fields.get("refresh_token", "")))
        if token is None or token.shop != shop.domain or token.spent or token.expires_at <= time.time():
            return _oauth_error("invalid_grant", "refresh_token is invalid, expired, used or revoked", 400)
        token.spent = True
        return self._token_pair(shop.domain)

    def _token_pair(self, shop: str) -> Response:
        access, refresh = self._issue(shop, expires_in=ACCESS_TOKEN_TTL, refresh=True)
        return _json(
            {
                "access_token": access,
                "scope": self.scope,
                "expires_in": ACCESS_TOKEN_TTL,
                "refresh_token": refresh,
                "refresh_token_expires_in": REFRESH_TOKEN_TTL,
            }
        )

    def _serve_graphql(self, request: Request, shop: FakeShop, body: Any, version: str) -> Response:
        if version != self.api_version:
            return _json({"errors": "Not Found"}, 404)
        token = self._access.get(request.headers.get("X-Shopify-Access-Token", ""))
        if token is None or token.shop != shop.domain or (token.expires_at or float("inf")) <= time.time():
            return _json({"errors": INVALID_TOKEN}, 401)
        if not isinstance(body, dict) or not isinstance(body.get("query"), str):
            return _json({"errors": {"query": "Required parameter missing or invalid"}}, 400)
        raw_variables = body.get("variables") or {}
        if not isinstance(raw_variables, dict):
            return _json({"errors": {"variables": "must be a JSON object"}}, 400)
        head = OPERATION_HEAD.match(body["query"])
        if head is None:
            return self._graphql_answer(1, errors=[{"message": "cartback fake: operations must be named"}])
        name = head.group(2)
        operation = self.OPERATIONS.get(name)
        if operation is None:
            return self._graphql_answer(1, errors=[{"message": f"unknown operation {name}"}])
        ids = raw_variables.get("ids")
        cost = operation.cost + (len(ids) if isinstance(ids, list) else 0)
        if self._throttle_next:
            self._throttle_next -= 1
            return self._throttled(cost)
        try:
            self._check_document(name, operation, head.group(1), head.group(3) or "", body["query"], token)
            variables = {
                var: coerce(raw_variables.get(var), kind, (var, kind))
                for var, kind in operation.variables.items()
            }
            data = self._run(name, operation, shop, variables)
        except GraphQLErrors as refused:
            return self._graphql_answer(cost, errors=refused.errors)
        return self._graphql_answer(cost, data=data)

    def _check_document(
        self, name: str, operation: Operation, kind: str, declared: str, query: str, token: _AccessToken
    ) -> None:
        """The document declares what the operation needs and selects its root field."""
        if (
            operation.root_field == "customerWhatsAppMarketingConsentUpdate"
            and self.api_version < WHATSAPP_CONSENT_SINCE
        ):
            raise GraphQLErrors(
                {
                    "message": f"Field '{operation.root_field}' doesn't exist on type 'Mutation'",
                    "extensions": {
                        "code": "undefinedField",
                        "typeName": "Mutation",
                        "fieldName": operation.root_field,
                    },
                }
            )
        wanted = ", ".join(f"${var}: {kind}" for var, kind in operation.variables.items())
        if kind != operation.kind or dict(VARIABLE_DECLARATION.findall(declared)) != operation.variables:
            raise GraphQLErrors(
                {"message": f"cartback fake: {name} must be `{operation.kind} {name}({wanted})`"}
            )
        if not re.search(rf"\b{operation.root_field}\s*[({{]", query):
            raise GraphQLErrors({"message": f"cartback fake: {name} must select {operation.root_field}"})
        granted = set(token.scope.split(","))
        needed = operation.scope
        # A write scope implies its read scope.
        if needed and needed not in granted and needed.replace("read_", "write_") not in granted:
            raise GraphQLErrors(
                {
                    "message": f"Access denied for {operation.root_field} field. Required access: `{needed}` access scope.",
                    "extensions": {"code": "ACCESS_DENIED", "requiredAccess": f"`{needed}` access scope."},
                }
            )

    def _run(
        self, name: str, operation: Operation, shop: FakeShop, variables: dict[str, Any]
    ) -> dict[str, Any]:
        for key in (name, operation.root_field):
            queued = self._fail_next.get(key)
            if queued and operation.null_field:
                return {operation.root_field: {operation.null_field: None, "userErrors": queued.pop(0)}}
        if name == "CartbackShop":
            return {"shop": self._shop_node(shop)}
        if name == "CartbackVariantImages":
            return {"nodes": [self._variant_node(gid) for gid in self._node_ids(variables["ids"])]}
        if name == "CartbackOrderStatuses":
            return {"nodes": [self._order_node(gid) for gid in self._node_ids(variables["ids"])]}
        if name == "CartbackDiscountCreate":
            return {operation.root_field: self._create_discount(shop, variables["basicCodeDiscount"])}
        if name == "CartbackDiscountDelete":
            return {operation.root_field: self._delete_discount(shop, variables["id"])}
        return {operation.root_field: self._update_whatsapp_consent(shop, variables["input"])}

    @staticmethod
    def _cost_extension(requested: int, actual: int | None) -> dict[str, Any]:
        # A full bucket less this call: throttling is steered by throttle_next() only, so no
        # test is throttled by accident of timing.
        available = BUCKET_SIZE - (actual or 0) if actual is not None else 0
        return {
            "cost": {
                "requestedQueryCost": requested,
                "actualQueryCost": actual,
                "throttleStatus": {
                    "maximumAvailable": BUCKET_SIZE,
                    "currentlyAvailable": available,
                    "restoreRate": RESTORE_RATE,
                },
            }
        }

    def _graphql_answer(
        self, cost: int, *, data: Any = None, errors: list[dict[str, Any]] | None = None
    ) -> Response:
        answer: dict[str, Any] = {"errors": errors} if errors else {"data": data}
        answer["extensions"] = self._cost_extension(cost, cost)
        return _json(answer)

    def _throttled(self, cost: int) -> Response:
        # Shopify answers a throttled GraphQL call with HTTP 200, not 429.
        extensions = self._cost_extension(cost, None)
        error = {"message": "Throttled", "extensions": {"code": "THROTTLED", "documentation": THROTTLED_DOCS}}
        return _json({"errors": [error], "extensions": extensions})

    # --- operations ------------------------------------------------------------------------

    @staticmethod
    def _node_ids(ids: list[str]) -> list[str]:
        if len(ids) > MAX_NODE_IDS:
            raise GraphQLErrors({"message": f"ids: too many (at most {MAX_NODE_IDS}, got {len(ids)})"})
        for gid in ids:
            parse_gid(gid)
        return ids

    def _shop_node(self, shop: FakeShop) -> dict[str, Any]:
        return {
            "name": shop.name,
            "myshopifyDomain": shop.domain,
            "currencyCode": shop.currency,
            "ianaTimezone": shop.timezone,
            "primaryDomain": {"url": self.storefront_url(shop.domain)},
            "billingAddress": {"countryCodeV2": shop.country},
        }

    def _variant_node(self, gid: str) -> dict[str, Any] | None:
        kind, number = parse_gid(gid)
        if kind != "ProductVariant":
            return {}  # `... on ProductVariant` selects nothing from another type
        variant = self.variants.get(number)
        if variant is None:
            return None

        def media(url: str) -> dict[str, Any]:
            return {"preview": {"image": {"url": url}}}

        return {
            "id": gid,
            "media": {"nodes": [media(variant.image_url)] if variant.image_url else []},
            "product": {
                "featuredMedia": media(variant.product_image_url) if variant.product_image_url else None
            },
        }

    def _order_node(self, gid: str) -> dict[str, Any] | None:
        kind, number = parse_gid(gid)
        if kind != "Order":
            return {}
        order = self.orders.get(number)
        if order is None:
            return None

        def money(amount: Decimal) -> dict[str, Any]:
            return {"presentmentMoney": {"amount": _shopify_decimal(amount), "currencyCode": order.currency}}

        # currentTotalPriceSet reflects edits, returns and refunds (Admin API reference).
        return {
            "id": gid,
            "cancelledAt": order.cancelled_at,
            "displayFinancialStatus": order.financial_status,
            "currentTotalPriceSet": money(max(Decimal(0), order.total - order.refunded)),
            "totalRefundedSet": money(order.refunded),
        }

    def _create_discount(self, shop: FakeShop, given: dict[str, Any]) -> dict[str, Any]:
        live = [code for code, discount in self.discounts[shop.domain].items() if not discount.deleted]
        errors = discount_user_errors(given, live)
        if errors:
            return {"codeDiscountNode": None, "userErrors": errors}
        self._next_id += 1
        discount = FakeDiscount(
            id=f"gid://shopify/DiscountCodeNode/{self._next_id}",
            code=given["code"],
            input=given,
            starts_at=_parse_datetime(given["startsAt"]),
            ends_at=_parse_datetime(given["endsAt"]) if given.get("endsAt") else None,
            usage_limit=given.get("usageLimit"),
        )
        self.discounts[shop.domain][discount.code] = discount
        return {"codeDiscountNode": {"id": discount.id}, "userErrors": []}

    def _delete_discount(self, shop: FakeShop, gid: str) -> dict[str, Any]:
        parse_gid(gid)
        for discount in self.discounts[shop.domain].values():
            if discount.id == gid and not discount.deleted:
                discount.deleted = True
                return {"deletedCodeDiscountId": gid, "userErrors": []}
        error = {"field": ["id"], "code": "INVALID", "message": "Discount does not exist"}
        return {"deletedCodeDiscountId": None, "userErrors": [error]}

    def _update_whatsapp_consent(self, shop: FakeShop, given: dict[str, Any]) -> dict[str, Any]:
        customer_gid = given["customerId"]
        kind, number = parse_gid(customer_gid)
        state = given["whatsAppMarketingConsent"]["state"]
        customer = self.customers.get(number) if kind == "Customer" else None
        errors = []
        if customer is None:
            errors.append(
                {"field": ["input", "customerId"], "code": "INVALID", "message": "Customer does not exist"}
            )
        elif customer.phone is None:
            # WhatsApp consent lives on the customer's phone number; without one there is nothing to update.
            message = "Customer does not have a phone number"
            errors.append({"field": ["input", "customerId"], "code": "INVALID", "message": message})
        if state not in SETTABLE_CONSENT_STATES:
            path = ["input", "whatsAppMarketingConsent", "state"]
            errors.append({"field": path, "code": "INVALID", "message": f"State {state} cannot be set"})
        if errors:
            return {"customerPhoneNumber": None, "userErrors": errors}
        self.whatsapp_consent[(shop.domain, customer_gid)] = state
        return {"customerPhoneNumber": {"whatsAppMarketingConsent": {"state": state}}, "userErrors": []}

    # --- storefront ------------------------------------------------------------------------

    def _find_discount(self, shop: str, code: str) -> FakeDiscount | None:
        # Shopify discount codes are case-insensitive.
        matches = [d for c, d in self.discounts.get(shop, {}).items() if c.casefold() == code.casefold()]
        matches.sort(key=lambda discount: discount.deleted)  # a live code wins over a deleted one
        return matches[0] if matches else None

    def _discount_outcome(self, shop: FakeShop, code: str | None) -> dict[str, Any] | None:
        if not code:
            return None
        discount = self._find_discount(shop.domain, code)
        now = _now()
        reason = None
        if discount is None:
            reason = "unknown_code"
        elif discount.deleted:
            reason = "deleted"
        elif now < discount.starts_at:
            reason = "not_started"
        elif discount.ends_at is not None and now >= discount.ends_at:
            reason = "expired"
        elif discount.usage_limit is not None and discount.used_count >= discount.usage_limit:
            reason = "usage_limit_reached"
        return {"code": code, "applied": reason is None, "reason": reason}

    def _serve_recover(
        self, request: Request, shop: FakeShop, body: Any, shop_id: int, token: str
    ) -> Response:
        key = self.checkouts.get((shop.domain, token))
        if key is None or not hmac.compare_digest(key.encode(), request.args.get("key", "").encode()):
            return _json({"errors": "Not Found"}, 404)
        discount = self._discount_outcome(shop, request.args.get("discount"))
        return _json({"page": "checkout", "token": token, "discount": discount})

    def _serve_cart(self, request: Request, shop: FakeShop, body: Any, items: str) -> Response:
        if not CART_ITEMS.match(items):
            return _json({"errors": "Not Found"}, 404)
        lines = [
            {"variant_id": int(v), "quantity": int(q)} for v, q in (p.split(":") for p in items.split(","))
        ]
        discount = self._discount_outcome(shop, request.args.get("discount"))
        return _json({"page": "cart", "token": None, "lines": lines, "discount": discount})


def _read_body(request: Request) -> Any:
    """JSON or form fields as sent; None when the body is neither (or malformed)."""
    raw = request.get_data(cache=True)
    if request.mimetype == "application/json":
        try:
            return json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return None
    if request.mimetype == "application/x-www-form-urlencoded":
        return dict(parse_qsl(raw.decode(errors="replace"), keep_blank_values=True))
    return None


def _user_id(subject: Any) -> Any:
    return int(subject) if str(subject).isdigit() else subject


def _json(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, mimetype="application/json")


def _oauth_error(error: str, description: str, status: int) -> Response:
    return _json({"error": error, "error_description": description}, status)
