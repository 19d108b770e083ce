"""Pending webhook deliveries, drained by the workers in batches (the view only stores them).

Why: an RQ job per delivery cost every webhook request a Redis round trip and a quarter of
its time. Ingest now inserts one ``WebhookDelivery`` row and answers; any number of worker
processes call ``drain_deliveries``, which claims pending rows oldest first and applies each
with ``tracking.process_delivery``. The sweep stays the safety net for what nobody drained.

Invariants:
- Each delivery is processed once (invariant 3). ``process_delivery`` locks the row and skips
  one that is no longer pending, so even two drainers holding the same id apply it once. The
  claim only shares the work out: on PostgreSQL ``FOR UPDATE SKIP LOCKED``, so concurrent
  claimers take disjoint rows without waiting on each other; on SQLite the claim is a
  ``BEGIN IMMEDIATE`` transaction (``Database.lock_engine``), one claimer at a time. A claimed
  row is not claimed again before its ``claimed_until``: a worker that dies mid-batch delays
  its rows by ``CLAIM_LEASE`` at most.
- A delivery whose processing raises neither blocks the others (the batch goes on) nor is
  retried in a loop: it stays pending, claimable again after a back-off that doubles with its
  attempts (``RETRY_FIRST`` up to ``RETRY_LONGEST``), its last error kept in ``outcome``.
"""

from __future__ import annotations

import logging
import sqlite3
from datetime import timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.exc import OperationalError
from sqlmodel import col

from sequences.engine.tracking import process_delivery
from sequences.models import DeliveryStatus, WebhookDelivery
from sequences.runtime import Runtime
from sequences.stores.spool import COLLECT_BATCH, collect

log = logging.getLogger("cartback.intake")

# Rows per claim transaction. Small enough that CLAIM_LEASE covers processing them all (a
# delivery takes milliseconds, one fetching line images a few seconds at most), large enough
# that the claim's own round trip is shared by many.
CLAIM_BATCH = 50
# How long a claim keeps other drainers off a row: the longest a batch may take. A worker
# killed mid-batch leaves its rows to the others after this.
CLAIM_LEASE = timedelta(minutes=2)
# Back-off after a failed processing, doubled per attempt: a transient error (a lock timeout,
# two deliveries of one new shopper racing to create the contact on PostgreSQL) is retried
# after 2 s, as RQ's first retry did (queue.RETRY_INTERVALS_SECONDS); a delivery that always
# fails costs one try an hour, logged each time, until an operator looks at it.
RETRY_FIRST = timedelta(seconds=2)
RETRY_LONGEST = timedelta(hours=1)
# What ``process_delivery`` answers for a delivery someone else has processed.
ALREADY_PROCESSED = "already processed"


def drain_deliveries(runtime: Runtime, *, limit: int) -> int:
    """Claim and process up to ``limit`` pending deliveries, oldest first, after moving the
    web processes' spooled ones in (SQLite); how many this call applied (those whose
    processing raised are backed off, not counted)."""
    try:
        # All there is, within reason: moved rows are claimable by every worker.
        collect(runtime.database, limit=max(limit, COLLECT_BATCH))
    except (OperationalError, sqlite3.Error, OSError) as exc:
        log.warning("spooled deliveries not collected", extra={"error": type(exc).__name__})
    processed = claimed = 0
    while claimed < limit:
        try:
            batch = claim_deliveries(runtime, min(CLAIM_BATCH, limit - claimed))
        except OperationalError as exc:
            # SQLite busy past its timeout, a database restarting: the rows stay pending for
            # the next call. The caller's loop must not die of it.
            log.warning("deliveries not claimed", extra={"error": type(exc).__name__})
            break
        if not batch:
            break
        claimed += len(batch)
        for delivery_id in batch:
            try:
                outcome = process_delivery(runtime, delivery_id)
            except Exception as exc:
                log.exception("delivery processing failed", extra={"delivery_id": delivery_id})
                back_off(runtime, delivery_id, exc)
                continue
            # A row whose lease ran out while its first drainer was still on it.
            processed += outcome != ALREADY_PROCESSED
    return processed


def claim_deliveries(runtime: Runtime, limit: int) -> list[int]:
    """Ids of up to ``limit`` pending deliveries nobody holds, oldest first, now held by the
    caller until ``CLAIM_LEASE`` from now."""
    now = runtime.now()
    with runtime.database.lock_engine.begin() as connection:
        found = list(
            connection.execute(
                select(col(WebhookDelivery.id))
                .where(
                    col(WebhookDelivery.status) == DeliveryStatus.PENDING,
                    or_(
                        col(WebhookDelivery.claimed_until).is_(None),
                        col(WebhookDelivery.claimed_until) <= now,
                    ),
                )
                .order_by(col(WebhookDelivery.received_at), col(WebhookDelivery.id))
                .limit(limit)
                # SQLite renders no FOR UPDATE: its IMMEDIATE transaction already excludes others.
                .with_for_update(skip_locked=True)
            ).scalars()
        )
        ids = [delivery_id for delivery_id in found if delivery_id is not None]
        if ids:
            connection.execute(
                update(WebhookDelivery)
                .where(col(WebhookDelivery.id).in_(ids))
                .values(claimed_until=now + CLAIM_LEASE, attempts=col(WebhookDelivery.attempts) + 1)
            )
    return ids


def retry_delay(attempts: int) -> timedelta:
    """How long a delivery that failed on its ``attempts``-th claim waits before the next."""
    doublings = min(max(attempts - 1, 0), 20)  # 2 s * 2**20 is far past RETRY_LONGEST already
    return min(RETRY_FIRST * (1 << doublings), RETRY_LONGEST)


def back_off(runtime: Runtime, delivery_id: int, error: Exception) -> None:
    """Keep a delivery whose processing raised off the drain for its back-off; its error
    (the type only: messages can quote personal data) goes in ``outcome`` for an operator.
    If even that write fails, the claim's lease keeps it off the drain for ``CLAIM_LEASE``."""
    try:
        _write_back_off(runtime, delivery_id, error)
    except OperationalError as exc:
        log.warning(
            "delivery back-off not written", extra={"delivery_id": delivery_id, "error": type(exc).__name__}
        )


def _write_back_off(runtime: Runtime, delivery_id: int, error: Exception) -> None:
    with runtime.database.engine.begin() as connection:
        attempts = connection.execute(
            select(col(WebhookDelivery.attempts)).where(col(WebhookDelivery.id) == delivery_id)
        ).scalar()
        if attempts is None:
            return
        connection.execute(
            update(WebhookDelivery)
            .where(
                col(WebhookDelivery.id) == delivery_id, col(WebhookDelivery.status) == DeliveryStatus.PENDING
            )
            .values(
                claimed_until=runtime.now() + retry_delay(attempts),
                outcome=f"processing raised {type(error).__name__} (attempt {attempts}); retried later",
            )
        )
