"""Re-read the orders of recovered carts so recovered revenue is verified revenue.

Orders get refunded and cancelled after the webhook that recovered the cart; the platform
is asked again (in batches) and the cart keeps the order's status, refunds and cancellation.
The dashboard counts a recovered cart's revenue as its total minus refunds, and nothing for a
cancelled order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from functools import partial

from sqlmodel import col, select

from connectors.base import OrderStatus, PlatformError, ReconcilesOrders, StoreAccess
from sequences.models import Cart, CartStatus, Store, StoreStatus
from sequences.runtime import Runtime
from sequences.stores.access import call_platform

log = logging.getLogger("cartback.reconcile")

# Orders asked about per platform call (Shopify's nodes(ids:) takes up to 250).
BATCH = 100
# Shopify shows apps only the last 60 days of orders without the read_all_orders scope, which
# cartback does not ask for; older orders are settled anyway.
LOOKBACK = timedelta(days=60)


@dataclass
class ReconcileReport:
    stores: int = 0
    checked: int = 0
    cancelled: int = 0
    refunded: int = 0
    partially_refunded: int = 0
    missing: int = 0
    failed_stores: int = 0

    def __str__(self) -> str:
        return (
            f"{self.checked} recovered orders checked in {self.stores} stores: {self.cancelled} cancelled, "
            f"{self.refunded} fully refunded, {self.partially_refunded} partly refunded, "
            f"{self.missing} no longer on the platform, {self.failed_stores} stores could not be reached"
        )


def _apply(cart: Cart, status: OrderStatus, report: ReconcileReport, now: datetime) -> None:
    cart.order_verified_at = now
    if not status.found:
        report.missing += 1
        cart.order_financial_status = "missing"
        return
    cart.order_financial_status = status.financial_status
    cart.order_cancelled_at = status.cancelled_at
    cart.order_refunded = status.refunded if status.refunded else Decimal(0)
    if status.cancelled_at is not None:
        report.cancelled += 1
    elif cart.order_total_store is not None and cart.order_refunded >= cart.order_total_store > 0:
        report.refunded += 1
    elif cart.order_refunded > 0:
        report.partially_refunded += 1


def _read(
    reconciler: ReconcilesOrders, order_ids: list[str], _: object, access: StoreAccess
) -> list[OrderStatus]:
    return reconciler.order_statuses(access, order_ids)


def reconcile_orders(
    runtime: Runtime,
    platform: str,
    *,
    store_ref: str | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> ReconcileReport:
    report = ReconcileReport()
    reconciler = runtime.connectors.capable(platform, ReconcilesOrders)
    if reconciler is None:
        raise ValueError(f"platform {platform!r} is not configured here or cannot re-read orders")
    with runtime.database.session() as session:
        query = select(Store.id, Store.platform_store_id).where(
            Store.platform == platform, Store.status == StoreStatus.ACTIVE
        )
        if store_ref:
            query = query.where(Store.platform_store_id == store_ref)
        stores = [(store_id, ref) for store_id, ref in session.exec(query).all() if store_id is not None]
    for store_id, ref in stores:
        report.stores += 1
        with runtime.database.session() as session:
            carts = session.exec(
                select(Cart.id, Cart.order_platform_id).where(
                    Cart.store_id == store_id,
                    Cart.status == CartStatus.RECOVERED,
                    col(Cart.order_platform_id).is_not(None),
                    col(Cart.ordered_at) >= runtime.now() - LOOKBACK,
                )
            ).all()
        orders = {order_id: cart_id for cart_id, order_id in carts if order_id and cart_id}
        order_ids = list(orders)
        for start in range(0, len(order_ids), BATCH):
            batch = order_ids[start : start + BATCH]
            try:
                statuses = call_platform(runtime, store_id, partial(_read, reconciler, batch))
            except PlatformError as exc:
                report.failed_stores += 1
                progress(f"{ref}: could not read orders ({exc.reason}); run again later")
                break
            with runtime.database.session() as session:
                for status in statuses:
                    cart = session.get(Cart, orders[status.order_id])
                    if cart is not None:
                        _apply(cart, status, report, runtime.now())
                        report.checked += 1
                session.commit()
            progress(f"{ref}: {min(start + BATCH, len(order_ids))} of {len(order_ids)} orders checked")
    log.info("reconciled", extra={"platform": platform, "report": str(report)})
    return report
