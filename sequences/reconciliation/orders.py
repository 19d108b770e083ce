"""Re-read the orders of recovered carts so the dashboard's revenue is the platform's.

After the webhook that recovered a cart, its order can be refunded (in part or whole),
cancelled (a cash-on-delivery parcel returned undelivered among them) or stay unpaid. The
platform is asked again, in batches: every week for each store's recovered orders of the last
60 days (``reconciliation.runs``), after each refund, cancellation or edit Shopify reports
(``recheck_order``), and on each WooCommerce sync round.

A recovered order's revenue is *reconciled* once the platform has confirmed it: paid (less its
refunds), or settled at nothing by a cancellation. Until then (cash on delivery not collected,
a bank transfer on hold, an order the platform no longer shows) it is *pending reconciliation*:
``Cart.order_verified_at`` is set only for confirmed orders, and the dashboard's kept figures
sum the two apart (``merchant.rollups``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from functools import partial

from sqlmodel import Session, col, select

from connectors.base import OrderStatus, PlatformError, ReconcilesOrders, StoreAccess
from sequences.db import lock_cart
from sequences.engine import timeline
from sequences.models import Cart, CartStatus, Store
from sequences.money import format_money
from sequences.runtime import Runtime
from sequences.stores.access import call_platform

log = logging.getLogger("cartback.reconcile")

# Orders asked about per platform call (Shopify's nodes(ids:) takes up to 250).
BATCH = 100
# Shopify shows apps only the last 60 days of orders without the read_all_orders scope, which
# cartback does not ask for; older orders are settled anyway.
LOOKBACK = timedelta(days=60)
ZERO = Decimal(0)


class Difference:
    """Kinds of difference between an order as placed and as the platform has it now."""

    PARTLY_REFUNDED = "partly_refunded"
    REFUNDED = "refunded"
    CANCELLED = "cancelled"
    COD_RETURNED = "cod_returned"
    AWAITING_PAYMENT = "awaiting_payment"
    MISSING = "missing"


@dataclass(frozen=True)
class OrderDifference:
    """One recovered order that does not count for what it was placed at, and why."""

    cart_id: int
    order_id: str
    kind: str
    # The order's total as placed and what it counts for now, in the store's currency; None
    # for "now" while it is pending (awaiting payment, missing).
    placed: Decimal | None
    confirmed: Decimal | None
    explanation: str
    # Found by this check (the figures held before it said otherwise).
    new: bool

    @property
    def amount(self) -> Decimal | None:
        """What the order's revenue changed by (negative for a refund or cancellation)."""
        if self.placed is None or self.confirmed is None:
            return None
        return self.confirmed - self.placed


@dataclass
class OrdersChecked:
    """What re-reading a store's recovered orders found. Amounts in the store's currency."""

    checked: int = 0
    confirmed: int = 0
    confirmed_amount: Decimal = ZERO
    placed_amount: Decimal = ZERO
    pending: int = 0
    pending_amount: Decimal = ZERO
    differences: list[OrderDifference] = field(default_factory=list)
    # Why the platform could not be read (the rest of the orders stay as they were).
    problem: str | None = None

    def count(self, kind: str) -> int:
        return sum(1 for difference in self.differences if difference.kind == kind)

    def __str__(self) -> str:
        text = (
            f"{self.checked} recovered orders checked: {self.confirmed} confirmed, {self.pending} pending, "
            f"{self.count(Difference.CANCELLED) + self.count(Difference.COD_RETURNED)} cancelled "
            f"({self.count(Difference.COD_RETURNED)} cash on delivery returned), "
            f"{self.count(Difference.REFUNDED)} fully refunded, {self.count(Difference.PARTLY_REFUNDED)} partly refunded, "
            f"{self.count(Difference.MISSING)} no longer on the platform"
        )
        return f"{text}; {self.problem}" if self.problem else text


def _when(moment: datetime | None) -> str:
    return f" on {moment:%d %b %Y}" if moment is not None else ""


def _explain(cart: Cart, status: OrderStatus, currency: str) -> tuple[str, Decimal | None, str] | None:
    """(kind, what the order counts for now, the reason in words), or None when it counts in
    full as placed."""
    placed = cart.order_total_store

    def money(amount: Decimal | None) -> str:
        return format_money(amount, currency) if amount is not None else "an amount in another currency"

    if not status.found:
        return (
            Difference.MISSING,
            None,
            "the platform no longer has this order (deleted?): its revenue stays pending until you "
            "check it in your store's admin",
        )
    if status.cancelled_at is not None:
        if status.cash_on_delivery and (status.refunded or ZERO) == 0:
            return (
                Difference.COD_RETURNED,
                ZERO,
                f"cash-on-delivery order cancelled before payment{_when(status.cancelled_at)} "
                f"(returned to origin): {money(placed)} not counted",
            )
        reason = f" (reason: {status.cancel_reason})" if status.cancel_reason else ""
        return (
            Difference.CANCELLED,
            ZERO,
            f"order cancelled{_when(status.cancelled_at)}{reason}: {money(placed)} not counted",
        )
    refunded = status.refunded or ZERO
    if placed is not None and refunded >= placed > 0:
        return Difference.REFUNDED, ZERO, f"fully refunded ({money(refunded)}): not counted"
    if refunded > 0:
        now = None if placed is None else placed - refunded
        return (
            Difference.PARTLY_REFUNDED,
            now,
            f"partly refunded: {money(refunded)} of {money(placed)} returned",
        )
    if status.awaiting_payment:
        what = "cash on delivery not collected yet" if status.cash_on_delivery else "payment not received yet"
        return (
            Difference.AWAITING_PAYMENT,
            None,
            f"{what} ({status.financial_status or 'unpaid'}): {money(placed)} pending until it is paid",
        )
    return None


def apply_status(
    session: Session, cart: Cart, status: OrderStatus, currency: str, now: datetime
) -> OrderDifference | None:
    """Record what the platform says of the cart's order on the (locked) cart."""
    assert cart.id is not None and cart.order_platform_id is not None
    before = (cart.order_refunded or ZERO, cart.order_cancelled_at, cart.order_verified_at is not None)
    explained = _explain(cart, status, currency)
    if status.found:
        cart.order_financial_status = status.financial_status
        cart.order_cancelled_at = status.cancelled_at
        cart.order_refunded = status.refunded or ZERO
    else:
        cart.order_financial_status = "missing"
    pending = explained is not None and explained[1] is None
    # Confirmed (paid, or settled by a refund or cancellation): reconciled revenue; else pending.
    cart.order_verified_at = None if pending else now
    after = (cart.order_refunded or ZERO, cart.order_cancelled_at, cart.order_verified_at is not None)
    if before != after and explained is not None and explained[0] != Difference.AWAITING_PAYMENT:
        timeline.record(session, cart, "order_reconciled", change=explained[0], explanation=explained[2])
    if explained is None:
        return None
    kind, confirmed, explanation = explained
    return OrderDifference(
        cart_id=cart.id,
        order_id=cart.order_platform_id,
        kind=kind,
        placed=cart.order_total_store,
        confirmed=confirmed,
        explanation=explanation,
        new=before != after,
    )


def _read(
    reconciler: ReconcilesOrders, order_ids: list[str], _: object, access: StoreAccess
) -> list[OrderStatus]:
    return reconciler.order_statuses(access, order_ids)


def recovered_orders(
    runtime: Runtime, store_id: int, since: datetime, *, until: datetime | None = None
) -> dict[str, int]:
    """The store's recovered orders placed in [since, until): order id -> cart id."""
    query = select(Cart.id, Cart.order_platform_id).where(
        Cart.store_id == store_id,
        Cart.status == CartStatus.RECOVERED,
        col(Cart.order_platform_id).is_not(None),
        col(Cart.ordered_at) >= since,
    )
    if until is not None:
        query = query.where(col(Cart.ordered_at) < until)
    with runtime.database.session() as session:
        rows = session.exec(query.order_by(col(Cart.id))).all()
    return {order_id: cart_id for cart_id, order_id in rows if order_id and cart_id}


def check_orders(
    runtime: Runtime,
    store_id: int,
    orders: dict[str, int],
    *,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> OrdersChecked:
    """Ask the platform about these orders (order id -> cart id) and record its answers."""
    result = OrdersChecked()
    with runtime.database.session() as session:
        store = session.get(Store, store_id)
        if store is None:
            result.problem = "the store is gone"
            return result
        platform, currency = store.platform, store.currency
    reconciler = runtime.connectors.capable(platform, ReconcilesOrders)
    if reconciler is None:
        result.problem = f"{platform} orders cannot be read again here"
        return result
    order_ids = list(orders)
    for start in range(0, len(order_ids), BATCH):
        batch = order_ids[start : start + BATCH]
        try:
            statuses = call_platform(
                runtime, store_id, partial(_read, reconciler, batch), operation="read_orders"
            )
        except PlatformError as exc:
            result.problem = f"could not read orders from {platform} ({exc.reason}); they stay as they were"
            break
        by_cart = sorted(
            (orders[status.order_id], status) for status in statuses if status.order_id in orders
        )
        with runtime.database.locked_session() as session:
            # Carts by id ascending: the lock order (sequences.db).
            for cart_id, status in by_cart:
                cart = lock_cart(session, cart_id)
                if (
                    cart is None
                    or cart.status != CartStatus.RECOVERED
                    or cart.order_platform_id != status.order_id
                ):
                    continue
                difference = apply_status(session, cart, status, currency, runtime.now())
                _count(result, cart, difference)
        progress(min(start + BATCH, len(order_ids)), len(order_ids))
    return result


def _count(result: OrdersChecked, cart: Cart, difference: OrderDifference | None) -> None:
    result.checked += 1
    placed = cart.order_total_store or ZERO
    result.placed_amount += placed
    if difference is not None:
        result.differences.append(difference)
    if difference is not None and difference.confirmed is None:
        result.pending += 1
        result.pending_amount += placed
        return
    result.confirmed += 1
    result.confirmed_amount += placed if difference is None else (difference.confirmed or ZERO)


def recheck_store(runtime: Runtime, store_id: int) -> OrdersChecked:
    """Every recovered order of the last 60 days, read again (WooCommerce's sync rounds)."""
    return check_orders(runtime, store_id, recovered_orders(runtime, store_id, runtime.now() - LOOKBACK))


def recheck_order(runtime: Runtime, store_id: int, order_id: str) -> str:
    """One recovered order, after the platform reported it changed (refund, cancellation)."""
    with runtime.database.session() as session:
        cart_id = session.exec(
            select(Cart.id).where(
                Cart.store_id == store_id,
                Cart.order_platform_id == order_id,
                Cart.status == CartStatus.RECOVERED,
            )
        ).first()
    if cart_id is None:
        return "no recovered cart has this order"
    result = check_orders(runtime, store_id, {order_id: cart_id})
    if result.problem:
        # The job's retries, then the weekly run, read it again.
        raise PlatformError(result.problem, retryable=True)
    return str(result)
