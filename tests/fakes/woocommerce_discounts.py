"""Coupons as WC_Discounts (includes/class-wc-discounts.php) checks and applies them.

``coupon_error`` is ``WC_Discounts::is_coupon_valid`` for an order or a cart: the same checks in
the same order, with WooCommerce's messages (they pass through ``esc_html__``, so the quotes
around a code arrive as ``&quot;``). ``Discounts`` splits a coupon over line items in cents the
way ``apply_coupon_percent`` / ``_fixed_product`` / ``_fixed_cart`` / ``_remainder`` do.

Not modelled: product categories (the fake's products have none, so a coupon restricted to
categories never applies), sale prices, and tentative ("held") coupon usage.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_FLOOR, ROUND_HALF_DOWN, Decimal

from tests.fakes.woocommerce_state import Coupon, Product
from tests.fakes.woocommerce_wp import decimal

CENTS = Decimal(100)  # wc_add_number_precision with 2 price decimals
PRODUCT_COUPON_TYPES = ("fixed_product", "percent")  # wc_get_product_coupon_types()
CART_COUPON_TYPES = ("fixed_cart",)  # wc_get_cart_coupon_types()


@dataclass(frozen=True)
class DiscountItem:
    key: int  # the order item id (or cart position)
    price: Decimal  # the line's subtotal, in cents
    quantity: int
    product: Product | None


def wc_price(amount: Decimal, symbol: str) -> str:
    """wc_price() for a left-positioned symbol, ',' thousands and 2 decimals."""
    text = f"{amount.quantize(Decimal('0.01')):,.2f}"
    return (
        '<span class="woocommerce-Price-amount amount"><bdi>'
        f'<span class="woocommerce-Price-currencySymbol">{symbol}</span>{text}</bdi></span>'
    )


def _quoted(template: str, code: str) -> str:
    # esc_html__ turns the literal quotes in the translated string into &quot;.
    return template.replace('"', "&quot;").replace("%s", code)


def not_found_message(code: str) -> str:
    return _quoted('Coupon "%s" cannot be applied because it does not exist.', code)


def usage_limit_message(code: str) -> str:
    return _quoted('Usage limit for coupon "%s" has been reached.', code)


def emails_allowed(emails: Iterable[str], restrictions: Sequence[str]) -> bool:
    """DiscountsUtil::is_coupon_emails_allowed: exact match, or '*' as a wildcard."""
    for email in emails:
        if email in restrictions:
            return True
        for restriction in restrictions:
            pattern = "^" + re.escape(restriction.lower()).replace(r"\*", "(.+)?") + "$"
            if re.match(pattern, email):
                return True
    return False


def valid_for_product(coupon: Coupon, product: Product | None) -> bool:
    """WC_Coupon::is_valid_for_product (no categories, no sale prices)."""
    if coupon.discount_type not in PRODUCT_COUPON_TYPES or product is None:
        return False
    ids = {product.id, product.parent_id}
    valid = not coupon.product_ids and not coupon.product_categories
    if coupon.product_ids and ids & set(coupon.product_ids):
        valid = True
    if coupon.excluded_product_ids and ids & set(coupon.excluded_product_ids):
        valid = False
    return valid


def coupon_error(
    coupon: Coupon | None,
    code: str,
    items: Sequence[DiscountItem],
    *,
    subtotal: Decimal,
    customer_id: int,
    emails: Sequence[str],
    now: datetime,
    currency_symbol: str,
) -> str | None:
    """The message WC_Discounts::is_coupon_valid returns, or None when the coupon is valid."""
    if coupon is None or coupon.status == "trash":
        return not_found_message(code)
    code = coupon.code
    if coupon.usage_limit and coupon.usage_count >= coupon.usage_limit:
        return usage_limit_message(code)
    per_user = coupon.usage_limit_per_user
    if customer_id and per_user > 0 and coupon.used_by.count(str(customer_id)) >= per_user:
        return usage_limit_message(code)
    if coupon.date_expires is not None and now > coupon.date_expires:
        return _quoted('Coupon "%s" has expired.', code)
    minimum, maximum = decimal(coupon.minimum_amount), decimal(coupon.maximum_amount)
    if minimum > 0 and minimum > subtotal:
        return (
            _quoted('The minimum spend for coupon "%s" is ', code) + wc_price(minimum, currency_symbol) + "."
        )
    if maximum > 0 and maximum < subtotal:
        return (
            _quoted('The maximum spend for coupon "%s" is ', code) + wc_price(maximum, currency_symbol) + "."
        )
    not_applicable = _quoted('Sorry, coupon "%s" is not applicable to selected products.', code)
    if coupon.product_ids and not any(
        item.product and {item.product.id, item.product.parent_id} & set(coupon.product_ids) for item in items
    ):
        return not_applicable
    if coupon.product_categories:
        return not_applicable  # the fake's products belong to no category
    product_type = coupon.discount_type in PRODUCT_COUPON_TYPES
    if items and product_type and not any(valid_for_product(coupon, item.product) for item in items):
        return not_applicable
    if coupon.discount_type not in PRODUCT_COUPON_TYPES and coupon.excluded_product_ids:
        excluded = [
            item.product.name
            for item in items
            if item.product and {item.product.id, item.product.parent_id} & set(coupon.excluded_product_ids)
        ]
        if excluded:
            message = 'Sorry, coupon "%s" is not applicable to the products: '.replace('"', "&quot;")
            return message.replace("%s", code) + ", ".join(excluded) + "."
    if coupon.email_restrictions:
        checked = sorted({email.strip().lower() for email in emails if email and email.strip()})
        if not emails_allowed(checked, [r.lower() for r in coupon.email_restrictions]):
            # E_WC_COUPON_NOT_YOURS_REMOVED without a posted billing_email (a REST or cart request).
            return _quoted('Please enter a valid email at checkout to use coupon code "%s".', code)
    return None


class Discounts:
    """Per-item discounts in cents, coupon by coupon, as WC_Discounts::apply_coupon computes them."""

    def __init__(self, items: Sequence[DiscountItem]) -> None:
        # sort_by_price: by price x quantity, largest first (stable for ties, like uasort on PHP 8).
        self.items = sorted(items, key=lambda item: item.price * item.quantity, reverse=True)
        self.by_coupon: dict[str, dict[int, Decimal]] = {}

    def discounted_price(self, item: DiscountItem) -> Decimal:
        taken = sum(
            (discounts.get(item.key, Decimal(0)) for discounts in self.by_coupon.values()), Decimal(0)
        )
        return max(Decimal(0), (item.price - taken).to_integral_value(rounding=ROUND_HALF_DOWN))

    def apply(self, coupon: Coupon) -> Decimal:
        """Apply ``coupon`` (already validated) and return its total discount in cents."""
        self.by_coupon.setdefault(coupon.code, {item.key: Decimal(0) for item in self.items})
        targets = [
            item
            for item in self.items
            if self.discounted_price(item) > 0
            and item.quantity > 0
            and (valid_for_product(coupon, item.product) or coupon.discount_type in CART_COUPON_TYPES)
        ]
        if coupon.discount_type == "percent":
            self._percent(coupon, targets)
        elif coupon.discount_type == "fixed_product":
            self._fixed_product(coupon, targets, None)
        else:
            self._fixed_cart(coupon, targets, None)
        return sum(self.by_coupon[coupon.code].values(), Decimal(0))

    def _add(self, coupon: Coupon, item: DiscountItem, amount: Decimal) -> None:
        self.by_coupon[coupon.code][item.key] += amount

    def _percent(self, coupon: Coupon, items: list[DiscountItem]) -> None:
        limit = coupon.limit_usage_to_x_items or 0
        total = cart_total = Decimal(0)
        applied = 0
        for item in items:
            discounted = self.discounted_price(item)
            quantity = limit - applied if limit and limit - applied < item.quantity else item.quantity
            quantity = max(0, quantity)
            price = item.price / item.quantity * quantity
            discount = (price * coupon.amount / 100).to_integral_value(rounding=ROUND_FLOOR)
            discount = min(discounted, discount).to_integral_value(rounding=ROUND_HALF_DOWN)
            cart_total += price
            total += discount
            applied += quantity
            self._add(coupon, item, discount)
        whole = (cart_total * coupon.amount / 100).to_integral_value(rounding=ROUND_HALF_DOWN)
        if total < whole:
            self._remainder(coupon, items, whole - total)

    def _fixed_product(self, coupon: Coupon, items: list[DiscountItem], amount: Decimal | None) -> Decimal:
        per_unit = amount if amount else coupon.amount * CENTS
        limit = coupon.limit_usage_to_x_items or 0
        total = Decimal(0)
        applied = 0
        for item in items:
            discounted = self.discounted_price(item)
            if limit:
                quantity = max(0, limit - applied if limit - applied < item.quantity else item.quantity)
                discount = min(per_unit, item.price / item.quantity) * quantity
            else:
                quantity = item.quantity
                discount = per_unit * quantity
            discount = min(discounted, discount)
            total += discount
            applied += quantity
            self._add(coupon, item, discount)
        return total

    def _fixed_cart(self, coupon: Coupon, items: list[DiscountItem], amount: Decimal | None) -> Decimal:
        amount = amount if amount else coupon.amount * CENTS
        items = [item for item in items if self.discounted_price(item) > 0]
        count = sum(item.quantity for item in items)
        if not count:
            return Decimal(0)
        if not amount:
            return self._fixed_product(coupon, items, Decimal(0))
        per_item = (amount / count).to_integral_value(rounding=ROUND_FLOOR)
        if per_item > 0:
            total = self._fixed_product(coupon, items, per_item)
            if 0 < total < amount:
                total += self._fixed_cart(coupon, items, amount - total)
            return total
        return self._remainder(coupon, items, amount) if amount > 0 else Decimal(0)

    def _remainder(self, coupon: Coupon, items: list[DiscountItem], amount: Decimal) -> Decimal:
        total = Decimal(0)
        for item in items:
            for _ in range(item.quantity):
                discount = min(self.discounted_price(item), Decimal(1))
                total += discount
                self._add(coupon, item, discount)
                if total >= amount:
                    return total
        return total

    def item_discount(self, key: int) -> Decimal:
        return sum((discounts.get(key, Decimal(0)) for discounts in self.by_coupon.values()), Decimal(0))
