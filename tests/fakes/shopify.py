"""A fake of the parts of Shopify that cartback talks to, served on 127.0.0.1 for tests.

It is strict on purpose: requests get the answer the real Admin API gives (as documented for
API version 2026-10), so a connector that passes against it has its shapes right. Shops are
addressed by their full domain under ``{origin}/shops/{shop}/...``; the connector's routing
transport maps ``https://{shop}/...`` there.

What it serves: the OAuth token endpoint (token exchange of App Bridge ID tokens, refresh of
expiring offline tokens), the six named Admin GraphQL operations in
``connectors/shopify/operations.py``, the storefront's checkout-recovery and cart-permalink pages
(reporting whether a ``discount`` code would apply), and signed webhooks to post to the app.

This module holds the server: seeding, routing, the storefront pages and webhooks. The endpoints
with rules of their own live beside it: ``shopify_oauth`` (tokens), ``shopify_admin_graphql``
(operations, cost, resolvers) and ``shopify_graphql_input`` (variable coercion, discount rules);
the records they share are in ``shopify_state``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import threading
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from decimal import Decimal
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlencode

from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from tests.fakes.shopify_admin_graphql import (
    DEFAULT_API_VERSION,
    OPERATION_HEAD,
    AdminGraphQL,
)
from tests.fakes.shopify_http import json_response, read_body
from tests.fakes.shopify_oauth import (
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    DEFAULT_SCOPE,
    ShopifyOAuth,
    require_hmac_key,
)
from tests.fakes.shopify_state import (
    AccessToken,
    FakeCustomer,
    FakeDiscount,
    FakeOrder,
    FakeShop,
    FakeVariant,
    RecordedRequest,
    RefreshToken,
)
from tests.support.http_server import ThreadedServer

SHOP_DOMAIN = re.compile(r"^[a-z0-9][a-z0-9-]*\.myshopify\.com$")
CART_ITEMS = re.compile(r"^\d+:[1-9]\d*(,\d+:[1-9]\d*)*$")


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


class FakeShopify(ShopifyOAuth, AdminGraphQL):
    """The server. Tokens come from ShopifyOAuth, GraphQL and its steering from AdminGraphQL."""

    def __init__(
        self,
        client_id: str = DEFAULT_CLIENT_ID,
        client_secret: str = DEFAULT_CLIENT_SECRET,
        api_version: str = DEFAULT_API_VERSION,
        *,
        scope: str = DEFAULT_SCOPE,
    ) -> None:
        require_hmac_key(client_secret)
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
        self._access: dict[str, AccessToken] = {}
        self._refresh: dict[str, RefreshToken] = {}
        self._throttle_next = 0
        self._fail_next: dict[str, list[list[dict[str, Any]]]] = {}
        self._next_id = 1000
        self._lock = threading.RLock()
        self._server: ThreadedServer | None = None
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
        self._server = ThreadedServer(self._wsgi, name="fake-shopify").start()
        self.port = self._server.port
        self.origin = self._server.origin
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

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

    # --- seeding ---------------------------------------------------------------------------

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
        cash_on_delivery: bool = False,
    ) -> None:
        """An order as Shopify holds it; cash on delivery is PENDING until the parcel is paid."""
        with self._lock:
            self.orders[order_id] = FakeOrder(
                order_id,
                Decimal(total),
                currency,
                cancelled_at,
                "PENDING" if cash_on_delivery and financial_status == "PAID" else financial_status,
                Decimal(refunded),
                ("Cash on Delivery (COD)",) if cash_on_delivery else FakeOrder.payment_gateway_names,
            )

    def refund_order(self, order_id: int, amount: str) -> None:
        with self._lock:
            order = self.orders[order_id]
            order.refunded += Decimal(amount)
            order.financial_status = "REFUNDED" if order.refunded >= order.total else "PARTIALLY_REFUNDED"

    def cancel_order(self, order_id: int, reason: str = "CUSTOMER") -> None:
        """Cancelled in the Shopify admin; an unpaid order's payment is voided (a COD parcel
        returned to origin is cancelled with reason DECLINED)."""
        with self._lock:
            order = self.orders[order_id]
            order.cancelled_at = _iso(_now().replace(microsecond=0))
            order.cancel_reason = reason
            if order.financial_status in ("PENDING", "AUTHORIZED"):
                order.financial_status = "VOIDED"

    def collect_payment(self, order_id: int) -> None:
        """The courier collected the cash on delivery: the order is paid."""
        with self._lock:
            self.orders[order_id].financial_status = "PAID"

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
        body = read_body(request)
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
            return json_response({"errors": refused.name}, refused.code or 404)
        args = dict(matched)
        shop = self.shops.get(args.pop("shop"))
        if shop is None:
            return json_response({"errors": "Not Found"}, 404)
        handler: Callable[..., Response] = getattr(self, f"_serve_{endpoint}")
        return handler(request, shop, body, **args)

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
            return json_response({"errors": "Not Found"}, 404)
        discount = self._discount_outcome(shop, request.args.get("discount"))
        return json_response({"page": "checkout", "token": token, "discount": discount})

    def _serve_cart(self, request: Request, shop: FakeShop, body: Any, items: str) -> Response:
        if not CART_ITEMS.match(items):
            return json_response({"errors": "Not Found"}, 404)
        lines = [
            {"variant_id": int(v), "quantity": int(q)} for v, q in (p.split(":") for p in items.split(","))
        ]
        discount = self._discount_outcome(shop, request.args.get("discount"))
        return json_response({"page": "cart", "token": None, "lines": lines, "discount": discount})
