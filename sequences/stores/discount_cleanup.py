"""Delete platform discount codes that expired unused (`cartback purge`), so the merchant's
discount list does not fill up with dead recovery codes. Codes an order used stay: the order
refers to them."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from sqlmodel import col, select

from connectors.base import DeletesDiscounts, PlatformError, StoreAccess
from sequences.models import Discount, Store, StoreStatus
from sequences.runtime import Runtime
from sequences.stores.access import call_platform

log = logging.getLogger("cartback.discounts")


@dataclass
class CleanupReport:
    deleted: int = 0
    failed: int = 0


def _delete(deleter: DeletesDiscounts, platform_discount_id: str, _: object, access: StoreAccess) -> None:
    deleter.delete_discount(access, platform_discount_id)


def delete_expired_discounts(
    runtime: Runtime, progress: Callable[[str], None] = lambda _: None, *, store_id: int | None = None
) -> CleanupReport:
    """Every active store's expired unused codes, or one store's (its reconciliation run)."""
    report = CleanupReport()
    now = runtime.now()
    with runtime.database.session() as session:
        rows = session.exec(
            select(Discount.id, Discount.store_id, Discount.platform_discount_id, Store.platform)
            .join(Store, col(Store.id) == col(Discount.store_id))
            .where(
                col(Discount.platform_discount_id).is_not(None),
                col(Discount.platform_deleted_at).is_(None),
                col(Discount.redeemed_at).is_(None),
                col(Discount.ends_at) < now,
                Store.status == StoreStatus.ACTIVE,
            )
            .where(*([Discount.store_id == store_id] if store_id is not None else []))
            .order_by(col(Discount.id))
        ).all()
    for index, (discount_id, owner_id, platform_discount_id, platform) in enumerate(rows, start=1):
        deleter = runtime.connectors.capable(platform, DeletesDiscounts)
        if deleter is None or not platform_discount_id:
            continue
        try:
            call_platform(
                runtime,
                owner_id,
                partial(_delete, deleter, platform_discount_id),
                operation="delete_discount",
            )
        except PlatformError as exc:
            report.failed += 1
            log.warning(
                "expired discount not deleted", extra={"discount_id": discount_id, "reason": exc.reason}
            )
            continue
        with runtime.database.session() as session:
            discount = session.get(Discount, discount_id)
            if discount is not None:
                discount.platform_deleted_at = runtime.now()
                session.commit()
        report.deleted += 1
        if index % 50 == 0 or index == len(rows):
            progress(f"{index} of {len(rows)} expired codes handled")
    return report
