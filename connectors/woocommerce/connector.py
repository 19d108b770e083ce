"""The WooCommerce connector: signed webhooks in, REST ``wc/v3`` out.

Every store signs its deliveries with its own secret (the one cartback gave its webhooks, and
its companion plugin): the store is found from ``X-WC-Webhook-Source`` before the signature is
checked. ``X-WC-Webhook-Delivery-ID`` is a hash of the webhook id and the second it was sent,
so two events in one second share it: deliveries are told apart by what they say (the order,
its status and its modification time) instead.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import logging
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from connectors.base import (
    CheckoutRef,
    CreatedDiscount,
    DiscountRequest,
    OrderStatus,
    PayloadError,
    PlatformError,
    RebuiltCheckout,
    StoreAccess,
    StoreDetails,
    WebhookEvent,
    WebhookIdentity,
    WebhookRejected,
    WebhookSync,
    parse_decimal,
    with_query,
)
from connectors.payload_fields import load_json_object
from connectors.woocommerce import payloads
from connectors.woocommerce.rest import WooCommerceRest

log = logging.getLogger("cartback.woocommerce")

PLATFORM = "woocommerce"
HEADER_SOURCE = "X-WC-Webhook-Source"
HEADER_TOPIC = "X-WC-Webhook-Topic"
HEADER_SIGNATURE = "X-WC-Webhook-Signature"
HEADER_WEBHOOK_ID = "X-WC-Webhook-ID"
HEADER_DELIVERY_ID = "X-WC-Webhook-Delivery-ID"
# The topics cartback registers on each store.
WEBHOOK_TOPICS = ("order.created", "order.updated", "order.deleted", "order.restored")
# What a polled order is stored as: the webhook that would have said the same.
ORDER_CHANGED_TOPIC = "order.updated"
# WooCommerce's creation ping: a form body naming the new webhook, unsigned.
PING_BODY = re.compile(rb"^webhook_id=\d+$")
# ``per_page`` may not exceed 100 in WooCommerce's REST API.
PAGE_SIZE = 100
# A link into the store's order-pay page proves, for this long, that the visitor came from a
# cartback message (the plugin then skips WooCommerce's "confirm your email" step).
PAY_LINK_LIFETIME_SECONDS = 7 * 24 * 3600
PAY_LINK_PARAMETER = "cartback_pay"
# Billing fields an order needs to be paid for without visiting checkout again.
ORDER_ADDRESS_FIELDS = ("first_name", "address_1", "city", "postcode", "country")


def canonical_site_url(raw: str) -> str:
    """``HTTPS://Shop.Example/`` -> ``https://shop.example``: how a store is named here.

    Scheme and host lower-case, default port and trailing slash dropped, the path kept (a
    WordPress in a subdirectory). ValueError when it is not an http(s) URL with a host.
    """
    parts = urlsplit(raw.strip())
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError("give the store's address, like https://shop.example")
    if parts.username or parts.password:
        raise ValueError("the store's address must not contain a user name or password")
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"  # an IPv6 literal
    port = parts.port
    default_port = 443 if parts.scheme.lower() == "https" else 80
    netloc = host if port in (None, default_port) else f"{host}:{port}"
    path = parts.path.rstrip("/")
    return urlunsplit((parts.scheme.lower(), netloc, path, "", ""))


def sign(secret: str, raw_body: bytes) -> str:
    """WooCommerce's webhook signature: base64 of the HMAC-SHA256 of the body with the secret."""
    return base64.b64encode(hmac.new(secret.encode(), raw_body, hashlib.sha256).digest()).decode()


def pay_link_token(secret: str, order_id: str, order_key: str, expires: int) -> str:
    """``{expires}.{signature}`` for the plugin to check (see plugin ``cartback_verify_pay_token``)."""
    message = f"order-pay|{order_id}|{order_key}|{expires}".encode()
    digest = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    return f"{expires}.{base64.urlsafe_b64encode(digest).decode().rstrip('=')}"


def _header(headers: Mapping[str, str], name: str) -> str:
    return (headers.get(name) or "").strip()


class WooCommerceConnector:
    platform = PLATFORM
    # Each store signs with its own secret: the store is looked up before verifying.
    signs_with_app_secret = False

    def __init__(
        self, *, sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.time
    ):
        self._sleep = sleep
        self._clock = clock
        self._query_auth_sites: set[str] = set()

    def rest(self, store: StoreAccess) -> WooCommerceRest:
        return WooCommerceRest(store, query_auth_sites=self._query_auth_sites, sleep=self._sleep)

    # -- webhooks -------------------------------------------------------------------------

    def is_ping(self, raw_body: bytes, headers: Mapping[str, str]) -> bool:
        return not _header(headers, HEADER_SIGNATURE) and bool(PING_BODY.match(raw_body.strip()))

    def webhook_identity(self, headers: Mapping[str, str]) -> WebhookIdentity:
        missing = [
            name for name in (HEADER_SOURCE, HEADER_TOPIC, HEADER_SIGNATURE) if not _header(headers, name)
        ]
        if missing:
            raise WebhookRejected(400, "missing header(s): " + ", ".join(missing))
        try:
            site = canonical_site_url(_header(headers, HEADER_SOURCE))
        except ValueError:
            raise WebhookRejected(400, f"{HEADER_SOURCE} must be the store's URL") from None
        webhook_id = _header(headers, HEADER_WEBHOOK_ID) or "-"
        return WebhookIdentity(
            store_ref=site,
            topic=_header(headers, HEADER_TOPIC).lower(),
            # Replaced by ``delivery_key`` once the body is read (this one repeats per second).
            delivery_id=f"{webhook_id}:{_header(headers, HEADER_DELIVERY_ID) or '-'}",
            event_id=None,
        )

    def verify_webhook(self, raw_body: bytes, headers: Mapping[str, str], secret: str) -> bool:
        given = _header(headers, HEADER_SIGNATURE)
        if not secret or not given:
            return False
        return hmac.compare_digest(sign(secret, raw_body).encode(), given.encode())

    def parse_webhook(
        self, identity: WebhookIdentity, raw_body: bytes, *, default_region: str
    ) -> WebhookEvent:
        payload = load_json_object(raw_body)
        return payloads.parse(
            identity.topic,
            payload,
            default_region=default_region,
            received_at=identity.triggered_at or datetime.now(UTC),
        )

    def delivery_key(self, identity: WebhookIdentity, raw_body: bytes) -> str:
        """What makes a delivery the same event: an order in one status at one modification
        time, a captured cart at one moment. Replays and the same change reported twice (a
        webhook and the reconcile poll) share it."""
        try:
            payload = load_json_object(raw_body)
        except PayloadError:
            payload = {}
        topic = identity.topic
        if topic in payloads.ORDER_TOPICS:
            what = f"order|{payload.get('id')}|{payload.get('status')}|{payload.get('date_modified_gmt')}"
        elif topic == payloads.ORDER_DELETED:
            what = f"order|{payload.get('id')}|deleted|{identity.delivery_id}"
        elif topic in (payloads.CART_UPDATED, payloads.CART_EMPTIED):
            what = f"cart|{payload.get('cart_id')}|{topic}|{payload.get('updated_at_gmt')}"
        else:
            what = f"{topic}|{hashlib.sha256(raw_body).hexdigest()}"
        return hashlib.sha256(f"{identity.store_ref}|{what}".encode()).hexdigest()

    def ensure_webhooks(
        self, store: StoreAccess, delivery_url: str, *, set_secret: bool = False
    ) -> WebhookSync:
        """Make sure each topic has an active webhook to ``delivery_url`` signed with the
        store's secret: create what is missing, re-activate what WooCommerce disabled after
        failed deliveries. Safe to run any number of times.

        WooCommerce never returns a webhook's secret: ``set_secret`` (at a connect) sends ours
        to the webhooks that already exist, which an earlier install may have signed otherwise.
        """
        if not store.webhook_secret:
            raise PlatformError("the store has no webhook secret; connect it again")
        rest = self.rest(store)
        ours: dict[str, dict[str, Any]] = {}
        for hook in self._pages(rest, "webhooks", {}, "list webhooks"):
            if str(hook.get("delivery_url") or "").rstrip("/") == delivery_url.rstrip("/"):
                topic = str(hook.get("topic") or "")
                # Several for one topic (an old connect): keep an active one.
                if topic not in ours or hook.get("status") == "active":
                    ours[topic] = hook
        sync = WebhookSync()
        for topic in WEBHOOK_TOPICS:
            existing = ours.get(topic)
            if existing is None:
                rest.call(
                    "POST",
                    "webhooks",
                    what=f"create the {topic} webhook",
                    json={
                        "name": f"cartback {topic}",
                        "topic": topic,
                        "delivery_url": delivery_url,
                        "secret": store.webhook_secret,
                        "status": "active",
                    },
                )
                sync.created.append(topic)
                continue
            changes: dict[str, Any] = {}
            if existing.get("status") != "active":
                changes["status"] = "active"
            if set_secret:
                changes["secret"] = store.webhook_secret
            if changes:
                rest.call(
                    "PUT", f"webhooks/{existing['id']}", what=f"re-activate the {topic} webhook", json=changes
                )
                (sync.reactivated if "status" in changes else sync.resecreted).append(topic)
            else:
                sync.healthy.append(topic)
        return sync

    # -- reading the store ----------------------------------------------------------------

    def _pages(
        self, rest: WooCommerceRest, endpoint: str, params: Mapping[str, Any], what: str
    ) -> Iterator[dict[str, Any]]:
        page = 1
        while True:
            response = rest.call(
                "GET", endpoint, what=what, params={**params, "per_page": PAGE_SIZE, "page": page}
            )
            items = response.body if isinstance(response.body, list) else []
            yield from (item for item in items if isinstance(item, dict))
            if page >= response.total_pages or not items:
                return
            page += 1

    def changed_orders(self, store: StoreAccess, since: datetime) -> Iterator[tuple[str, bytes]]:
        """Every order modified since ``since`` (UTC), as REST JSON, page by page: what the
        webhooks should have said, for the deliveries WooCommerce never retries."""
        params = {
            "modified_after": since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
            "dates_are_gmt": "true",
            "orderby": "id",
            "order": "asc",
        }
        for order in self._pages(self.rest(store), "orders", params, "list changed orders"):
            yield ORDER_CHANGED_TOPIC, json.dumps(order, separators=(",", ":")).encode()

    def store_details(self, store: StoreAccess) -> StoreDetails:
        rest = self.rest(store)
        general = rest.call("GET", "settings/general", what="read the store's settings").body
        values = {
            str(item.get("id")): item.get("value")
            for item in (general if isinstance(general, list) else [])
            if isinstance(item, dict)
        }
        country = str(values.get("woocommerce_default_country") or "").split(":")[0].upper()
        currency = str(values.get("woocommerce_currency") or "INR").upper()
        index = rest.site_index()
        timezone = str(index.get("timezone_string") or "") or _zone_for_offset(index.get("gmt_offset"))
        name = html.unescape(str(index.get("name") or ""))
        return StoreDetails(
            storefront_url=store.api_base_url.rstrip("/"),
            name=name or urlsplit(store.api_base_url).hostname or store.platform_store_id,
            currency=currency if re.fullmatch(r"[A-Z]{3}", currency) else "INR",
            timezone=timezone or "Asia/Kolkata",
            country=country if re.fullmatch(r"[A-Z]{2}", country) else None,
        )

    # -- discounts and the rebuilt checkout -----------------------------------------------

    def create_discount(self, store: StoreAccess, request: DiscountRequest) -> CreatedDiscount:
        body: dict[str, Any] = {
            "code": request.code,
            # Always the amount the message promised (see DiscountRequest.amount_off).
            "discount_type": "fixed_cart",
            "amount": str(request.amount_off()),
            "individual_use": False,
            "usage_limit": request.usage_limit,
            "usage_limit_per_user": 1,
            # With its offset: a bare time is read as the site's zone, and date_expires_gmt is
            # accepted by the schema but ignored on write (WC_Coupon has no setter for it).
            "date_expires": request.ends_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00"),
            "description": "cartback recovery code (single use)",
        }
        if request.min_subtotal:
            body["minimum_amount"] = str(request.min_subtotal)
        if request.customer_email:
            body["email_restrictions"] = [request.customer_email]
        rest = self.rest(store)
        # Safe to repeat: a second create of the same code is refused, and found below.
        response = rest.call(
            "POST",
            "coupons",
            what=f"create coupon {request.code}",
            json=body,
            idempotent=True,
            allow=frozenset({400}),
        )
        if response.status == 400:
            if _code(response.body) != "woocommerce_rest_coupon_code_already_exists":
                raise PlatformError(
                    f"WooCommerce refused to create coupon {request.code}: {_message(response.body)}"
                )
            found = rest.call("GET", "coupons", what="find an existing coupon", params={"code": request.code})
            existing = [c for c in found.body or [] if isinstance(c, dict) and c.get("id")]
            if not existing:
                raise PlatformError(f"WooCommerce says coupon {request.code} exists but does not list it")
            return CreatedDiscount(code=request.code, platform_discount_id=str(existing[0]["id"]))
        if not isinstance(response.body, dict) or not response.body.get("id"):
            raise PlatformError("WooCommerce created no coupon and gave no reason")
        return CreatedDiscount(code=request.code, platform_discount_id=str(response.body["id"]))

    def delete_discount(self, store: StoreAccess, platform_discount_id: str) -> None:
        self.rest(store).call(
            "DELETE",
            f"coupons/{platform_discount_id}",
            what="delete an expired coupon",
            params={"force": "true"},
            allow=frozenset({404}),  # already gone: the merchant deleted it by hand
        )

    def rebuild_checkout(
        self, store: StoreAccess, checkout: CheckoutRef, discount_code: str | None
    ) -> RebuiltCheckout:
        """The order's own payment page with the code applied, else a new order from the
        captured cart, else WooCommerce's checkout link that refills the cart with the code."""
        rest = self.rest(store)
        order_id = payloads.order_id_of(checkout.cart_token)
        if order_id is not None:
            order = rest.call("GET", f"orders/{order_id}", what="read the order", allow=frozenset({404}))
            if order.status == 200 and _awaits_payment(order.body):
                if discount_code and discount_code.lower() not in _coupon_codes(order.body):
                    order = rest.call(
                        "PUT",
                        f"orders/{order_id}",
                        what=f"apply coupon {discount_code} to order {order_id}",
                        json={"coupon_lines": [*_coupon_lines(order.body), {"code": discount_code}]},
                    )
                return RebuiltCheckout(self._pay_url(store, order.body))
        elif _has_address(checkout.billing) and _product_lines(checkout):
            created = rest.call(
                "POST",
                "orders",
                what="create the cart's order",
                json=_new_order(checkout, discount_code),
                allow=frozenset({400}),
            )
            if created.status != 400 and isinstance(created.body, dict) and created.body.get("id"):
                return RebuiltCheckout(
                    self._pay_url(store, created.body),
                    cart_token=payloads.order_cart_token(str(created.body["id"])),
                )
            self._discard_draft(rest, created.body)
            log.warning("order not created from the cart", extra={"code": _code(created.body)})
        if discount_code:
            self._lift_email_restriction(rest, discount_code)
        return RebuiltCheckout(checkout_link(store, checkout, discount_code))

    def _lift_email_restriction(self, rest: WooCommerceRest, code: str) -> None:
        """A checkout link applies the code to a new cart before the shopper has typed an
        email, and WooCommerce refuses an email-restricted code then: it is lifted (the code
        stays single-use and expiring)."""
        found = rest.call("GET", "coupons", what="find the recovery coupon", params={"code": code})
        for coupon in found.body if isinstance(found.body, list) else []:
            if isinstance(coupon, dict) and coupon.get("id") and coupon.get("email_restrictions"):
                rest.call(
                    "PUT",
                    f"coupons/{coupon['id']}",
                    what=f"lift coupon {code}'s email restriction",
                    json={"email_restrictions": []},
                )

    def _discard_draft(self, rest: WooCommerceRest, refused: Any) -> None:
        """A create that failed after its first save (a refused coupon) leaves a checkout-draft
        order behind, named in the error's data: delete it, the merchant never asked for it."""
        data = refused.get("data") if isinstance(refused, dict) else None
        draft_id = data.get("new_draft_order_id") if isinstance(data, dict) else None
        if not isinstance(draft_id, int):
            return
        try:
            rest.call(
                "DELETE",
                f"orders/{draft_id}",
                what="delete a draft order",
                params={"force": "true"},
                allow=frozenset({404}),
            )
        except PlatformError as exc:
            log.warning("draft order not deleted", extra={"order_id": draft_id, "reason": exc.reason})

    def _pay_url(self, store: StoreAccess, order: Any) -> str:
        url = str(order.get("payment_url") or "") if isinstance(order, dict) else ""
        if not url.startswith(("https://", "http://")):
            raise PlatformError("WooCommerce gave the order no payment URL")
        if store.webhook_secret and order.get("order_key"):
            expires = int(self._clock()) + PAY_LINK_LIFETIME_SECONDS
            token = pay_link_token(store.webhook_secret, str(order["id"]), str(order["order_key"]), expires)
            url = with_query(url, **{PAY_LINK_PARAMETER: token})
        return url

    # -- reconciling recovered revenue ------------------------------------------------------

    def order_statuses(self, store: StoreAccess, order_ids: Sequence[str]) -> list[OrderStatus]:
        rest = self.rest(store)
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(order_ids), PAGE_SIZE):
            batch = list(order_ids[start : start + PAGE_SIZE])
            for order in self._pages(rest, "orders", {"include": ",".join(batch)}, "read recovered orders"):
                found[str(order.get("id"))] = order
        return [_order_status(order_id, found.get(order_id)) for order_id in order_ids]


def _zone_for_offset(offset: Any) -> str:
    """A site set to a bare UTC offset ("UTC+5:30") has no zone name: a fixed-offset zone, or
    India's for +5:30 (the offset no other country uses)."""
    try:
        hours = float(offset)
    except (TypeError, ValueError):
        return ""
    if hours == 5.5:
        return "Asia/Kolkata"
    # Etc/GMT zones exist for whole hours only, with the sign inverted (POSIX).
    return f"Etc/GMT{-int(hours):+d}" if hours.is_integer() and hours else ("UTC" if hours == 0 else "")


def _code(body: Any) -> str:
    return str(body.get("code") or "") if isinstance(body, dict) else ""


def _message(body: Any) -> str:
    return (
        str(body.get("message") or "no reason given")[:300] if isinstance(body, dict) else "no reason given"
    )


def _awaits_payment(order: Any) -> bool:
    if not isinstance(order, dict):
        return False
    status = str(order.get("status") or "")
    needs = order.get("needs_payment")
    return status in payloads.UNPAID_STATUSES and (needs is True or needs is None)


def _coupon_lines(order: Mapping[str, Any]) -> list[dict[str, str]]:
    # A PUT replaces the order's coupons: the ones it has must be sent again to stay.
    return [
        {"code": str(line["code"])}
        for line in order.get("coupon_lines") or []
        if isinstance(line, dict) and line.get("code")
    ]


def _coupon_codes(order: Mapping[str, Any]) -> set[str]:
    return {line["code"].lower() for line in _coupon_lines(order)}


def _has_address(billing: Mapping[str, str]) -> bool:
    return all(billing.get(name) for name in ORDER_ADDRESS_FIELDS) and bool(
        billing.get("email") or billing.get("phone")
    )


def _product_lines(checkout: CheckoutRef) -> list[dict[str, Any]]:
    lines = []
    for line in checkout.lines:
        if not line.product_id or not line.product_id.isdigit():
            return []
        item: dict[str, Any] = {"product_id": int(line.product_id), "quantity": line.quantity}
        if line.variant_id and line.variant_id.isdigit() and line.variant_id != line.product_id:
            item["variation_id"] = int(line.variant_id)
        lines.append(item)
    return lines


def _new_order(checkout: CheckoutRef, discount_code: str | None) -> dict[str, Any]:
    billing = {name: value for name, value in checkout.billing.items() if value}
    address = {k: v for k, v in billing.items() if k not in ("email", "phone")}
    order: dict[str, Any] = {
        "status": "pending",
        "set_paid": False,
        "billing": billing,
        "shipping": address,
        "line_items": _product_lines(checkout),
        # Shown in the order's admin as where it came from; not a shopper's checkout.
        "created_via": "cartback",
        # The plugin's cart id: the order's webhooks name the cart they came from.
        "meta_data": [{"key": payloads.META_CART_ID, "value": checkout.cart_id}],
    }
    if discount_code:
        order["coupon_lines"] = [{"code": discount_code}]
    return order


def checkout_link(store: StoreAccess, checkout: CheckoutRef, discount_code: str | None) -> str:
    """``{site}/checkout-link/?products=ID:QTY,…&coupon=CODE``: WooCommerce's shareable checkout
    link, which fills a new cart with these products (a variation by its own id) and applies
    the code. Without product ids, the cart's own link (or the store) with the code for the
    companion plugin to apply."""
    items = [
        f"{line.variant_id or line.product_id}:{line.quantity}"
        for line in checkout.lines
        if (line.variant_id or line.product_id or "").isdigit()
    ]
    site = store.storefront_url.rstrip("/") or store.api_base_url.rstrip("/")
    if not items:
        # A cart known only by another plugin's restore link (CartFlows): the companion plugin
        # applies the code once that link has refilled the cart.
        landing = checkout.checkout_url or site
        return with_query(landing, cartback_coupon=discount_code) if discount_code else landing
    query: dict[str, str] = {"products": ",".join(items)}
    if discount_code:
        query["coupon"] = discount_code
    return f"{site}/checkout-link/?{urlencode(query, safe=':,')}"


def _money(order: Mapping[str, Any], name: str) -> Decimal | None:
    value = order.get(name)
    if value is None:
        return None
    try:
        return parse_decimal(str(value).lstrip("-"), name)
    except PayloadError:
        return None


def _order_status(order_id: str, order: Mapping[str, Any] | None) -> OrderStatus:
    if order is None or order.get("status") == "trash":
        return OrderStatus(order_id=order_id, found=False)
    refunded = sum(
        (
            _money(refund, "total") or Decimal(0)
            for refund in order.get("refunds") or []
            if isinstance(refund, dict)
        ),
        Decimal(0),
    )
    total = _money(order, "total")
    status = str(order.get("status") or "") or None
    cancelled_at = None
    if status in ("cancelled", "failed"):
        try:
            cancelled_at = payloads.parse_gmt(order.get("date_modified_gmt"), "date_modified_gmt")
        except PayloadError:
            cancelled_at = datetime.now(UTC)
    return OrderStatus(
        order_id=order_id,
        found=True,
        financial_status=status,
        cancelled_at=cancelled_at,
        current_total=None if total is None else max(total - refunded, Decimal(0)),
        refunded=refunded,
        currency=str(order.get("currency") or "") or None,
    )
