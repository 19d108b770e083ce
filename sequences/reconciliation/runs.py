"""Reconciliation runs: weekly per store (the sweep queues them), on a merchant's click, or from
`cartback reconcile`; each leaves a report.

A run re-reads every order counted as recovered in its period (the last 60 days: the orders
Shopify still shows an app), deletes the store's discount codes that expired unused and counts
what its codes did, and compares a week of messaging cost with Meta's figures. Its progress
(orders read of orders to read) is written as it goes, so a page can show it; a run whose
worker died is failed by the sweep, and the next one starts from scratch (every step is safe to
repeat).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import suppress
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from redis.exceptions import RedisError
from rq.exceptions import DuplicateJobError
from sqlalchemy import func, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from sequences import queue
from sequences.models import Discount, ReconciliationRun, RunStatus, RunTrigger, Store, StoreStatus
from sequences.reconciliation import messaging
from sequences.reconciliation.orders import LOOKBACK, OrdersChecked, check_orders, recovered_orders
from sequences.runtime import Runtime
from sequences.stores.discount_cleanup import delete_expired_discounts

log = logging.getLogger("cartback.reconcile")

# Each store is reconciled this often (scaled by CARTBACK_TIME_SCALE in the demo).
RUN_EVERY = timedelta(days=7)
# Whole UTC days of messaging cost compared (Meta's figures for today are not final).
COST_DAYS = 7
# A run queued this long never reached a worker (Redis lost it): queued again.
REQUEUE_AFTER = timedelta(minutes=10)
# A run still "running" after this lost its worker: failed, so the next can start. A store's
# 60 days of orders are read in well under this (100 per call).
STALE_AFTER = timedelta(hours=2)
# Stores the sweep queues a run for at once: a fleet installed the same week spreads out.
QUEUE_BATCH = 50
CENTS = Decimal("0.01")


def _money(amount: Decimal | None) -> str | None:
    return None if amount is None else str(amount.quantize(CENTS, rounding=ROUND_HALF_UP))


def _enqueue(runtime: Runtime, run_id: int) -> None:
    options = queue.JobOptions(
        f"reconcile-run-{run_id}",
        "reconciliation run",
        job_timeout=int(STALE_AFTER.total_seconds()),
        retry_intervals=(),
    )
    with suppress(DuplicateJobError):
        queue.enqueue(runtime.queue, queue.RECONCILE_STORE, run_id, options=options)


def open_run(
    runtime: Runtime, store_id: int, trigger: RunTrigger, *, enqueue: bool = True
) -> ReconciliationRun:
    """The store's open run, or a new one queued now (one open run per store at a time)."""
    now = runtime.now()
    with runtime.database.session() as session:
        run = ReconciliationRun(
            store_id=store_id,
            trigger=trigger,
            period_start=now - LOOKBACK,
            period_end=now,
            created_at=now,
        )
        session.add(run)
        try:
            session.commit()
            session.refresh(run)
        except IntegrityError:
            session.rollback()
            existing = session.exec(
                select(ReconciliationRun).where(
                    ReconciliationRun.store_id == store_id,
                    col(ReconciliationRun.status).in_([RunStatus.QUEUED, RunStatus.RUNNING]),
                )
            ).first()
            if existing is None:  # it finished between the insert and this read
                return open_run(runtime, store_id, trigger, enqueue=enqueue)
            return existing
    assert run.id is not None
    if enqueue:
        try:
            _enqueue(runtime, run.id)
        except RedisError:
            log.warning("reconciliation not enqueued: Redis unreachable", extra={"run_id": run.id})
    return run


def queue_due(runtime: Runtime) -> int:
    """The sweep's part: a run for each active store not reconciled for a week; runs lost on
    the way to a worker queued again, runs whose worker died failed."""
    now = runtime.now()
    every = RUN_EVERY / runtime.time_scale
    with runtime.database.session() as session:
        session.execute(
            update(ReconciliationRun)
            .where(
                col(ReconciliationRun.status) == RunStatus.RUNNING,
                col(ReconciliationRun.started_at) < now - STALE_AFTER,
            )
            .values(
                status=RunStatus.FAILED,
                finished_at=now,
                problem="the worker running it stopped; the next run starts from scratch",
            )
        )
        session.commit()
        lost = session.exec(
            select(ReconciliationRun.id).where(
                ReconciliationRun.status == RunStatus.QUEUED,
                col(ReconciliationRun.created_at) < now - REQUEUE_AFTER,
            )
        ).all()
        recent = (
            select(ReconciliationRun.store_id)
            .where(col(ReconciliationRun.created_at) > now - every)
            .scalar_subquery()
        )
        due = session.exec(
            select(Store.id)
            .where(Store.status == StoreStatus.ACTIVE, col(Store.id).not_in(recent))
            .order_by(col(Store.id))
            .limit(QUEUE_BATCH)
        ).all()
    for run_id in lost:
        if run_id is not None:
            with suppress(RedisError):
                _enqueue(runtime, run_id)
    for store_id in due:
        if store_id is not None:
            open_run(runtime, store_id, RunTrigger.SCHEDULE)
    return len(due)


def _claim(runtime: Runtime, run_id: int) -> bool:
    with runtime.database.engine.begin() as connection:
        claimed = connection.execute(
            update(ReconciliationRun)
            .where(col(ReconciliationRun.id) == run_id, col(ReconciliationRun.status) == RunStatus.QUEUED)
            .values(status=RunStatus.RUNNING, started_at=runtime.now())
        ).rowcount
    return bool(claimed)


def _set(runtime: Runtime, run_id: int, **values: Any) -> None:
    with runtime.database.engine.begin() as connection:
        connection.execute(
            update(ReconciliationRun).where(col(ReconciliationRun.id) == run_id).values(**values)
        )


def _discounts(runtime: Runtime, store_id: int, start: datetime, end: datetime) -> dict[str, Any]:
    cleanup = delete_expired_discounts(runtime, store_id=store_id)
    now = runtime.now()
    with runtime.database.session() as session:

        def count(*conditions: Any) -> int:
            return int(
                session.exec(
                    select(func.count())
                    .select_from(Discount)
                    .where(Discount.store_id == store_id, *conditions)
                ).one()
            )

        return {
            "created": count(col(Discount.created_at) >= start, col(Discount.created_at) < end),
            "redeemed": count(col(Discount.redeemed_at) >= start, col(Discount.redeemed_at) < end),
            "expired_unused": count(
                col(Discount.redeemed_at).is_(None),
                col(Discount.ends_at) >= start,
                col(Discount.ends_at) < now,
            ),
            "deleted_now": cleanup.deleted,
            "not_deleted": cleanup.failed,
            "still_on_platform": count(
                col(Discount.redeemed_at).is_(None),
                col(Discount.ends_at) < now,
                col(Discount.platform_discount_id).is_not(None),
                col(Discount.platform_deleted_at).is_(None),
            ),
        }


def _orders_section(checked: OrdersChecked) -> dict[str, Any]:
    return {
        "checked": checked.checked,
        "confirmed": checked.confirmed,
        "confirmed_amount": _money(checked.confirmed_amount),
        "placed_amount": _money(checked.placed_amount),
        "pending": checked.pending,
        "pending_amount": _money(checked.pending_amount),
        "difference_amount": _money(
            checked.confirmed_amount + checked.pending_amount - checked.placed_amount
        ),
        "problem": checked.problem,
    }


def _differences(checked: OrdersChecked) -> list[dict[str, Any]]:
    return [
        {
            "order_id": d.order_id,
            "cart_id": d.cart_id,
            "kind": d.kind,
            "placed": _money(d.placed),
            "confirmed": _money(d.confirmed),
            "amount": _money(d.amount),
            "explanation": d.explanation,
            "new": d.new,
        }
        for d in checked.differences
    ]


def execute(
    runtime: Runtime, run_id: int, *, progress: Callable[[str], None] = lambda _: None
) -> ReconciliationRun | None:
    """Carry out a queued run; None when another worker has it or it is over."""
    if not _claim(runtime, run_id):
        return None
    with runtime.database.session() as session:
        run = session.get(ReconciliationRun, run_id)
        assert run is not None
        store = session.get(Store, run.store_id)
        assert store is not None and store.id is not None
        store_id, ref, currency = store.id, store.platform_store_id, store.currency
        period_start, period_end = run.period_start, run.period_end
    try:
        orders = recovered_orders(runtime, store_id, period_start, until=period_end)
        _set(runtime, run_id, orders_total=len(orders))

        def read(done: int, total: int) -> None:
            _set(runtime, run_id, orders_done=done)
            progress(f"{ref}: {done} of {total} recovered orders read again")

        checked = check_orders(runtime, store_id, orders, progress=read)
        discounts = _discounts(runtime, store_id, period_start, period_end)
        last_day = (period_end - timedelta(days=1)).date()
        costs = messaging.compare_costs(runtime, store_id, last_day - timedelta(days=COST_DAYS - 1), last_day)
        report = {
            "currency": currency,
            "orders": _orders_section(checked),
            "differences": _differences(checked),
            "discounts": discounts,
            "messaging": costs,
        }
        status = RunStatus.FAILED if checked.problem else RunStatus.DONE
        _set(
            runtime,
            run_id,
            status=status,
            finished_at=runtime.now(),
            report=report,
            problem=checked.problem,
        )
        progress(f"{ref}: {checked}")
    except Exception as exc:  # the run is over either way: say so on the page, then re-raise for the job log
        _set(
            runtime,
            run_id,
            status=RunStatus.FAILED,
            finished_at=runtime.now(),
            problem=f"the run stopped ({type(exc).__name__}); it runs again next week, or run it now",
        )
        raise
    log.info("reconciliation done", extra={"run_id": run_id, "store_id": store_id, "status": status})
    with runtime.database.session() as session:
        return session.get(ReconciliationRun, run_id)


def latest_runs(runtime: Runtime, store_id: int, limit: int = 10) -> list[ReconciliationRun]:
    with runtime.database.session() as session:
        return list(
            session.exec(
                select(ReconciliationRun)
                .where(ReconciliationRun.store_id == store_id)
                .order_by(col(ReconciliationRun.created_at).desc(), col(ReconciliationRun.id).desc())
                .limit(limit)
            ).all()
        )
