"""The worker process: it claims due carts from the database, and starts periodic work once."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import time_machine

from app import worker
from app.worker import (
    DISPATCH_POLL_SECONDS,
    SWEEP_INTERVAL_SECONDS,
    Dispatcher,
    claim_period,
    promote_scheduled_jobs,
    run_workers,
    start_periodic_work,
)
from sequences.engine import dispatch
from tests.support.factories import make_store
from tests.support.journey import Journey


def test_a_worker_sends_a_due_step_with_nothing_in_redis(client, runtime, drain):
    make_store(runtime)
    journey = Journey(client, runtime, drain)
    journey.checkout()
    runtime.redis.flushall()  # Redis holds no alarm to lose: the schedule is the database's
    with journey.at(timedelta(minutes=16)):
        run_workers(runtime, burst=True)
    assert len(journey.outbox()) == 1


def _sweeps_queued(runtime) -> int:
    return sum(1 for job_id in runtime.queue.job_ids if job_id.startswith("sweep-"))


def test_the_sweep_starts_once_a_minute_however_many_workers_look(runtime):
    # Three workers look in the same minute; the first one's sweep has already finished
    with time_machine.travel(datetime(2026, 12, 6, 10, 0, 5, tzinfo=UTC), tick=False):
        start_periodic_work(runtime)
        assert _sweeps_queued(runtime) == 1
        run_workers(runtime, burst=True)
        assert runtime.queue.count == 0
        start_periodic_work(runtime)
        start_periodic_work(runtime)
    # Then it ran once (a finished job frees its id; the period's claim does not)
    assert _sweeps_queued(runtime) == 0


def test_a_period_is_claimed_once_and_the_next_one_again(runtime):
    minute = 1_800_000_000 // SWEEP_INTERVAL_SECONDS * SWEEP_INTERVAL_SECONDS
    assert claim_period(runtime.redis, "sweep", SWEEP_INTERVAL_SECONDS, at=minute) is not None
    assert claim_period(runtime.redis, "sweep", SWEEP_INTERVAL_SECONDS, at=minute + 59) is None
    assert claim_period(runtime.redis, "sweep", SWEEP_INTERVAL_SECONDS, at=minute + 60) is not None


def test_platform_syncs_are_queued_once_per_interval_for_the_platforms_that_need_them(runtime):
    from rq import Queue

    start_periodic_work(runtime)
    start_periodic_work(runtime)  # another worker, a moment later
    jobs = Queue(runtime.queue.name, connection=runtime.redis).get_jobs()
    # Only WooCommerce gives up on failed deliveries; demo (and Shopify) need no sync.
    [sync] = [job for job in jobs if job.id.startswith("sync-")]
    assert sync.args == ("woocommerce",) and sync.id.startswith("sync-woocommerce-")
    [cleanup] = [job for job in jobs if job.id.startswith("discount-cleanup-")]
    assert cleanup.func_name == "sequences.jobs.delete_expired_discounts_job"
    assert runtime.queue.count == 3  # the sync, the sweep and the hourly discount cleanup


def test_a_job_waiting_for_its_retry_is_put_back_on_the_queue_when_due(runtime):
    from sequences import queue

    queue.enqueue(
        runtime.queue,
        queue.SWEEP,
        options=queue.JobOptions("later", "sweep"),
        at=datetime.now(UTC) - timedelta(seconds=1),
    )
    assert runtime.queue.count == 0
    assert promote_scheduled_jobs(runtime.redis) == 1
    assert runtime.queue.count == 1
    # Another worker a moment later finds the promotion lock held, and nothing to do anyway
    assert promote_scheduled_jobs(runtime.redis) == 0


def test_a_threaded_worker_sends_each_step_once(client, runtime, drain):
    make_store(runtime)
    journey = Journey(client, runtime, drain)
    for n in range(12):
        journey.checkout(checkout_id=f"chk_{n}", token=f"tok_{n}", phone=f"+9198765000{n:02d}")
    with journey.at(timedelta(minutes=16)):
        # Every cart's alarm four times over, as alarms set before the schedule moved to the
        # database (a sweep and a retry racing): the job loops and the dispatcher contend
        for cart_id in range(1, 13):
            for copy in range(4):
                runtime.queue.enqueue(
                    "sequences.jobs.advance_cart_job", cart_id, job_id=f"race-{cart_id}-{copy}"
                )
        run_workers(runtime, threads=4, burst=True)
        drain()
    assert len(journey.outbox()) == 12
    assert len({row.message_id for row in journey.outbox()}) == 12


def test_batches_waiting_on_their_sends_are_claimed_a_poll_apart_not_all_at_once(runtime, monkeypatch):
    # A burst on a paced number: each batch (always full) waits on its moments and on Meta.
    # Claimed back to back, four took every slot at once, and no claim came until they ended.
    batches_end = threading.Event()
    claimed_at: list[float] = []

    def claim(runtime, *, limit):
        claimed_at.append(time.monotonic())
        return list(range(len(claimed_at) * limit, (len(claimed_at) + 1) * limit))

    monkeypatch.setattr(dispatch, "claim_due_carts", claim)
    monkeypatch.setattr(worker, "advance_batch", lambda runtime, cart_ids: batches_end.wait(5))
    dispatcher = Dispatcher(runtime, batches_in_flight=4)
    loop = threading.Thread(target=dispatcher.run)
    loop.start()
    time.sleep(DISPATCH_POLL_SECONDS * 3.5)
    dispatcher.stopping.set()
    batches_end.set()
    loop.join(5)
    dispatcher.stop()
    claimed = [at - claimed_at[0] for at in claimed_at]
    assert len(claimed) == 4
    # The first two back to back: no other batch was in flight.
    assert claimed[1] < DISPATCH_POLL_SECONDS / 2
    assert claimed[2] >= DISPATCH_POLL_SECONDS * 0.9
    assert claimed[3] - claimed[2] >= DISPATCH_POLL_SECONDS * 0.9
