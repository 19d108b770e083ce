"""The fake WooCommerce site's own rules: orders, their totals and statuses, coupons on orders,
coupon usage counts, and the events (webhook topics) each change fires.

Sources (woocommerce/woocommerce, plugins/woocommerce/includes): abstracts/abstract-wc-order.php
(apply_coupon, remove_coupon, recalculate_coupons, calculate_totals), class-wc-order.php
(set_status, payment_complete, status transitions), wc-coupon-functions.php
(wc_update_coupon_usage_counts), class-wc-coupon.php (setters), and the order data stores for
which action each save fires (woocommerce_new_order / woocommerce_update_order).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import secrets
import string
from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from tests.fakes.woocommerce_discounts import (
    CENTS,
    DiscountItem,
    Discounts,
    coupon_error,
    usage_limit_message,
)
from tests.fakes.woocommerce_state import (
    BILLING_FIELDS,
    SHIPPING_FIELDS,
    ApiKey,
    Coupon,
    CouponLine,
    LineItem,
    Meta,
    Order,
    Product,
    Refund,
    Webhook,
)
from tests.fakes.woocommerce_wp import RestError, decimal

CURRENCY_SYMBOLS = {"INR": "₹", "USD": "$", "EUR": "€", "GBP": "£", "AUD": "$", "CAD": "$", "SGD": "$"}
CURRENCY_ENTITIES = {"INR": "&#8377;", "USD": "&#36;", "EUR": "&euro;", "GBP": "&pound;"}
DRAFT_STATUSES = ("auto-draft", "draft", "checkout-draft")  # no woocommerce_new_order while in these
PAID_STATUSES = ("processing", "completed")  # wc_get_is_paid_statuses()
USAGE_HOOK_STATUSES = ("pending", "processing", "completed", "on-hold", "cancelled")
PAYMENT_COMPLETE_FROM = (
    "on-hold",
    "pending",
    "failed",
    "cancelled",
)  # woocommerce_valid_order_statuses_for_payment_complete


class Site:
    """One WordPress + WooCommerce site's data and the operations on it (no HTTP here)."""

    def __init__(
        self,
        *,
        name: str = "Bazaar",
        currency: str = "INR",
        default_country: str = "IN:KA",
        timezone: str = "Asia/Kolkata",
        admin_email: str = "owner@bazaar.example",
    ) -> None:
        self.url = ""  # https://127.0.0.1:{port}, set when the server starts
        self.name = name
        self.description = ""
        self.currency = currency
        self.default_country = default_country
        self.timezone_string = timezone
        self.timezone = ZoneInfo(timezone)
        self.admin_user_id = 1
        self.admin_email = admin_email
        self.customers: dict[int, str] = {}  # registered customers: user id -> email
        self.products: dict[int, Product] = {}
        self.orders: dict[int, Order] = {}
        self.coupons: dict[int, Coupon] = {}
        self.webhooks: dict[int, Webhook] = {}
        self.keys: dict[str, ApiKey] = {}  # by consumer_key
        self.events: list[tuple[str, int]] = []  # (topic, resource id) fired since the last drain
        self._post_ids = itertools.count(1001)  # orders, refunds and coupons share the posts sequence
        self._item_ids = itertools.count(1)
        self._meta_ids = itertools.count(1)
        self._webhook_ids = itertools.count(1)
        self._key_ids = itertools.count(1)

    # --- basics ----------------------------------------------------------------------------

    @property
    def gmt_offset(self) -> float:
        offset = datetime.now(UTC).astimezone(self.timezone).utcoffset()
        return round(offset.total_seconds() / 3600, 2) if offset is not None else 0.0

    def rest_url(self, route: str) -> str:
        return f"{self.url}/wp-json{route}"

    @staticmethod
    def now() -> datetime:
        return datetime.now(UTC).replace(microsecond=0)

    def currency_symbol(self, currency: str) -> str:
        return CURRENCY_SYMBOLS.get(currency, currency)

    def next_post_id(self) -> int:
        taken = set(self.products) | set(self.orders) | set(self.coupons)
        return next(post_id for post_id in self._post_ids if post_id not in taken)

    def next_webhook_id(self) -> int:
        return next(self._webhook_ids)  # webhooks have their own table (wc_webhooks)

    def meta(self, key: str, value: Any) -> Meta:
        return Meta(next(self._meta_ids), key, value)

    def fire(self, topic: str, resource_id: int) -> None:
        self.events.append((topic, resource_id))

    def drain_events(self) -> list[tuple[str, int]]:
        """The events of one request or helper call, each (topic, id) once (is_already_processed)."""
        drained = list(dict.fromkeys(self.events))
        self.events.clear()
        return drained

    # --- keys ------------------------------------------------------------------------------

    def add_key(self, permissions: str, description: str) -> ApiKey:
        if permissions not in ("read", "write", "read_write"):
            raise ValueError(f"unknown permissions {permissions!r}")
        key = ApiKey(
            key_id=next(self._key_ids),
            user_id=self.admin_user_id,
            consumer_key="ck_" + secrets.token_hex(20),  # wc_rand_hash(): 40 hex characters
            consumer_secret="cs_" + secrets.token_hex(20),
            permissions=permissions,
            description=description,
        )
        self.keys[key.consumer_key] = key
        return key

    # --- orders: line items and totals -----------------------------------------------------

    def product(self, product_id: int) -> Product | None:
        """wc_get_product: products and variations share the posts table (and this dict)."""
        return self.products.get(product_id)

    def new_line_item(self, product: Product | None, quantity: int, name: str | None = None) -> LineItem:
        price = product.price * quantity if product else Decimal(0)
        label = name if name is not None else (product.name if product else "")
        return LineItem(
            id=next(self._item_ids),
            name=label,
            product_id=(product.parent_id or product.id) if product else 0,
            variation_id=product.id if product and product.parent_id else 0,
            quantity=quantity,
            subtotal=price,
            total=price,
            product=product,
        )

    def calculate_totals(self, order: Order) -> None:
        """WC_Abstract_Order::calculate_totals without taxes, shipping or fees."""
        order.discount_total = order.subtotal - sum((item.total for item in order.line_items), Decimal(0))
        order.total = max(Decimal(0), sum((item.total for item in order.line_items), Decimal(0)))

    def _discount_items(self, order: Order) -> list[DiscountItem]:
        return [
            DiscountItem(item.id, item.subtotal * CENTS, item.quantity, item.product)
            for item in order.line_items
        ]

    def recalculate_coupons(self, order: Order) -> None:
        """Re-apply every coupon on the order to the line items, then total the order."""
        for item in order.line_items:
            item.total = item.subtotal
        discounts = Discounts(self._discount_items(order))
        for line in order.coupon_lines:
            coupon = self.coupon_by_code(line.code) or Coupon(
                0,
                line.code,
                order.date_created,
                order.date_created,
                amount=line.nominal_amount,
                discount_type=line.discount_type,
            )
            line.discount = discounts.apply(coupon) / CENTS
        for item in order.line_items:
            item.total = max(Decimal(0), item.total - discounts.item_discount(item.id) / CENTS)
        self.calculate_totals(order)

    # --- orders: saving and statuses -------------------------------------------------------

    def save_order(self, order: Order, *, new: bool = False) -> None:
        """A data-store save: bump date_modified and fire the action the data store fires."""
        order.date_modified = self.now()
        if order.status == "trash":
            return
        if new:
            if order.status not in DRAFT_STATUSES:
                self.fire("order.created", order.id)
            return
        self.fire("order.updated", order.id)

    def set_status(self, order: Order, status: str) -> None:
        """WC_Order::set_status + save, with the transition's side effects."""
        previous = order.status
        order.status = status
        if previous == status:
            self.save_order(order)
            return
        if status in PAID_STATUSES and order.date_paid is None:
            order.date_paid = self.now()
        if status == "completed" and order.date_completed is None:
            order.date_completed = self.now()
        if status in USAGE_HOOK_STATUSES:
            self.update_coupon_usage_counts(order)
        if previous in DRAFT_STATUSES and status not in DRAFT_STATUSES:
            # Leaving a draft status fires woocommerce_new_order instead of woocommerce_update_order.
            order.date_modified = self.now()
            self.fire("order.created", order.id)
            return
        self.save_order(order)

    def payment_complete(self, order: Order, transaction_id: str = "") -> bool:
        """WC_Order::payment_complete."""
        if order.status not in PAYMENT_COMPLETE_FROM:
            return False
        if transaction_id:
            order.transaction_id = transaction_id
        if order.date_paid is None:
            order.date_paid = self.now()
        needs_processing = any(item.product is not None for item in order.line_items)
        self.set_status(order, "processing" if needs_processing else "completed")
        return True

    def refund(self, order: Order, amount: Decimal, reason: str = "") -> Refund:
        """wc_create_refund: a refund record; fully refunded orders become 'refunded'."""
        refund = Refund(self.next_post_id(), amount, reason, self.now())
        order.refunds.insert(0, refund)  # get_refunds(): newest first
        refunded = sum((r.amount for r in order.refunds), Decimal(0))
        if refunded >= order.total and order.status != "refunded":
            self.set_status(order, "refunded")
        else:
            self.save_order(order)
        return refund

    def trash(self, order: Order) -> None:
        order.status_before_trash = order.status
        order.status = "trash"
        order.date_modified = self.now()
        self.fire("order.deleted", order.id)

    def untrash(self, order: Order) -> None:
        order.status = order.status_before_trash or "pending"
        order.status_before_trash = None
        order.date_modified = self.now()
        self.fire("order.restored", order.id)

    # --- coupons on orders -----------------------------------------------------------------

    def coupon_by_code(self, code: str) -> Coupon | None:
        """wc_get_coupon_id_by_code: published coupons only, compared case-insensitively."""
        for coupon in self.coupons.values():
            if coupon.status == "publish" and coupon.code == code.lower():
                return coupon
        return None

    def _coupon_check(self, order: Order, code: str, items: list[DiscountItem] | None = None) -> str | None:
        return coupon_error(
            self.coupon_by_code(code),
            code,
            items if items is not None else self._discount_items(order),
            subtotal=order.subtotal,
            customer_id=order.customer_id,
            emails=[self.admin_email, order.billing.get("email", "")],  # the API user's email, then billing
            now=self.now(),
            currency_symbol=CURRENCY_ENTITIES.get(order.currency, order.currency),
        )

    def replace_coupons(self, order: Order, lines: list[Any]) -> None:
        """WC_REST_Orders_Controller::calculate_coupons: the given codes become the order's coupons."""
        current = [line.code for line in order.coupon_lines]
        codes: list[str] = []
        for line in lines:
            if not isinstance(line, dict):
                continue
            if line.get("id"):
                raise RestError(
                    "woocommerce_rest_coupon_item_id_readonly", "Coupon item ID is readonly.", 400
                )
            code = line.get("code")
            if not isinstance(code, str) or not code.strip():
                raise RestError("woocommerce_rest_invalid_coupon", "Coupon code is required.", 400)
            code = code.strip().lower()  # wc_format_coupon_code( wc_clean() )
            if code not in current:
                error = self._coupon_check(order, code)
                if error:
                    raise RestError("woocommerce_rest_invalid_coupon", error, 400)
            codes.append(code)
        for code in current:
            self.remove_coupon(order, code)
        for code in codes:
            self.apply_coupon(order, code)

    def apply_coupon(self, order: Order, code: str) -> None:
        """WC_Abstract_Order::apply_coupon (errors as the REST controller reports them)."""
        if any(line.code == code for line in order.coupon_lines):
            raise RestError("woocommerce_rest_invalid_coupon", "Coupon code already applied!", 400)
        error = self._coupon_check(order, code)
        if error:
            raise RestError("woocommerce_rest_invalid_coupon", error, 400)
        coupon = self.coupon_by_code(code)
        assert coupon is not None
        email = order.billing.get("email", "")
        per_user = coupon.usage_limit_per_user
        if order.customer_id == 0 and per_user > 0 and coupon.used_by.count(email) >= per_user:
            raise RestError("woocommerce_rest_invalid_coupon", usage_limit_message(code), 400)
        short_info = [
            coupon.id,
            coupon.code,
            None if coupon.discount_type == "fixed_cart" else coupon.discount_type,
        ]
        short_info.append(float(coupon.amount))
        if coupon.free_shipping:
            short_info.append(True)
        order.coupon_lines.append(
            CouponLine(
                id=next(self._item_ids),
                code=code,
                discount=Decimal(0),
                meta=[self.meta("coupon_info", _php_json(short_info))],
                discount_type=coupon.discount_type,
                nominal_amount=coupon.amount,
                free_shipping=coupon.free_shipping,
            )
        )
        self.recalculate_coupons(order)
        self.save_order(order)
        used_by = str(order.customer_id) if order.customer_id else email
        if order.recorded_coupon_usage:
            _increase_usage(coupon, used_by)
        self.update_coupon_usage_counts(order)

    def remove_coupon(self, order: Order, code: str) -> None:
        """WC_Abstract_Order::remove_coupon: uncounts the coupon for the order's user id only."""
        order.coupon_lines = [line for line in order.coupon_lines if line.code != code]
        coupon = self.coupon_by_code(code)
        if coupon is not None:
            _decrease_usage(coupon, str(order.customer_id) if order.customer_id else "")
        self.recalculate_coupons(order)
        self.save_order(order)

    def update_coupon_usage_counts(self, order: Order) -> None:
        """wc_update_coupon_usage_counts."""
        used_by = str(order.customer_id) if order.customer_id else order.billing.get("email", "")
        if order.status == "cancelled" and order.recorded_coupon_usage:
            order.recorded_coupon_usage = False
            change = _decrease_usage
        elif order.status != "cancelled" and not order.recorded_coupon_usage:
            order.recorded_coupon_usage = True
            change = _increase_usage
        else:
            return
        for line in order.coupon_lines:
            coupon = self.coupon_by_code(line.code)
            if coupon is not None:
                change(coupon, used_by)


def _increase_usage(coupon: Coupon, used_by: str) -> None:
    coupon.usage_count += 1
    if used_by:
        coupon.used_by.append(used_by)


def _decrease_usage(coupon: Coupon, used_by: str) -> None:
    coupon.usage_count = max(0, coupon.usage_count - 1)
    if used_by and used_by in coupon.used_by:
        coupon.used_by.remove(used_by)


def _php_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def update_meta(site: Site, meta: list[Meta], values: Iterable[Any]) -> None:
    """WC_Data::update_meta_data for each {key, value[, id]}: a null value deletes on save."""
    for entry in values:
        if not isinstance(entry, dict) or "key" not in entry:
            continue
        key, value, meta_id = str(entry["key"]), entry.get("value"), entry.get("id")
        target = next((m for m in meta if meta_id and m.id == meta_id), None)
        if target is not None:
            target.key, target.value = key, value
        else:
            matching = [m for m in meta if m.key == key]
            if matching:
                matching[0].value = value
                for duplicate in matching[1:]:
                    duplicate.value = None
            else:
                meta.append(site.meta(key, value))
    meta[:] = [m for m in meta if m.value is not None]


def order_key() -> str:
    """wc_generate_order_key: 'wc_order_' + wp_generate_password( 13, false )."""
    alphabet = string.ascii_letters + string.digits
    return "wc_order_" + "".join(secrets.choice(alphabet) for _ in range(13))


def cart_hash(items: Iterable[LineItem]) -> str:
    return hashlib.md5(
        repr([(item.product_id, item.variation_id, item.quantity) for item in items]).encode()
    ).hexdigest()


def place_storefront_order(
    site: Site,
    *,
    status: str,
    payment_method: str,
    payment_method_title: str,
    created_via: str,
    billing: dict[str, str],
    line_items: list[tuple[int, int, int]],
    meta_data: list[dict[str, Any]],
    customer_id: int,
) -> Order:
    """What the classic checkout leaves behind: an order created, then saved again."""
    now = site.now()
    order = Order(
        id=site.next_post_id(),
        status=status,
        currency=site.currency,
        order_key=order_key(),
        created_via=created_via,
        date_created=now,
        date_modified=now,
        customer_id=customer_id,
        payment_method=payment_method,
        payment_method_title=payment_method_title,
        customer_ip_address="203.0.113.24",
        customer_user_agent="Mozilla/5.0 (Linux; Android 14) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Mobile Safari/537.36",
    )
    for name, value in billing.items():
        if name not in BILLING_FIELDS:
            raise ValueError(f"unknown billing field {name!r}")
        order.billing[name] = value
    for name in SHIPPING_FIELDS:
        if name != "phone":
            order.shipping[name] = order.billing.get(name, "")
    for product_id, variation_id, quantity in line_items:
        product = site.product(variation_id or product_id)
        if product is None or (variation_id and product.parent_id != product_id):
            raise KeyError(f"no product {product_id}/{variation_id} in the fake's catalogue")
        order.line_items.append(site.new_line_item(product, quantity))
    update_meta(site, order.meta, meta_data)
    order.cart_hash = cart_hash(order.line_items)
    if status in PAID_STATUSES:  # the gateway took payment during checkout (payment_complete)
        order.date_paid = now
    if status == "completed":
        order.date_completed = now
    site.calculate_totals(order)
    site.orders[order.id] = order
    if customer_id and customer_id not in site.customers:
        site.customers[customer_id] = order.billing.get("email", "")
    site.save_order(order, new=True)
    site.save_order(order)  # checkout saves the order again (payment method, meta): order.updated
    if status in ("pending", "processing", "completed", "on-hold"):
        site.update_coupon_usage_counts(order)
    return order


def parse_money(amount: str) -> Decimal:
    value = decimal(amount)
    if value <= 0:
        raise ValueError(f"not a positive amount: {amount!r}")
    return value
