"""The demo platform: a simulated store (served by the app under /demo-store/) for `make demo`.

It behaves like a real platform so the whole engine is exercised: webhooks signed with a
per-store secret (``X-Demo-Hmac-Sha256``: base64 HMAC-SHA256 of the raw body, as Shopify and
WooCommerce do), checkout payloads shaped like Shopify's, and an Admin API reached over HTTP
with a bearer token for discounts and recovery URLs.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import httpx

from connectors.base import (
    AppUninstalled,
    Buyer,
    CartDeleted,
    CartLine,
    CartSnapshot,
    CheckoutRef,
    ConsentSource,
    CreatedDiscount,
    DiscountRequest,
    Ignored,
    OrderEvent,
    OrderStatus,
    PayloadError,
    PlatformError,
    RebuiltCheckout,
    StoreAccess,
    WebhookEvent,
    WebhookIdentity,
    WebhookRejected,
    cart_permalink,
    normalise_phone,
    parse_currency,
    parse_decimal,
    parse_timestamp,
)
from connectors.payload_fields import (
    line_list,
    line_quantity,
    load_json_object,
    optional_str,
    platform_id,
    require,
)

PLATFORM = "demo"
HEADER_STORE = "X-Demo-Shop"
HEADER_TOPIC = "X-Demo-Topic"
HEADER_DELIVERY = "X-Demo-Webhook-Id"
HEADER_SIGNATURE = "X-Demo-Hmac-Sha256"
HEADER_TRIGGERED_AT = "X-Demo-Triggered-At"

CHECKOUT_TOPICS = frozenset({"checkouts/create", "checkouts/update"})
ORDER_TOPICS = frozenset({"orders/create", "orders/paid"})
KNOWN_TOPICS = CHECKOUT_TOPICS | ORDER_TOPICS | {"checkouts/delete", "app/uninstalled"}
# A quantity above this is a typo or an attack, not a cart.
MAX_LINES = 250


def sign(raw_body: bytes, secret: str) -> str:
    digest = hmac.new(secret.encode(), raw_body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


class DemoConnector:
    platform = PLATFORM
    # Each demo store signs with its own secret, kept encrypted on the store row.
    signs_with_app_secret = False

    def __init__(self, http: httpx.Client) -> None:
        self._http = http

    # -- webhooks -------------------------------------------------------------------------

    def webhook_identity(self, headers: Mapping[str, str]) -> WebhookIdentity:
        missing = [name for name in (HEADER_STORE, HEADER_TOPIC, HEADER_DELIVERY) if not headers.get(name)]
        if missing:
            raise WebhookRejected(400, "missing header(s): " + ", ".join(missing))
        return WebhookIdentity(
            store_ref=headers[HEADER_STORE].strip().lower(),
            topic=headers[HEADER_TOPIC].strip(),
            delivery_id=headers[HEADER_DELIVERY].strip(),
        )

    def verify_webhook(self, raw_body: bytes, headers: Mapping[str, str], secret: str) -> bool:
        given = headers.get(HEADER_SIGNATURE, "")
        # Bytes: compare_digest refuses str with non-ASCII characters (a TypeError, a 500).
        return bool(given) and hmac.compare_digest(sign(raw_body, secret).encode(), given.strip().encode())

    def parse_webhook(
        self, identity: WebhookIdentity, raw_body: bytes, *, default_region: str
    ) -> WebhookEvent:
        if identity.topic not in KNOWN_TOPICS:
            return Ignored(f"topic {identity.topic} is not used by cartback")
        payload = load_json_object(raw_body)
        if identity.topic in CHECKOUT_TOPICS:
            return self._checkout(payload, default_region)
        if identity.topic in ORDER_TOPICS:
            return self._order(payload, default_region)
        if identity.topic == "app/uninstalled":
            return AppUninstalled(
                occurred_at=parse_timestamp(require(payload, "uninstalled_at", str), "uninstalled_at")
            )
        return CartDeleted(
            cart_id=platform_id(payload, "id"),
            occurred_at=parse_timestamp(require(payload, "deleted_at", str), "deleted_at"),
        )

    def _checkout(self, payload: dict[str, Any], default_region: str) -> CartSnapshot:
        currency = parse_currency(payload.get("currency"))
        raw_lines = line_list(payload, "line_items", MAX_LINES)
        lines = []
        for index, raw in enumerate(raw_lines):
            if not isinstance(raw, dict):
                raise PayloadError(f"line_items[{index}] must be an object")
            quantity = line_quantity(raw, f"line_items[{index}]")
            title = raw.get("title")
            if not isinstance(title, str) or not title.strip():
                raise PayloadError(f"line_items[{index}].title is required")
            lines.append(
                CartLine(
                    title=title.strip(),
                    quantity=quantity,
                    unit_price=parse_decimal(raw.get("price"), f"line_items[{index}].price"),
                    product_id=optional_str(raw, "product_id"),
                    variant_id=optional_str(raw, "variant_id"),
                    variant_title=optional_str(raw, "variant_title"),
                    image_url=optional_str(raw, "image_url"),
                )
            )
        customer = payload.get("customer") or {}
        if not isinstance(customer, dict):
            raise PayloadError("customer must be an object")
        raw_phone = optional_str(payload, "phone")
        phone = normalise_phone(raw_phone, default_region) if raw_phone else None
        accepts = payload.get("buyer_accepts_marketing", False)
        if not isinstance(accepts, bool):
            raise PayloadError("buyer_accepts_marketing must be true or false")
        return CartSnapshot(
            cart_id=platform_id(payload, "id"),
            cart_token=optional_str(payload, "token"),
            updated_at=parse_timestamp(require(payload, "updated_at", str), "updated_at"),
            currency=currency,
            subtotal=parse_decimal(payload.get("subtotal_price"), "subtotal_price"),
            total=parse_decimal(payload.get("total_price"), "total_price"),
            lines=tuple(lines),
            buyer=Buyer(
                phone_e164=phone,
                email=optional_str(payload, "email"),
                first_name=optional_str(customer, "first_name"),
                customer_id=optional_str(customer, "id"),
                marketing_consent=accepts,
                consent_source=ConsentSource.CHECKOUT_CHECKBOX if accepts else ConsentSource.UNKNOWN,
            ),
            checkout_url=optional_str(payload, "abandoned_checkout_url"),
            completed=payload.get("completed_at") is not None,
            raw=payload,
        )

    def _order(self, payload: dict[str, Any], default_region: str) -> OrderEvent:
        codes = payload.get("discount_codes") or []
        if not isinstance(codes, list) or not all(
            isinstance(entry, dict) and isinstance(entry.get("code"), str) for entry in codes
        ):
            raise PayloadError("discount_codes must be a list of {code: string}")
        raw_phone = optional_str(payload, "phone")
        return OrderEvent(
            order_id=platform_id(payload, "id"),
            created_at=parse_timestamp(require(payload, "created_at", str), "created_at"),
            currency=parse_currency(payload.get("currency")),
            total=parse_decimal(payload.get("total_price"), "total_price"),
            cart_id=optional_str(payload, "checkout_id"),
            cart_token=optional_str(payload, "checkout_token"),
            discount_codes=tuple(entry["code"] for entry in codes),
            phone_e164=normalise_phone(raw_phone, default_region) if raw_phone else None,
            raw=payload,
        )

    # -- Admin API ----------------------------------------------------------------------

    def _call(self, store: StoreAccess, method: str, path: str, body: dict[str, Any]) -> Any:
        try:
            response = self._http.request(
                method,
                f"{store.api_base_url.rstrip('/')}{path}",
                json=body,
                headers={"Authorization": f"Bearer {store.access_token}"},
                timeout=10.0,
            )
        except httpx.HTTPError as exc:
            raise PlatformError(f"demo store unreachable: {exc.__class__.__name__}", retryable=True) from None
        if response.status_code >= 500 or response.status_code == 429:
            raise PlatformError(f"demo store answered {response.status_code}", retryable=True)
        if response.status_code >= 400:
            try:
                detail = response.json().get("error", response.text[:200])
            except ValueError:
                detail = response.text[:200]
            raise PlatformError(f"demo store refused ({response.status_code}): {detail}")
        return response.json()

    def create_discount(self, store: StoreAccess, request: DiscountRequest) -> CreatedDiscount:
        body = {
            "code": request.code,
            "kind": request.kind.value,
            "value": str(request.value),
            "currency": request.currency,
            "min_subtotal": None if request.min_subtotal is None else str(request.min_subtotal),
            "max_amount": None if request.max_amount is None else str(request.max_amount),
            "ends_at": request.ends_at.isoformat(),
            "usage_limit": request.usage_limit,
        }
        created = self._call(store, "POST", "/api/discounts", body)
        return CreatedDiscount(code=created["code"], platform_discount_id=str(created["id"]))

    def order_statuses(self, store: StoreAccess, order_ids: Sequence[str]) -> list[OrderStatus]:
        answer = self._call(store, "POST", "/api/orders/statuses", {"ids": list(order_ids)})
        statuses = []
        for entry in answer.get("orders") or []:
            if not entry.get("found"):
                statuses.append(OrderStatus(order_id=str(entry.get("id")), found=False))
                continue
            refunded = parse_decimal(str(entry.get("refunded") or "0"), "refunded")
            statuses.append(
                OrderStatus(
                    order_id=str(entry["id"]),
                    found=True,
                    financial_status=str(entry.get("status") or "") or None,
                    current_total=parse_decimal(str(entry.get("total")), "total") - refunded,
                    refunded=refunded,
                    currency=str(entry.get("currency") or "") or None,
                )
            )
        return statuses

    def rebuild_checkout(
        self, store: StoreAccess, checkout: CheckoutRef, discount_code: str | None
    ) -> RebuiltCheckout:
        return RebuiltCheckout(self._checkout_url(store, checkout, discount_code))

    def _checkout_url(self, store: StoreAccess, checkout: CheckoutRef, discount_code: str | None) -> str:
        try:
            result = self._call(
                store,
                "POST",
                f"/api/checkouts/{quote(checkout.cart_id, safe='')}/recovery_url",
                {"discount_code": discount_code},
            )
            return str(result["url"])
        except PlatformError as exc:
            if exc.retryable or not checkout.lines:
                raise
        # The checkout is gone or completed: a cart permalink rebuilds it from the lines.
        return cart_permalink(store.storefront_url, checkout.lines, discount_code) or store.storefront_url
