"""What a demo checkout costs: its lines from the catalogue, the subtotal, a discount's effect."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from demo.store.catalogue import CURRENCY, LOCALE, Product, product_for_variant
from demo.store.models import DemoCheckout, DemoDiscount
from sequences.money import format_money

CENT = Decimal("0.01")
# Most of one product a shopper can hold in the demo cart (keeps payloads valid and small).
MAX_QUANTITY = 99
# Permalink items: "8001:2,8002:1".
_ITEM = re.compile(r"^\s*(\d{1,12})\s*:\s*(\d{1,3})\s*$")
MAX_PERMALINK_ITEMS = 20
# updated_at must strictly increase on every change; SQLite keeps microseconds.
TICK = timedelta(microseconds=1)


@dataclass(frozen=True)
class Line:
    product: Product
    quantity: int

    @property
    def line_total(self) -> Decimal:
        return self.product.price * self.quantity


def lines_of(checkout: DemoCheckout) -> list[Line]:
    """The checkout's lines, skipping any variant the catalogue no longer has."""
    lines = []
    for entry in checkout.lines:
        product = product_for_variant(int(entry["variant_id"]))
        if product is not None and int(entry["qty"]) > 0:
            lines.append(Line(product, int(entry["qty"])))
    return lines


def subtotal_of(lines: list[Line]) -> Decimal:
    return sum((line.line_total for line in lines), Decimal("0.00"))


def add_line(checkout: DemoCheckout, variant_id: int, quantity: int) -> None:
    entries = [dict(entry) for entry in checkout.lines]
    for entry in entries:
        if entry["variant_id"] == variant_id:
            entry["qty"] = min(MAX_QUANTITY, entry["qty"] + quantity)
            break
    else:
        entries.append({"variant_id": variant_id, "qty": min(MAX_QUANTITY, quantity)})
    # A new list, so SQLAlchemy sees the JSON column change.
    checkout.lines = entries


def touch(checkout: DemoCheckout, now: datetime) -> None:
    """Record a change: updated_at moves forward even when two changes share a clock tick."""
    previous = checkout.updated_at
    checkout.updated_at = now if previous is None or now > previous else previous + TICK


def parse_items(items: str) -> list[dict[str, int]] | None:
    """Permalink items "8001:2,8002:1" as checkout lines; None when malformed or unknown."""
    parts = [part for part in items.split(",") if part.strip()]
    if not parts or len(parts) > MAX_PERMALINK_ITEMS:
        return None
    lines: dict[int, int] = {}
    for part in parts:
        match = _ITEM.match(part)
        if match is None:
            return None
        variant_id, quantity = int(match.group(1)), int(match.group(2))
        if product_for_variant(variant_id) is None or quantity < 1:
            return None
        lines[variant_id] = min(MAX_QUANTITY, lines.get(variant_id, 0) + quantity)
    return [{"variant_id": variant_id, "qty": qty} for variant_id, qty in lines.items()]


def money(amount: Decimal) -> str:
    return format_money(amount, CURRENCY, LOCALE)


def discount_value(discount: DemoDiscount, subtotal: Decimal) -> Decimal:
    """What the code takes off this subtotal (percent offers capped by max_amount)."""
    if discount.kind == "percent":
        amount = (subtotal * discount.value / 100).quantize(CENT, rounding=ROUND_HALF_UP)
        if discount.max_amount is not None:
            amount = min(amount, discount.max_amount)
    else:
        amount = discount.value
    return min(amount, subtotal).quantize(CENT)


@dataclass(frozen=True)
class AppliedDiscount:
    """A code as the checkout sees it: ``amount`` when it applies, else a note for the shopper."""

    code: str
    amount: Decimal | None = None
    note: str | None = None


def apply_discount(
    discount: DemoDiscount | None, code: str, subtotal: Decimal, currency: str, now: datetime
) -> AppliedDiscount:
    if discount is None:
        return AppliedDiscount(code, note=f"The code {code} isn't valid for this store.")
    if discount.ends_at <= now:
        return AppliedDiscount(code, note=f"The offer {code} has expired, so no discount is applied.")
    if discount.usage_limit is not None and discount.times_used >= discount.usage_limit:
        return AppliedDiscount(code, note=f"The code {code} has already been used.")
    if discount.currency != currency:
        return AppliedDiscount(code, note=f"The code {code} can't be used with this currency.")
    if discount.min_subtotal is not None and subtotal < discount.min_subtotal:
        return AppliedDiscount(
            code, note=f"The code {code} applies to orders of {money(discount.min_subtotal)} or more."
        )
    amount = discount_value(discount, subtotal)
    if amount <= 0:
        return AppliedDiscount(code, note=f"The code {code} takes nothing off this order.")
    return AppliedDiscount(code, amount=amount)
