"""WooCommerce webhook bodies -> the common model (pure functions, no I/O).

Three sources arrive at ``POST /webhooks/woocommerce``:

* WooCommerce's own order webhooks (``order.created|updated|deleted|restored``): the REST v3
  order. Core has no "cart abandoned" event; an order left ``pending`` or ``failed`` at the
  payment step (a UPI or card payment given up) is the abandoned cart, and a paid one is the
  conversion.
* The companion plugin (``connectors/woocommerce/plugin/``): ``cart.updated`` /
  ``cart.emptied`` with the checkout's cart and contact, before any order exists. Documented in
  the plugin's README; signed like WooCommerce's own deliveries.
* CartFlows' abandonment webhook (``cartflows.abandonment``): a form body, see ``cartflows``.

Identity: a cart the plugin captured keeps the plugin's id, and the plugin stamps it on the
order it becomes (``cartback_cart_id``), so cart and order are one cart here. An order
without it is the cart ``order-{id}``. Every order-backed cart also has the token
``order-{id}``: what the rebuild and the conversion find the order by.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from connectors.base import (
    Buyer,
    CartDeleted,
    CartLine,
    CartSnapshot,
    ConsentSource,
    Ignored,
    OrderChanged,
    OrderEvent,
    OrderStatus,
    PayloadError,
    WebhookEvent,
    parse_currency,
    parse_decimal,
)
from connectors.payload_fields import (
    clean_text,
    first_valid_phone,
    is_numeric_id,
    line_list,
    line_quantity,
    optional_object,
    optional_str,
    platform_id,
    require,
)
from connectors.woocommerce import cartflows

ORDER_TOPICS = frozenset({"order.created", "order.updated", "order.restored"})
ORDER_DELETED = "order.deleted"
CART_UPDATED = "cart.updated"
CART_EMPTIED = "cart.emptied"
KNOWN_TOPICS = ORDER_TOPICS | {ORDER_DELETED, CART_UPDATED, CART_EMPTIED}
# The statuses an order waits in for a payment that never came (UPI and card drop-offs).
UNPAID_STATUSES = frozenset({"pending", "failed"})
# The order was placed: paid, accepted to be paid at the door (cash on delivery), or awaiting
# the merchant's confirmation of a bank transfer or cheque (on-hold). Any of these ends the cart.
PLACED_STATUSES = frozenset({"processing", "completed", "on-hold"})
# Where a placed order ends when it is undone: its recovered revenue is taken back.
SETTLED_STATUSES = frozenset({"cancelled", "refunded"})
# Orders the shopper made at the storefront: classic checkout and the block checkout (Store
# API). Orders made in the admin or over REST (ours included) are nobody's abandoned cart.
SHOPPER_CHANNELS = frozenset({"checkout", "store-api"})
CASH_ON_DELIVERY = "cod"
ORDER_CART_PREFIX = "order-"
# Order meta the companion plugin writes.
META_CART_ID = "cartback_cart_id"
META_OPT_IN = "cartback_whatsapp_optin"
# The block checkout's additional field, as WooCommerce stores it on the order.
META_BLOCK_OPT_IN = "_wc_other/cartback/whatsapp-optin"
TRUE_WORDS = frozenset({"1", "yes", "true", "on"})
PLUGIN_CART_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")


def order_cart_token(order_id: str) -> str:
    return f"{ORDER_CART_PREFIX}{order_id}"


def order_id_of(cart_token: str | None) -> str | None:
    """``order-123`` -> ``123``: the order a cart was left as, if any."""
    if cart_token and cart_token.startswith(ORDER_CART_PREFIX):
        order_id = cart_token.removeprefix(ORDER_CART_PREFIX)
        return order_id if is_numeric_id(order_id) else None
    return None


def parse_gmt(value: Any, field_name: str) -> datetime:
    """WooCommerce's ``*_gmt`` dates carry no zone ("2026-11-28T09:00:00"): they are UTC."""
    if not isinstance(value, str) or not value.strip():
        raise PayloadError(f"{field_name} must be a date such as 2026-11-28T09:00:00")
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise PayloadError(f"{field_name} is not an ISO 8601 date") from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def parse(topic: str, payload: dict[str, Any], *, default_region: str, received_at: datetime) -> WebhookEvent:
    if topic in ORDER_TOPICS:
        return order(payload, default_region)
    if topic == ORDER_DELETED:
        order_id = platform_id(payload, "id")
        return CartDeleted(
            cart_id=order_cart_token(order_id), occurred_at=received_at, cart_token=order_cart_token(order_id)
        )
    if topic == CART_UPDATED:
        return plugin_cart(payload, default_region)
    if topic == CART_EMPTIED:
        return plugin_cart_emptied(payload)
    if topic.startswith(cartflows.TOPIC_PREFIX):
        return cartflows.parse(topic, payload, default_region=default_region, received_at=received_at)
    return Ignored(f"topic {topic} is not used by cartback")


# -- orders ---------------------------------------------------------------------------------


def _meta(payload: Mapping[str, Any]) -> dict[str, Any]:
    entries = payload.get("meta_data") or []
    if not isinstance(entries, list):
        raise PayloadError("meta_data must be a list")
    return {
        entry["key"]: entry.get("value")
        for entry in entries
        if isinstance(entry, dict) and isinstance(entry.get("key"), str)
    }


def _truthy(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return isinstance(value, (str, int)) and str(value).strip().lower() in TRUE_WORDS


def _country(address: Mapping[str, Any]) -> str | None:
    code = address.get("country")
    return code.upper() if isinstance(code, str) and len(code) == 2 and code.isalpha() else None


def _buyer(
    billing: Mapping[str, Any],
    shipping: Mapping[str, Any],
    *,
    consent: bool,
    customer_id: str | None,
    default_region: str,
) -> Buyer:
    billing_region = _country(billing) or default_region
    return Buyer(
        phone_e164=first_valid_phone(
            [
                (billing.get("phone"), billing_region),
                (shipping.get("phone"), _country(shipping) or billing_region),
            ],
            default_region,
        ),
        email=(clean_text(billing.get("email")) or "").lower() or None,
        first_name=clean_text(billing.get("first_name")) or clean_text(shipping.get("first_name")),
        customer_id=customer_id,
        marketing_consent=consent,
        consent_source=ConsentSource.CHECKOUT_CHECKBOX if consent else ConsentSource.UNKNOWN,
    )


def _named_line(raw: Any, where: str) -> tuple[dict[str, Any], int, str]:
    """A line's object, quantity and name, or PayloadError naming what is wrong."""
    if not isinstance(raw, dict):
        raise PayloadError(f"{where} must be an object")
    quantity = line_quantity(raw, where)
    name = clean_text(raw.get("name"))
    if name is None:
        raise PayloadError(f"{where}.name is required")
    return raw, quantity, name


def _order_line(item: Any, index: int, *, with_tax: bool) -> CartLine:
    where = f"line_items[{index}]"
    raw, quantity, name = _named_line(item, where)
    # ``price`` is a JSON float in WooCommerce's REST output; ``subtotal`` (before coupons) is
    # the line's exact decimal string.
    subtotal = parse_decimal(require(raw, "subtotal", str), f"{where}.subtotal")
    if with_tax:
        # A store whose prices include tax (GST-inclusive, common in India) shows the shopper
        # the price with it; the REST line keeps the tax apart.
        subtotal += parse_decimal(raw.get("subtotal_tax") or "0", f"{where}.subtotal_tax")
    variation_id = optional_str(raw, "variation_id")
    image = raw.get("image")
    return CartLine(
        title=name,
        quantity=quantity,
        unit_price=_unit_price(subtotal, quantity),
        product_id=optional_str(raw, "product_id"),
        variant_id=variation_id if variation_id not in (None, "0") else optional_str(raw, "product_id"),
        image_url=clean_text(image.get("src")) if isinstance(image, dict) else None,
    )


def _unit_price(line_total: Decimal, quantity: int) -> Decimal:
    unit = line_total / quantity
    # Exact when it divides; else to 4 places (the database keeps NUMERIC(18, 4)).
    return unit if unit == unit.quantize(Decimal("0.0001")) else unit.quantize(Decimal("0.0001"))


def _order_cart_id(order_id: str, meta: Mapping[str, Any]) -> str:
    plugin_cart_id = meta.get(META_CART_ID)
    if isinstance(plugin_cart_id, str) and PLUGIN_CART_ID.match(plugin_cart_id):
        return plugin_cart_id
    return order_cart_token(order_id)


def _placed_at(payload: Mapping[str, Any]) -> datetime:
    if payload.get("date_paid_gmt"):
        return parse_gmt(payload["date_paid_gmt"], "date_paid_gmt")
    # Placed unpaid (cash on delivery, a bank transfer on hold): when the shopper placed it, not
    # when the merchant later confirmed the money.
    return parse_gmt(payload.get("date_created_gmt"), "date_created_gmt")


def _needs_payment(payload: Mapping[str, Any], status: str, total: Decimal) -> bool:
    needs = payload.get("needs_payment")
    if isinstance(needs, bool):
        return needs
    # Older WooCommerce has no needs_payment: an unpaid status with something to pay.
    return status in UNPAID_STATUSES and total > 0


def order(payload: dict[str, Any], default_region: str) -> WebhookEvent:
    order_id = platform_id(payload, "id")
    status = require(payload, "status", str).strip().lower()
    meta = _meta(payload)
    billing = optional_object(payload, "billing")
    shipping = optional_object(payload, "shipping")
    currency = parse_currency(payload.get("currency"))
    total = parse_decimal(require(payload, "total", str), "total")
    customer_id = optional_str(payload, "customer_id")
    buyer = _buyer(
        billing,
        shipping,
        consent=_truthy(meta.get(META_OPT_IN)) or _truthy(meta.get(META_BLOCK_OPT_IN)),
        customer_id=customer_id if customer_id not in (None, "0") else None,
        default_region=default_region,
    )
    if status in PLACED_STATUSES or payload.get("date_paid_gmt"):
        codes = payload.get("coupon_lines") or []
        if not isinstance(codes, list) or not all(
            isinstance(entry, dict) and isinstance(entry.get("code"), str) for entry in codes
        ):
            raise PayloadError("coupon_lines must be a list of {code: string}")
        return OrderEvent(
            order_id=order_id,
            # When the shopper completed it: an order left pending at 09:00 and paid after a
            # reminder at 09:40 was bought at 09:40 (attribution counts from the message).
            created_at=_placed_at(payload),
            currency=currency,
            total=total,
            cart_id=_order_cart_id(order_id, meta),
            cart_token=order_cart_token(order_id),
            # WooCommerce keeps coupon codes lower-case; ours are upper-case, matched either way.
            discount_codes=tuple(entry["code"].upper() for entry in codes),
            phone_e164=buyer.phone_e164,
            email=buyer.email,
            raw=payload,
            status=order_status(order_id, payload),
        )
    if status in SETTLED_STATUSES:
        # A placed order cancelled or refunded since (a COD parcel returned has no payment
        # date): recovered revenue changes if a recovered cart has it.
        return OrderChanged(
            order_id=order_id,
            occurred_at=parse_gmt(payload.get("date_modified_gmt"), "date_modified_gmt"),
            status=order_status(order_id, payload),
        )
    if status not in UNPAID_STATUSES:
        # Cancelled is how WooCommerce ends an unpaid order once its held stock times out: the
        # shopper's sequence goes on, rebuilt as a new checkout at the click.
        return Ignored(f"order {status}: not an abandoned payment")
    created_via = (optional_str(payload, "created_via") or "").lower()
    if created_via not in SHOPPER_CHANNELS:
        return Ignored(
            f"order created via {created_via or 'an unknown channel'}, not by a shopper at checkout"
        )
    if (optional_str(payload, "payment_method") or "").lower() == CASH_ON_DELIVERY:
        return Ignored("cash on delivery: nothing is left to pay online")
    if not _needs_payment(payload, status, total):
        return Ignored(f"order {status} but nothing left to pay")
    raw_lines = line_list(payload, "line_items")
    with_tax = payload.get("prices_include_tax") is True
    lines = tuple(_order_line(raw, index, with_tax=with_tax) for index, raw in enumerate(raw_lines))
    modified = parse_gmt(payload.get("date_modified_gmt"), "date_modified_gmt")
    return CartSnapshot(
        cart_id=_order_cart_id(order_id, meta),
        cart_token=order_cart_token(order_id),
        # WooCommerce keeps whole seconds; the plugin's captures of the same cart keep
        # microseconds. The order is the later word on the cart: it counts from its second's end.
        updated_at=modified + timedelta(microseconds=999_999),
        # The shopper's part ended when they placed it; later changes are the merchant's, the
        # payment gateway's or cartback's own coupon, none of which should re-time reminders.
        activity_at=parse_gmt(payload.get("date_created_gmt"), "date_created_gmt"),
        currency=currency,
        subtotal=sum((line.line_total for line in lines), Decimal(0)),
        total=total,
        lines=lines,
        buyer=buyer,
        checkout_url=clean_text(payload.get("payment_url")),
        # The order's own email: a coupon restricted to it is one the order accepts.
        billing={"email": buyer.email} if buyer.email else {},
        raw=payload,
    )


# -- the companion plugin -------------------------------------------------------------------


def _plugin_cart_id(payload: Mapping[str, Any]) -> str:
    cart_id: str = require(payload, "cart_id", str)
    if not PLUGIN_CART_ID.match(cart_id):
        raise PayloadError("cart_id must be 8-64 letters, digits, - or _")
    return cart_id


def _plugin_line(item: Any, index: int) -> CartLine:
    where = f"items[{index}]"
    raw, quantity, name = _named_line(item, where)
    product_id = platform_id(raw, "product_id")
    variation_id = optional_str(raw, "variation_id")
    return CartLine(
        title=name,
        quantity=quantity,
        unit_price=parse_decimal(require(raw, "price", str), f"{where}.price"),
        product_id=product_id,
        variant_id=variation_id if variation_id not in (None, "0") else product_id,
        variant_title=clean_text(raw.get("variation")),
        image_url=clean_text(raw.get("image")),
    )


def plugin_cart(payload: dict[str, Any], default_region: str) -> CartSnapshot:
    raw_lines = line_list(payload, "items")
    customer = optional_object(payload, "customer")
    opt_in = payload.get("whatsapp_optin", False)
    if not isinstance(opt_in, bool):
        raise PayloadError("whatsapp_optin must be true or false")
    return CartSnapshot(
        cart_id=_plugin_cart_id(payload),
        updated_at=parse_gmt(payload.get("updated_at_gmt"), "updated_at_gmt"),
        currency=parse_currency(payload.get("currency")),
        subtotal=parse_decimal(require(payload, "subtotal", str), "subtotal"),
        total=parse_decimal(require(payload, "total", str), "total"),
        lines=tuple(_plugin_line(raw, index) for index, raw in enumerate(raw_lines)),
        buyer=_buyer(
            customer,
            {},
            consent=opt_in,
            # The plugin sends 0 for a guest, as WooCommerce does.
            customer_id=None
            if optional_str(customer, "customer_id") in (None, "0")
            else optional_str(customer, "customer_id"),
            default_region=default_region,
        ),
        checkout_url=clean_text(payload.get("checkout_url")),
        billing=billing_details(payload),
        raw=payload,
    )


def plugin_cart_emptied(payload: dict[str, Any]) -> CartSnapshot:
    """The shopper emptied the cart: a snapshot with no lines stops its sequence (the same id
    filled again starts it again)."""
    return CartSnapshot(
        cart_id=_plugin_cart_id(payload),
        updated_at=parse_gmt(payload.get("updated_at_gmt"), "updated_at_gmt"),
        currency=parse_currency(payload.get("currency")),
        subtotal=Decimal(0),
        total=Decimal(0),
        lines=(),
        buyer=Buyer(),
        raw=payload,
    )


BILLING_FIELDS = (
    "first_name",
    "last_name",
    "company",
    "address_1",
    "address_2",
    "city",
    "state",
    "postcode",
    "country",
    "email",
    "phone",
)


def billing_details(payload: Mapping[str, Any]) -> dict[str, str]:
    """The billing fields a captured cart carries, for building its order at the click."""
    customer = payload.get("customer")
    if not isinstance(customer, dict):
        return {}
    return {name: value.strip() for name in BILLING_FIELDS if isinstance(value := customer.get(name), str)}


# -- reconciliation ---------------------------------------------------------------------------


def _refund_money(order: Mapping[str, Any], name: str) -> Decimal | None:
    value = order.get(name)
    if value is None:
        return None
    try:
        return parse_decimal(str(value).lstrip("-"), name)
    except PayloadError:
        return None


# Placed but not paid: a bank transfer or cheque on hold, an order still pending payment.
AWAITING_PAYMENT_STATUSES = frozenset({"pending", "on-hold"})


def order_status(order_id: str, order: Mapping[str, Any] | None) -> OrderStatus:
    """What an order body (REST or webhook) says of the order now: refunds, cancellation,
    payment; for reconciling recovered revenue."""
    if order is None or order.get("status") == "trash":
        return OrderStatus(order_id=order_id, found=False)
    refunded = sum(
        (
            _refund_money(refund, "total") or Decimal(0)
            for refund in order.get("refunds") or []
            if isinstance(refund, dict)
        ),
        Decimal(0),
    )
    total = _refund_money(order, "total")
    status = str(order.get("status") or "") or None
    cash_on_delivery = str(order.get("payment_method") or "").lower() == CASH_ON_DELIVERY
    cancelled_at = None
    if status in ("cancelled", "failed"):
        try:
            cancelled_at = parse_gmt(order.get("date_modified_gmt"), "date_modified_gmt")
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
        cancel_reason=status if status in ("cancelled", "failed") else None,
        cash_on_delivery=cash_on_delivery,
        # Cash on delivery is "processing" until the merchant completes it on delivery (WooCommerce
        # may set date_paid on entering "processing", so that date proves nothing for COD).
        awaiting_payment=status in AWAITING_PAYMENT_STATUSES or (cash_on_delivery and status == "processing"),
    )
