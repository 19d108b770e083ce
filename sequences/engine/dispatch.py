"""The schedule's reader: due carts claimed from the database in batches, by any worker.

``Cart.next_wake_at`` is the schedule: the database holds the truth and the moment each cart
must be looked at again; Redis holds no alarm. Every worker process runs ``dispatch_due`` in
a loop (app.worker). A claim takes up to a batch of carts whose moment has come, oldest
first, and moves their ``next_wake_at`` a lease ahead in the same statement, so the next
claim passes them by; the engine then decides each cart under its locks and sets its real
next moment. A worker that dies holding a claim costs those carts the lease: they come due
again and whichever worker is alive takes them (the ledger still makes a step that reached
``sending`` uncertain, never a second message).

Claims never wait on each other: on PostgreSQL ``FOR UPDATE SKIP LOCKED`` hands each due row
to one claimer; on SQLite the claim is one ``BEGIN IMMEDIATE`` transaction (one claimer at a
time, which SQLite's single writer imposes anyway).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError
from sqlmodel import col

from sequences.engine.batches import advance_batch
from sequences.models import Cart
from sequences.runtime import Runtime

log = logging.getLogger("cartback.dispatch")

# How long a claim keeps other workers off a cart. The engine settles a claimed cart within
# milliseconds (a send commits its ledger row before the transport is called and sets its
# own, longer, moment), so this is what a worker dying mid-claim costs those carts.
CLAIM_LEASE = timedelta(seconds=5)
# Carts claimed per round trip: large enough to amortise the claim, small enough that one
# worker does not hoard what another idle one could send.
BATCH = 100


def claim_due_carts(runtime: Runtime, *, limit: int = BATCH) -> list[int]:
    """Take up to ``limit`` carts due now, oldest moment first; returns their ids."""
    now = runtime.now()
    lease_until = now + CLAIM_LEASE
    due = (
        select(col(Cart.id))
        .where(col(Cart.next_wake_at) <= now)
        .order_by(col(Cart.next_wake_at))
        .limit(limit)
    )
    database = runtime.database
    if database.sqlite:
        # BEGIN IMMEDIATE: the write lock is taken before the read, so two claimers never
        # read the same due rows.
        try:
            with database.lock_engine.begin() as connection:
                cart_ids = _ids(connection.execute(due))
                if cart_ids:
                    connection.execute(
                        update(Cart).where(col(Cart.id).in_(cart_ids)).values(next_wake_at=lease_until)
                    )
        except OperationalError as exc:
            if "database is locked" not in str(exc):
                raise
            # Another writer held SQLite's one lock past the busy timeout: nothing was
            # claimed, and the next poll claims it.
            log.warning("claim skipped: the database is busy")
            return []
        return cart_ids
    claimed = (
        due.with_for_update(skip_locked=True).cte("due").prefix_with("MATERIALIZED", dialect="postgresql")
    )
    with database.engine.begin() as connection:
        rows = connection.execute(
            update(Cart)
            .where(col(Cart.id) == claimed.c.id)
            .values(next_wake_at=lease_until)
            .returning(col(Cart.id))
        )
        return _ids(rows)


def _ids(rows: Iterable[Any]) -> list[int]:
    return [int(row[0]) for row in rows]


def dispatch_due(
    runtime: Runtime, *, limit: int = BATCH, run: Callable[[Runtime, list[int]], None] | None = None
) -> int:
    """Claim the carts due now and run their clock ticks as one batch (engine.batch_send);
    returns how many were claimed."""
    cart_ids = sorted(claim_due_carts(runtime, limit=limit))
    if cart_ids:
        try:
            (run or advance_batch)(runtime, cart_ids)
        except Exception:
            # The claim's lease brings the carts back: a passing fault (a lost connection)
            # heals, and the batch is decided again from the database.
            log.exception(
                "batch not advanced; its carts come due again after the lease", extra={"carts": len(cart_ids)}
            )
    return len(cart_ids)
