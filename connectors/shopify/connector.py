"""The Shopify connector: webhooks in, Admin GraphQL out, all through ``shopifyapp``.

``shopifyapp`` (Shopify's maintained package) verifies webhooks, exchanges and refreshes
tokens and sends Admin GraphQL with retries on 429/5xx; this module adds what it leaves to
apps: GraphQL ``THROTTLED`` answers (HTTP 200 with an error) and ``userErrors``.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
from shopify_app import ShopifyApp

from connectors.base import (
    CheckoutRef,
    CreatedDiscount,
    DiscountRequest,
    Ignored,
    IssuedToken,
    MalformedPayload,
    OrderStatus,
    PlatformError,
    PlatformUnauthorized,
    RebuiltCheckout,
    StoreAccess,
    StoreDetails,
    WebhookEvent,
    WebhookIdentity,
    WebhookRejected,
    cart_permalink,
    parse_decimal,
    parse_timestamp,
    with_query,
)
from connectors.payload_fields import load_json_object
from connectors.shopify import operations as ops
from connectors.shopify import payloads
from connectors.shopify.routing import DEFAULT_ADMIN_URL_TEMPLATE, ShopifyRoutingTransport
from connectors.untrusted_json import checked_json_text

log = logging.getLogger("cartback.shopify")

PLATFORM = "shopify"
HEADER_SHOP = "X-Shopify-Shop-Domain"
HEADER_TOPIC = "X-Shopify-Topic"
HEADER_WEBHOOK_ID = "X-Shopify-Webhook-Id"
HEADER_EVENT_ID = "X-Shopify-Event-Id"
HEADER_TRIGGERED_AT = "X-Shopify-Triggered-At"
HEADERS = (HEADER_SHOP, HEADER_TOPIC, HEADER_WEBHOOK_ID, HEADER_EVENT_ID, HEADER_TRIGGERED_AT)
SHOP_DOMAIN = re.compile(r"^[a-z0-9][a-z0-9-]*\.myshopify\.com$")
# Shopify answers within seconds; a click or a job must not hang on it.
ADMIN_TIMEOUT = httpx.Timeout(10.0, connect=3.0)
# THROTTLED answers: wait for the bucket to refill this many times, at most this long each;
# beyond that the caller's own retry (an RQ retry, the sweep) takes over.
THROTTLE_RETRIES = 3
MAX_THROTTLE_WAIT_SECONDS = 5.0


def _header(headers: Mapping[str, str], name: str) -> str:
    return headers.get(name) or headers.get(name.removeprefix("X-")) or ""


def shop_subdomain(shop_domain: str) -> str:
    """``bazaar.myshopify.com`` -> ``bazaar``: how ``shopifyapp`` names a shop."""
    return shop_domain.removesuffix(".myshopify.com")


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None


def _parse_optional_time(value: str | None) -> datetime | None:
    return parse_timestamp(value, "expires") if value else None


class ShopifyConnector:
    platform = PLATFORM
    # Shopify signs every webhook with the app's secret, not a per-store one: verify before
    # looking the store up, so a forged delivery gets 401 even for a shop we do not know.
    signs_with_app_secret = True

    def __init__(
        self,
        api_key: str,
        api_secret: str,
        *,
        old_api_secret: str = "",
        admin_url_template: str = DEFAULT_ADMIN_URL_TEMPLATE,
        http: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.app = ShopifyApp(
            client_id=api_key, client_secret=api_secret, old_client_secret=old_api_secret or None
        )
        self.api_key = api_key
        self.admin_url_template = admin_url_template
        self.transport = ShopifyRoutingTransport(admin_url_template)
        self.http = http or httpx.Client(
            transport=self.transport, timeout=ADMIN_TIMEOUT, follow_redirects=False
        )
        self._sleep = sleep

    def api_base_url(self, shop_domain: str) -> str:
        return self.admin_url_template.format(shop=shop_domain, version=ops.API_VERSION)

    # -- webhooks -------------------------------------------------------------------------

    def webhook_identity(self, headers: Mapping[str, str]) -> WebhookIdentity:
        # Shopify also sends the names without "X-" (shopifyapp verifies either spelling).
        headers = {name: _header(headers, name) for name in HEADERS}
        missing = [name for name in (HEADER_SHOP, HEADER_TOPIC, HEADER_WEBHOOK_ID) if not headers.get(name)]
        if missing:
            raise WebhookRejected(400, "missing header(s): " + ", ".join(missing))
        shop = headers[HEADER_SHOP].strip().lower()
        if not SHOP_DOMAIN.match(shop):
            raise WebhookRejected(400, f"{HEADER_SHOP} must be a *.myshopify.com domain")
        triggered_at = None
        if headers.get(HEADER_TRIGGERED_AT):
            try:
                triggered_at = parse_timestamp(headers[HEADER_TRIGGERED_AT].strip(), HEADER_TRIGGERED_AT)
            except ValueError:
                triggered_at = None  # informational only: a bad value must not lose the delivery
        return WebhookIdentity(
            store_ref=shop,
            topic=headers[HEADER_TOPIC].strip(),
            delivery_id=headers[HEADER_WEBHOOK_ID].strip(),
            event_id=(headers.get(HEADER_EVENT_ID) or "").strip() or None,
            triggered_at=triggered_at,
        )

    def verify_webhook(self, raw_body: bytes, headers: Mapping[str, str], secret: str) -> bool:
        """HMAC over the raw body with the app secret (or the old one during a rotation)."""
        try:
            # shopifyapp parses the body for its own log before it checks the HMAC, and lets a
            # RecursionError (deep nesting) or ValueError (a 5,000-digit number) escape: the
            # body must pass the untrusted-body checks first. Shopify signs only JSON it wrote,
            # so a body that fails them cannot be one of its deliveries.
            body = checked_json_text(raw_body)
        except MalformedPayload:
            return False
        # Shopify's headers are ASCII; shopifyapp compares the HMAC header with
        # hmac.compare_digest on str, which raises on non-ASCII (a 500 for a forged header).
        ascii_headers = {name: value for name, value in headers.items() if value.isascii()}
        result = self.app.verify_webhook_req(
            {"method": "POST", "headers": ascii_headers, "url": "", "body": body}
        )
        return bool(result.ok)

    def parse_webhook(
        self, identity: WebhookIdentity, raw_body: bytes, *, default_region: str
    ) -> WebhookEvent:
        if identity.topic not in payloads.KNOWN_TOPICS:
            return Ignored(f"topic {identity.topic} is not used by cartback")
        return payloads.parse(
            identity.topic,
            load_json_object(raw_body),
            default_region=default_region,
            triggered_at=identity.triggered_at,
            shop=identity.store_ref,
        )

    # -- Admin GraphQL --------------------------------------------------------------------

    def graphql(
        self, store: StoreAccess, query: str, variables: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Run one operation; PlatformUnauthorized on 401, PlatformError(retryable) when it may pass."""
        if not store.access_token:
            raise PlatformUnauthorized("no Shopify access token stored for this shop")
        for attempt in range(THROTTLE_RETRIES + 1):
            result = self.app.admin_graphql_request(
                query,
                shop=shop_subdomain(store.platform_store_id),
                access_token=store.access_token,
                api_version=ops.API_VERSION,
                invalid_token_response=None,  # a background call: nobody to retry a browser request
                variables=variables,
                http_client=self.http,
            )
            if result.ok:
                return dict(result.data or {})
            code = result.log.code
            if code == "unauthorized":
                raise PlatformUnauthorized("Shopify refused the access token (expired or revoked)")
            if code == "graphql_errors":
                wait = _throttle_wait(result.response.body)
                if wait is None:
                    raise PlatformError(f"Shopify GraphQL error: {_first_error(result.response.body)}")
                if attempt < THROTTLE_RETRIES and wait <= MAX_THROTTLE_WAIT_SECONDS:
                    self._sleep(wait)
                    continue
                raise PlatformError("Shopify API is throttling this shop; try again shortly", retryable=True)
            if code == "http_error_403":
                raise PlatformError(
                    "Shopify says the app lacks a required scope; the merchant must approve it"
                )
            if code in ("network_error", "rate_limited") or code.startswith("http_error_5"):
                raise PlatformError(f"Shopify unavailable ({code})", retryable=True)
            raise PlatformError(f"Shopify request failed ({code})")
        raise AssertionError("unreachable: the loop returns or raises")

    @staticmethod
    def _user_errors(payload: Mapping[str, Any] | None, what: str) -> None:
        errors = (payload or {}).get("userErrors") or []
        if errors:
            detail = "; ".join(
                f"{'.'.join(e.get('field') or []) or '-'}: {e.get('message')} ({e.get('code')})"
                for e in errors
            )
            raise PlatformError(f"Shopify refused to {what}: {detail}")

    def store_details(self, store: StoreAccess) -> StoreDetails:
        shop = self.graphql(store, ops.SHOP).get("shop") or {}
        address = shop.get("billingAddress") or {}
        domain = shop.get("primaryDomain") or {}
        return StoreDetails(
            name=str(shop.get("name") or store.platform_store_id),
            currency=str(shop.get("currencyCode") or "INR"),
            timezone=str(shop.get("ianaTimezone") or "UTC"),
            country=address.get("countryCodeV2"),
            storefront_url=str(domain.get("url") or f"https://{store.platform_store_id}").rstrip("/"),
        )

    def create_discount(self, store: StoreAccess, request: DiscountRequest) -> CreatedDiscount:
        data = self.graphql(store, ops.DISCOUNT_CREATE, {"basicCodeDiscount": discount_input(request)})
        created = data.get("discountCodeBasicCreate")
        if any(
            error.get("code") == "TAKEN" and (error.get("field") or [])[-1:] == ["code"]
            for error in (created or {}).get("userErrors") or []
        ):
            # A double tap, or a create whose answer was lost: the code exists, and it is ours.
            existing = self.graphql(store, ops.DISCOUNT_BY_CODE, {"code": request.code})
            node = existing.get("codeDiscountNodeByCode") or {}
            if node.get("id"):
                return CreatedDiscount(code=request.code, platform_discount_id=str(node["id"]))
        self._user_errors(created, f"create discount {request.code}")
        node = (created or {}).get("codeDiscountNode") or {}
        if not node.get("id"):
            raise PlatformError("Shopify created no discount and gave no reason")
        return CreatedDiscount(code=request.code, platform_discount_id=str(node["id"]))

    def delete_discount(self, store: StoreAccess, platform_discount_id: str) -> None:
        data = self.graphql(
            store, ops.DISCOUNT_DELETE, {"id": ops.gid("DiscountCodeNode", platform_discount_id)}
        )
        deleted = data.get("discountCodeDelete") or {}
        errors = deleted.get("userErrors") or []
        if errors and any("not exist" in str(e.get("message", "")).lower() for e in errors):
            return  # already gone: the merchant deleted it by hand
        self._user_errors(deleted, "delete a discount")

    def rebuild_checkout(
        self, store: StoreAccess, checkout: CheckoutRef, discount_code: str | None
    ) -> RebuiltCheckout:
        return RebuiltCheckout(self._checkout_url(store, checkout, discount_code))

    def _checkout_url(self, store: StoreAccess, checkout: CheckoutRef, discount_code: str | None) -> str:
        """The shopper's own checkout (contact and address kept) with the code applied.

        Shopify's abandoned-checkout notification applies a code by appending ``discount=CODE``
        to ``abandoned_checkout_url``; we do the same. Without that URL, a cart permalink
        rebuilds the cart from its lines, also with ``discount=``.
        """
        url = checkout.checkout_url
        if url and urlsplit(url).scheme in ("https", "http") and urlsplit(url).netloc:
            return with_query(url, discount=discount_code) if discount_code else url
        storefront = store.storefront_url.rstrip("/") or f"https://{store.platform_store_id}"
        permalink = cart_permalink(storefront, checkout.lines, discount_code)
        if permalink is None and discount_code:
            return f"{storefront}/discount/{quote(discount_code)}"  # Shopify's shareable code link
        return permalink or storefront

    def fetch_variant_images(self, store: StoreAccess, variant_ids: Sequence[str]) -> dict[str, str | None]:
        images: dict[str, str | None] = {}
        ids = list(dict.fromkeys(variant_ids))
        for start in range(0, len(ids), ops.MAX_NODES):
            batch = ids[start : start + ops.MAX_NODES]
            nodes = self.graphql(
                store, ops.VARIANT_IMAGES, {"ids": [ops.gid("ProductVariant", v) for v in batch]}
            )
            for variant_id, node in zip(batch, nodes.get("nodes") or [], strict=False):
                images[variant_id] = _image_of(node)
        return images

    def sync_opt_out(self, store: StoreAccess, customer_id: str) -> None:
        data = self.graphql(
            store,
            ops.WHATSAPP_OPT_OUT,
            {
                "input": {
                    "customerId": ops.gid("Customer", customer_id),
                    "whatsAppMarketingConsent": {"state": "UNSUBSCRIBED"},
                }
            },
        )
        self._user_errors(data.get("customerWhatsAppMarketingConsentUpdate"), "record the WhatsApp opt-out")

    def order_statuses(self, store: StoreAccess, order_ids: Sequence[str]) -> list[OrderStatus]:
        statuses: list[OrderStatus] = []
        for start in range(0, len(order_ids), ops.MAX_NODES):
            batch = list(order_ids[start : start + ops.MAX_NODES])
            data = self.graphql(store, ops.ORDER_STATUSES, {"ids": [ops.gid("Order", o) for o in batch]})
            for order_id, node in zip(batch, data.get("nodes") or [], strict=False):
                statuses.append(_order_status(order_id, node))
        return statuses

    # -- tokens ---------------------------------------------------------------------------

    def refresh_access(
        self,
        store: StoreAccess,
        refresh_token: str,
        *,
        expires_at: datetime | None,
        refresh_expires_at: datetime | None,
        force: bool,
    ) -> IssuedToken | None:
        """A new token pair when the access token is (nearly) expired, or ``force`` after a 401."""
        # shopifyapp decides whether a refresh is due from `expires`; after a 401 the token is
        # dead whatever its stated expiry, so we present it as expired.
        stated_expiry = datetime.now(UTC) - timedelta(minutes=1) if force else expires_at
        result = self.app.refresh_token_exchanged_access_token(
            {
                "shop": shop_subdomain(store.platform_store_id),
                "access_mode": "offline",
                "refresh_token": refresh_token,
                "expires": _iso(stated_expiry),
                "refresh_token_expires": _iso(refresh_expires_at),
            },
            http_client=self.http,
        )
        if result.ok and result.access_token is None:
            return None  # still valid
        if result.ok:
            return issued_token(result.access_token)
        code = result.log.code
        # refresh_error: an HTTP answer other than the documented refusals (a 429, a proxy).
        if code in ("server_error", "network_error", "rate_limit_exceeded", "refresh_error"):
            raise PlatformError(f"Shopify token refresh unavailable ({code})", retryable=True)
        raise PlatformUnauthorized(
            f"Shopify refused the token refresh ({code}); the merchant must open cartback in the "
            "Shopify admin to reconnect"
        )


def issued_token(token: Any) -> IssuedToken:
    """shopifyapp's TokenExchangeAccessToken -> ours (times parsed, secrets kept as given)."""
    return IssuedToken(
        access_token=str(token.token),
        scope=str(token.scope or ""),
        expires_at=_parse_optional_time(token.expires),
        refresh_token=token.refresh_token or None,
        refresh_token_expires_at=_parse_optional_time(token.refresh_token_expires),
    )


def discount_input(request: DiscountRequest) -> dict[str, Any]:
    """DiscountCodeBasicInput for a single-use recovery code (Admin GraphQL 2026-10)."""
    value = {"discountAmount": {"amount": str(request.amount_off()), "appliesOnEachItem": False}}
    basic: dict[str, Any] = {
        "title": f"cartback recovery {request.code}",
        "code": request.code,
        "startsAt": _iso(request.starts_at or datetime.now(UTC)),
        "endsAt": _iso(request.ends_at),
        "usageLimit": request.usage_limit,
        "appliesOncePerCustomer": True,
        "context": {"all": "ALL"},
        "customerGets": {"value": value, "items": {"all": True}},
        "combinesWith": {"orderDiscounts": False, "productDiscounts": True, "shippingDiscounts": True},
    }
    if request.min_subtotal:
        basic["minimumRequirement"] = {
            "subtotal": {"greaterThanOrEqualToSubtotal": str(request.min_subtotal)}
        }
    return basic


def _image_of(node: Any) -> str | None:
    if not isinstance(node, dict):
        return None
    for media in (
        (node.get("media") or {}).get("nodes") or [],
        [(node.get("product") or {}).get("featuredMedia")],
    ):
        for item in media:
            url = (((item or {}).get("preview") or {}).get("image") or {}).get("url")
            if isinstance(url, str) and url:
                return url
    return None


def _money(bag: Any) -> tuple[Decimal | None, str | None]:
    # The shop's money: recovered revenue is counted in the store's currency.
    money = (bag or {}).get("shopMoney") or {}
    if money.get("amount") is None:
        return None, None
    return parse_decimal(str(money["amount"]), "amount"), money.get("currencyCode")


# Financial statuses of an order whose money is not collected yet (Admin GraphQL
# OrderDisplayFinancialStatus): its revenue stays pending until it is paid.
UNPAID_FINANCIAL_STATUSES = frozenset({"pending", "authorized", "partially_paid", "expired"})


# Shopify names the manual payment method "Cash on Delivery (COD)"; stores rename it.
CASH_ON_DELIVERY_NAME = re.compile(r"cash on delivery|\bcod\b", re.IGNORECASE)


def _cash_on_delivery(gateways: Any) -> bool:
    return any(isinstance(name, str) and CASH_ON_DELIVERY_NAME.search(name) for name in gateways or [])


def _order_status(order_id: str, node: Any) -> OrderStatus:
    if not isinstance(node, dict):
        return OrderStatus(order_id=order_id, found=False)
    total, currency = _money(node.get("currentTotalPriceSet"))
    refunded, _ = _money(node.get("totalRefundedSet"))
    financial_status = str(node.get("displayFinancialStatus") or "").lower() or None
    return OrderStatus(
        order_id=order_id,
        found=True,
        financial_status=financial_status,
        cancelled_at=_parse_optional_time(node.get("cancelledAt")),
        current_total=total,
        refunded=refunded,
        currency=currency,
        cancel_reason=str(node.get("cancelReason") or "").lower() or None,
        cash_on_delivery=_cash_on_delivery(node.get("paymentGatewayNames")),
        awaiting_payment=financial_status in UNPAID_FINANCIAL_STATUSES,
    )


def _errors(body: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    try:
        payload = json.loads(body or "{}")
    except ValueError:
        return [], {}
    errors = payload.get("errors") if isinstance(payload, dict) else None
    extensions = payload.get("extensions") if isinstance(payload, dict) else None
    return (
        [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else [],
        extensions if isinstance(extensions, dict) else {},
    )


def _first_error(body: str) -> str:
    errors, _ = _errors(body)
    return str(errors[0].get("message", "unknown"))[:200] if errors else "unknown"


def _throttle_wait(body: str) -> float | None:
    """Seconds until the cost bucket has room again, if the answer was THROTTLED; else None."""
    errors, extensions = _errors(body)
    if not any((e.get("extensions") or {}).get("code") == "THROTTLED" for e in errors):
        return None
    cost = extensions.get("cost") or {}
    status = cost.get("throttleStatus") or {}
    try:
        needed = float(cost.get("requestedQueryCost") or 0) - float(status.get("currentlyAvailable") or 0)
        rate = float(status.get("restoreRate") or 0)
    except (TypeError, ValueError):
        return 1.0
    return max(needed / rate, 0.1) if rate > 0 else 1.0
