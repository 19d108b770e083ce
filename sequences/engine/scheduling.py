"""The engine's jobs put on the queue after a commit: opt-out syncs and reply confirmations.

Each is enqueued only once its database row is committed, under a deterministic id, and is
safe to run twice (the row says whether it was done). Redis being down loses nothing: the
sweep finds the rows and enqueues them again. Carts and deliveries have no job: the workers
claim due carts (``Cart.next_wake_at``, engine.dispatch) and pending deliveries (engine.intake)
from the database.
"""

from __future__ import annotations

import logging
from datetime import UTC, timedelta

from redis.exceptions import RedisError
from rq.exceptions import DuplicateJobError, NoSuchJobError
from rq.job import Job, JobStatus
from sqlmodel import col, select

from sequences import queue
from sequences.models import ConsentEvent, OptOutSync
from sequences.queue import JobOptions
from sequences.runtime import Runtime

log = logging.getLogger("cartback.scheduling")


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
