"""WooCommerce coupons and the rebuilt checkout a recovery link leads to.

The rebuild, in order of preference:

1. the order the shopper left unpaid: its own payment page, with this step's coupon put on it
   (``PUT /orders/{id}`` with ``coupon_lines``) — the shopper's details, address and payment
   choice are already there;
2. a cart captured before any order (the companion plugin), with an address: a new pending
   order from its lines and billing details, with the coupon, and its payment page;
3. otherwise (an order cancelled meanwhile, a cart without an address): WooCommerce's
   shareable checkout link, which refills a cart with the products and applies the coupon.

An order already placed (paid, or awaiting a bank transfer) is not rebuilt: the shopper is told
they have ordered, and no duplicate purchase is invited.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import UTC
from typing import Any
from urllib.parse import urlencode

from connectors.base import (
    CheckoutRef,
    CreatedDiscount,
    DiscountRequest,
    PlatformError,
    RebuiltCheckout,
    StoreAccess,
    with_query,
)
from connectors.payload_fields import is_numeric_id
from connectors.woocommerce import payloads
from connectors.woocommerce.rest import WooCommerceRest, error_code, error_message
from connectors.woocommerce.signing import pay_link_token

log = logging.getLogger("cartback.woocommerce")

# A link into the store's order-pay page proves, for this long, that the visitor came from a
# cartback message (the plugin then skips WooCommerce's "confirm your email" step).
PAY_LINK_LIFETIME_SECONDS = 7 * 24 * 3600
PAY_LINK_PARAMETER = "cartback_pay"
# Where a cart known only by another plugin's restore link gets its code (the plugin applies it).
COUPON_LINK_PARAMETER = "cartback_coupon"
# Billing fields an order needs to be paid for without visiting checkout again.
ORDER_ADDRESS_FIELDS = ("first_name", "address_1", "city", "postcode", "country")
# cartback's codes (``CB-…``, lower-cased by WooCommerce): one per order at a time.
OWN_CODE_PREFIX = "cb-"


def coupon_body(request: DiscountRequest) -> dict[str, Any]:
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
    return body


def create_coupon(rest: WooCommerceRest, request: DiscountRequest) -> CreatedDiscount:
    # Safe to repeat: a second create of the same code is refused, and found below.
    response = rest.call(
        "POST",
        "coupons",
        what=f"create coupon {request.code}",
        json=coupon_body(request),
        idempotent=True,
        allow=frozenset({400}),
    )
    if response.status == 400:
        if error_code(response.body) != "woocommerce_rest_coupon_code_already_exists":
            raise PlatformError(
                f"WooCommerce refused to create coupon {request.code}: {error_message(response.body)}"
            )
        found = rest.call("GET", "coupons", what="find an existing coupon", params={"code": request.code})
        existing = [c for c in found.body or [] if isinstance(c, dict) and c.get("id")]
        if not existing:
            raise PlatformError(f"WooCommerce says coupon {request.code} exists but does not list it")
        return CreatedDiscount(code=request.code, platform_discount_id=str(existing[0]["id"]))
    if not isinstance(response.body, dict) or not response.body.get("id"):
        raise PlatformError("WooCommerce created no coupon and gave no reason")
    return CreatedDiscount(code=request.code, platform_discount_id=str(response.body["id"]))


def rebuild(
    rest: WooCommerceRest,
    store: StoreAccess,
    checkout: CheckoutRef,
    code: str | None,
    *,
    now: Callable[[], float],
) -> RebuiltCheckout:
    order_id = payloads.order_id_of(checkout.cart_token)
    if order_id is not None:
        found = rest.call("GET", f"orders/{order_id}", what="read the order", allow=frozenset({404}))
        order = found.body if found.status == 200 and isinstance(found.body, dict) else None
        status = str(order.get("status") or "") if order else ""
        if order is not None and status in payloads.PLACED_STATUSES:
            # The payment webhook may simply not have arrived yet.
            return RebuiltCheckout(store.storefront_url or store.api_base_url, already_ordered=True)
        if order is not None and _awaits_payment(order):
            if code and code.lower() not in _coupon_codes(order):
                order = rest.call(
                    "PUT",
                    f"orders/{order_id}",
                    what=f"apply coupon {code} to order {order_id}",
                    # The order's own codes stay (a PUT replaces them all); an earlier step's
                    # cartback code goes, or the offers would add up.
                    json={"coupon_lines": [*_others_codes(order), {"code": code}]},
                ).body
            return RebuiltCheckout(pay_url(store, order, now))
    elif _has_address(checkout.billing) and _product_lines(checkout):
        created = rest.call(
            "POST",
            "orders",
            what="create the cart's order",
            json=new_order(checkout, code),
            allow=frozenset({400}),
        )
        if created.status != 400 and isinstance(created.body, dict) and created.body.get("id"):
            return RebuiltCheckout(
                pay_url(store, created.body, now),
                cart_token=payloads.order_cart_token(str(created.body["id"])),
            )
        _discard_draft(rest, created.body)
        log.warning("order not created from the cart", extra={"code": error_code(created.body)})
    if code:
        _lift_email_restriction(rest, code)
    return RebuiltCheckout(checkout_link(store, checkout, code))


def pay_url(store: StoreAccess, order: Any, now: Callable[[], float]) -> str:
    url = str(order.get("payment_url") or "") if isinstance(order, dict) else ""
    if not url.startswith(("https://", "http://")):
        raise PlatformError("WooCommerce gave the order no payment URL")
    if store.webhook_secret and order.get("order_key"):
        expires = int(now()) + PAY_LINK_LIFETIME_SECONDS
        token = pay_link_token(store.webhook_secret, str(order["id"]), str(order["order_key"]), expires)
        url = with_query(url, **{PAY_LINK_PARAMETER: token})
    return url


def _lift_email_restriction(rest: WooCommerceRest, code: str) -> None:
    """A checkout link applies the code to a new cart before the shopper has typed an email,
    and WooCommerce refuses an email-restricted code then: it is lifted (the code stays
    single-use and expiring)."""
    found = rest.call("GET", "coupons", what="find the recovery coupon", params={"code": code})
    for coupon in found.body if isinstance(found.body, list) else []:
        if isinstance(coupon, dict) and coupon.get("id") and coupon.get("email_restrictions"):
            rest.call(
                "PUT",
                f"coupons/{coupon['id']}",
                what=f"lift coupon {code}'s email restriction",
                json={"email_restrictions": []},
            )


def _discard_draft(rest: WooCommerceRest, refused: Any) -> None:
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


def _awaits_payment(order: Mapping[str, Any]) -> bool:
    needs = order.get("needs_payment")
    return str(order.get("status") or "") in payloads.UNPAID_STATUSES and needs in (True, None)


def _codes(order: Mapping[str, Any]) -> list[str]:
    return [
        str(line["code"])
        for line in order.get("coupon_lines") or []
        if isinstance(line, dict) and line.get("code")
    ]


def _coupon_codes(order: Mapping[str, Any]) -> set[str]:
    return {code.lower() for code in _codes(order)}


def _others_codes(order: Mapping[str, Any]) -> list[dict[str, str]]:
    return [{"code": code} for code in _codes(order) if not code.lower().startswith(OWN_CODE_PREFIX)]


def _has_address(billing: Mapping[str, str]) -> bool:
    return all(billing.get(name) for name in ORDER_ADDRESS_FIELDS) and bool(
        billing.get("email") or billing.get("phone")
    )


def _product_lines(checkout: CheckoutRef) -> list[dict[str, Any]]:
    lines = []
    for line in checkout.lines:
        if not line.product_id or not is_numeric_id(line.product_id):
            return []
        item: dict[str, Any] = {"product_id": int(line.product_id), "quantity": line.quantity}
        if line.variant_id and is_numeric_id(line.variant_id) and line.variant_id != line.product_id:
            item["variation_id"] = int(line.variant_id)
        lines.append(item)
    return lines


def new_order(checkout: CheckoutRef, code: str | None) -> dict[str, Any]:
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
    if code:
        order["coupon_lines"] = [{"code": code}]
    return order


def checkout_link(store: StoreAccess, checkout: CheckoutRef, code: str | None) -> str:
    """``{site}/checkout-link/?products=ID:QTY,…&coupon=CODE``: WooCommerce's shareable checkout
    link, which fills a new cart with these products (a variation by its own id) and applies
    the code. Without product ids, the cart's own link (or the store) with the code for the
    companion plugin to apply."""
    items = [
        f"{line.variant_id or line.product_id}:{line.quantity}"
        for line in checkout.lines
        if is_numeric_id(line.variant_id or line.product_id or "")
    ]
    site = store.storefront_url.rstrip("/") or store.api_base_url.rstrip("/")
    if not items:
        # A cart known only by another plugin's restore link (CartFlows): the companion plugin
        # applies the code once that link has refilled the cart.
        landing = checkout.checkout_url or site
        return with_query(landing, **{COUPON_LINK_PARAMETER: code}) if code else landing
    query: dict[str, str] = {"products": ",".join(items)}
    if code:
        query["coupon"] = code
    return f"{site}/checkout-link/?{urlencode(query, safe=':,')}"
