"""The shopper-facing pages of the fake WooCommerce site, answered as JSON describing what the
shopper would see.

* The order-pay page (``WC_Shortcode_Checkout::order_pay``, includes/shortcodes/
  class-wc-shortcode-checkout.php), with guest email verification as
  ``Users::should_user_verify_order_email`` decides it (src/Internal/Utilities/Users.php): no
  billing email, or within 10 minutes of the order's creation
  (``woocommerce_order_email_verification_grace_period``), needs none; otherwise a visitor who
  is neither logged in nor in the shopper's session must confirm the email. The
  ``woocommerce_order_email_verification_required`` filter can lift that: the cartback companion
  plugin does, for links carrying a valid ``cartback_pay`` token.
* Shareable checkout links (WooCommerce 10.0+, src/Blocks/Domain/Services/CheckoutLink.php):
  ``/checkout-link/?products=ID:QTY,ID&coupon=CODE``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from datetime import timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from tests.fakes.woocommerce_discounts import CENTS, DiscountItem, Discounts, coupon_error
from tests.fakes.woocommerce_site import CURRENCY_ENTITIES, Site
from tests.fakes.woocommerce_state import STATUS_NAMES
from tests.fakes.woocommerce_wp import format_decimal

# woocommerce_order_email_verification_grace_period's default: 10 * MINUTE_IN_SECONDS.
EMAIL_VERIFICATION_GRACE = timedelta(minutes=10)
INVALID_ORDER = "Sorry, this order is invalid and cannot be paid for."
LOG_IN_TO_PAY = "Please log in to your account below to continue to the payment form."
INVALID_LINK = "The provided checkout link was out of date or invalid. No products were added to the cart."


def cartback_pay_signature(plugin_secret: str, order_id: int, order_key: str, expires: int) -> str:
    """The companion plugin's token signature: base64url (no padding) of an HMAC-SHA256."""
    message = f"order-pay|{order_id}|{order_key}|{expires}".encode()
    digest = hmac.new(plugin_secret.encode(), message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _plugin_lifts_verification(
    site: Site, plugin_secret: str | None, order_id: int, key: str, token: str
) -> bool:
    if not plugin_secret or "." not in token:
        return False
    expires_text, _, signature = token.partition(".")
    if not expires_text.isdigit() or int(expires_text) <= int(site.now().timestamp()):
        return False
    expected = cartback_pay_signature(plugin_secret, order_id, key, int(expires_text))
    return hmac.compare_digest(expected.encode(), signature.encode())


def order_pay_page(
    site: Site, order_id: int, query: dict[str, str], plugin_secret: str | None
) -> dict[str, Any]:
    page: dict[str, Any] = {
        "order_id": order_id,
        "status": None,
        "total": None,
        "coupons": [],
        "needs_payment": False,
        "email_verification_required": False,
        "error": None,
    }
    order = site.orders.get(order_id)
    key = query.get("key", "")
    if order is None or not hmac.compare_digest(order.order_key.encode(), key.encode()):
        page["error"] = INVALID_ORDER
        return page
    page.update(
        status=order.status,
        total=format_decimal(order.total),
        coupons=[line.code for line in order.coupon_lines],
        needs_payment=order.needs_payment,
    )
    if "pay_for_order" not in query:
        # The receipt step after checkout: no login, verification or stock checks.
        if not order.needs_payment:
            page["error"] = _cannot_pay(order.status)
        return page
    if order.customer_id:  # the visitor is not logged in as the order's customer
        page["error"] = LOG_IN_TO_PAY
        return page
    if not order.needs_payment:
        page["error"] = _cannot_pay(order.status)
        return page
    page["email_verification_required"] = (
        bool(order.billing.get("email"))
        and (site.now() - order.date_created > EMAIL_VERIFICATION_GRACE)
        and not _plugin_lifts_verification(
            site, plugin_secret, order.id, order.order_key, query.get("cartback_pay", "")
        )
    )
    return page


def _cannot_pay(status: str) -> str:
    name = STATUS_NAMES.get(status, status)
    return (
        f"This order&rsquo;s status is &ldquo;{name}&rdquo;&mdash;it cannot be paid for. "
        "Please contact us if you need assistance."
    )


def _products_from_link(raw: str) -> dict[int, int]:
    """CheckoutLink::get_products_from_checkout_link: absint both parts, skip zeros, last wins."""
    products: dict[int, int] = {}
    for entry in filter(None, raw.split(",")):
        product_text, _, quantity_text = entry.partition(":") if ":" in entry else (entry, "", "1")
        product_id, quantity = _absint(product_text), _absint(quantity_text)
        if product_id and quantity:
            products[product_id] = quantity
    return products


def _absint(text: str) -> int:
    digits = ""
    for char in text.strip().lstrip("+-"):
        if not char.isdigit():
            break
        digits += char
    return int(digits) if digits else 0


def checkout_link_page(site: Site, query: dict[str, str]) -> dict[str, Any]:
    """CheckoutLink::handle_checkout_link_endpoint, reporting the cart it would build."""
    cart_url, checkout_url = f"{site.url}/cart/", f"{site.url}/checkout/"
    page: dict[str, Any] = {"items": [], "coupon": None, "coupon_applied": False, "errors": []}
    products = _products_from_link(query.get("products", ""))
    if not products:
        page.update(
            error=INVALID_LINK,
            errors=[INVALID_LINK],
            redirect=f"{cart_url}?{urlencode({'wc_error': INVALID_LINK})}",
        )
        return page
    items: list[DiscountItem] = []
    for product_id, quantity in products.items():
        product = site.product(product_id)
        if product is None:
            page["errors"].append(
                f"Product with ID &quot;{product_id}&quot; was not found and cannot be added to the cart."
            )
            continue
        items.append(DiscountItem(len(items), product.price * quantity * CENTS, quantity, product))
    if not items:
        page["errors"].append(INVALID_LINK)
        page.update(
            error=page["errors"][0], redirect=f"{cart_url}?{urlencode({'wc_error': page['errors'][0]})}"
        )
        return page
    discounts = Discounts(items)
    code = query.get("coupon", "").strip().lower()
    if code:
        page["coupon"] = code
        subtotal = sum((item.price for item in items), Decimal(0)) / CENTS
        coupon = site.coupon_by_code(code)
        error = coupon_error(
            coupon,
            code,
            items,
            subtotal=subtotal,
            customer_id=0,
            emails=[],
            now=site.now(),
            currency_symbol=CURRENCY_ENTITIES.get(site.currency, site.currency),
        )
        if error or coupon is None:
            page["errors"].append(error)
        else:
            discounts.apply(coupon)
            page["coupon_applied"] = True
    for item in items:
        assert item.product is not None
        discount = discounts.item_discount(item.key) / CENTS
        page["items"].append(
            {
                "product_id": item.product.parent_id or item.product.id,
                "variation_id": item.product.id if item.product.parent_id else 0,
                "name": item.product.name,
                "quantity": item.quantity,
                "subtotal": format_decimal(item.price / CENTS),
                "total": format_decimal(item.price / CENTS - discount),
            }
        )
    passed_on = {k: v for k, v in query.items() if k not in ("products", "coupon", "checkout-link")}
    passed_on["session"] = secrets.token_urlsafe(24)  # the guest cart token (CartTokenUtils)
    page.update(
        error=page["errors"][0] if page["errors"] else None, redirect=f"{checkout_url}?{urlencode(passed_on)}"
    )
    return page
