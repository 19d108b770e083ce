"""Wake-ups in Redis for carts whose next moment is known (the database says when).

A cart's ``next_wake_at`` is the truth; the RQ scheduled job ``wake-{cart}-{epoch}`` is only
an alarm clock. Alarms are idempotent (unique ids), a stale alarm does nothing but set the
next one, and the sweep re-creates alarms Redis lost.
"""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime, timedelta

from redis.exceptions import RedisError
from rq.exceptions import DuplicateJobError, NoSuchJobError
from rq.job import Job, JobStatus
from sqlmodel import col, select

from sequences import queue
from sequences.models import ConsentEvent, OptOutSync
from sequences.queue import JobOptions
from sequences.runtime import Runtime

log = logging.getLogger("cartback.scheduling")


def wake_epoch(at: datetime) -> int:
    # rq scores schedules in whole seconds and may start a job up to 1 s early: round up so
    # an alarm never fires before the moment it is for.
    return math.ceil(at.timestamp())


def wake_job_id(cart_id: int, at: datetime) -> str:
    return f"wake-{cart_id}-{wake_epoch(at)}"


def schedule_wake(runtime: Runtime, cart_id: int, at: datetime) -> bool:
    """Set an alarm for the cart; False if Redis is unreachable (the sweep will set it)."""
    epoch = wake_epoch(at)
    options = JobOptions(wake_job_id(cart_id, at), "wake")
    due = None if epoch <= runtime.now().timestamp() else datetime.fromtimestamp(epoch, UTC)
    try:
        queue.enqueue(runtime.queue, queue.ADVANCE_CART, cart_id, options=options, at=due)
    except DuplicateJobError:
        return True
    except RedisError as exc:
        log.warning(
            "wake not scheduled; the sweep will", extra={"cart_id": cart_id, "error": type(exc).__name__}
        )
        return False
    return True


def enqueue_delivery(runtime: Runtime, delivery_id: int) -> bool:
    # Delivery ids are primary keys, unique by construction: skip rq's uniqueness script. A
    # second enqueue by the sweep at worst runs a job that finds the delivery processed.
    options = JobOptions(f"delivery-{delivery_id}", "delivery", unique=False)
    try:
        queue.enqueue(runtime.queue, queue.PROCESS_DELIVERY, delivery_id, options=options)
    except DuplicateJobError:
        return True
    except RedisError as exc:
        log.warning(
            "delivery not enqueued; the sweep will",
            extra={"delivery_id": delivery_id, "error": type(exc).__name__},
        )
        return False
    return True


# Jobs in these states will not run again: their lingering key must not stand in for an alarm.
DEAD_JOB_STATUSES = (b"failed", b"stopped", b"canceled")


def existing_job_ids(runtime: Runtime, job_ids: list[str]) -> set[str]:
    """The ids whose job will still run. A job that failed for good keeps its key for
    queue.FAILURE_TTL_SECONDS; it is deleted here so the sweep can set the alarm again."""
    pipeline = runtime.redis.pipeline(transaction=False)
    for job_id in job_ids:
        pipeline.hget(Job.key_for(job_id), "status")
    live: set[str] = set()
    for job_id, status in zip(job_ids, pipeline.execute(), strict=True):
        if status is None:
            continue
        if status in DEAD_JOB_STATUSES:
            Job(job_id, connection=runtime.redis).delete()
            continue
        live.add(job_id)
    return live


def enqueue_opt_out_syncs(runtime: Runtime, *, contact_id: int | None = None, limit: int = 500) -> int:
    """Queue platform syncs for pending opt-outs: one contact's now, or (the sweep) any older
    than a minute, including those whose RQ retries ran out."""
    query = select(ConsentEvent.id).where(col(ConsentEvent.platform_sync) == OptOutSync.PENDING)
    if contact_id is not None:
        query = query.where(ConsentEvent.contact_id == contact_id)
    else:
        query = query.where(col(ConsentEvent.created_at) < runtime.now() - timedelta(minutes=1))
    with runtime.database.session() as session:
        event_ids = [event_id for event_id in session.exec(query.limit(limit)).all() if event_id is not None]
    queued = 0
    for event_id in event_ids:
        job_id = f"optout-sync-{event_id}"
        try:
            if _still_in_hand(runtime, job_id):
                continue
            queue.enqueue(
                runtime.queue, queue.SYNC_OPT_OUT, event_id, options=JobOptions(job_id, "opt-out sync")
            )
            queued += 1
        except DuplicateJobError:
            continue
        except RedisError as exc:
            log.warning("opt-out sync not queued; the sweep will", extra={"error": type(exc).__name__})
            break
    return queued


def enqueue_confirmation(runtime: Runtime, inbound_id: int) -> bool:
    """The STOP/START confirmation, after the commit; the database claim makes it at most once."""
    options = JobOptions(f"confirm-{inbound_id}", "reply confirmation", retry_intervals=())
    try:
        queue.enqueue(runtime.queue, queue.SEND_CONFIRMATION, inbound_id, options=options)
    except DuplicateJobError:
        return False
    except RedisError as exc:
        log.warning("confirmation not queued", extra={"error": type(exc).__name__})
        return False
    return True


# A sync whose RQ retries all failed is tried again this long after its last failure.
RESYNC_AFTER_FAILURE_SECONDS = 10 * 60


def _still_in_hand(runtime: Runtime, job_id: str) -> bool:
    """True while the job is queued, waiting for a retry, running, or failed only recently.

    A failed job's key outlives it (failure_ttl), which would block a new enqueue under the
    same id: it is removed once its back-off has passed, so the sweep can try again.
    """
    try:
        job = Job.fetch(job_id, connection=runtime.redis)
    except NoSuchJobError:
        return False
    status = job.get_status(refresh=False)
    if status in (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.STARTED, JobStatus.DEFERRED):
        return True
    ended = job.ended_at.replace(tzinfo=UTC) if job.ended_at and job.ended_at.tzinfo is None else job.ended_at
    if (
        status == JobStatus.FAILED
        and ended
        and (runtime.now() - ended).total_seconds() < RESYNC_AFTER_FAILURE_SECONDS
    ):
        return True
    job.delete()
    return False
