"""The worker class cartback runs: it sweeps on its own, so a flushed Redis heals itself."""

from __future__ import annotations

from datetime import timedelta

from rq.registry import ScheduledJobRegistry

from app.worker import CartbackWorker
from tests.support.factories import make_store
from tests.support.journey import Journey


def test_the_worker_sweeps_without_being_asked_and_restores_lost_alarms(client, runtime, drain):
    make_store(runtime)
    journey = Journey(client, runtime, drain)
    journey.checkout()
    runtime.redis.flushall()  # the alarm for the 15-minute check is gone
    with journey.at(timedelta(minutes=1)):
        CartbackWorker([runtime.queue], connection=runtime.redis).work(burst=True)
        scheduled = ScheduledJobRegistry(queue=runtime.queue).get_job_ids()
    assert scheduled == [f"wake-{journey.cart().id}-{int((journey.cart().next_wake_at).timestamp())}"]
    journey.run(timedelta(minutes=16))
    assert len(journey.outbox()) == 1


def test_sweeps_from_many_workers_in_the_same_minute_run_once(runtime):
    from app.worker import enqueue_sweep

    enqueue_sweep(runtime.redis)
    enqueue_sweep(runtime.redis)
    assert runtime.queue.count == 1


def test_platform_syncs_are_queued_once_per_interval_for_the_platforms_that_need_them(runtime):
    from rq import Queue

    from app.worker import enqueue_platform_syncs

    enqueue_platform_syncs(runtime.redis, runtime)
    enqueue_platform_syncs(runtime.redis, runtime)  # another worker, a minute later
    [job] = Queue(runtime.queue.name, connection=runtime.redis).get_jobs()
    # Only WooCommerce gives up on failed deliveries; demo (and Shopify) need no sync.
    assert job.args == ("woocommerce",) and job.id.startswith("sync-woocommerce-")
    assert runtime.queue.count == 1


def test_a_threaded_worker_sends_each_step_once(client, runtime, drain):
    from app.worker import run_workers

    make_store(runtime)
    journey = Journey(client, runtime, drain)
    for n in range(12):
        journey.checkout(checkout_id=f"chk_{n}", token=f"tok_{n}", phone=f"+9198765000{n:02d}")
    with journey.at(timedelta(minutes=16)):
        # Every cart's alarm four times over (a sweep and a retry racing): the loops contend
        from sequences.jobs import advance_cart_job

        for cart_id in range(1, 13):
            for copy in range(4):
                runtime.queue.enqueue(advance_cart_job, cart_id, job_id=f"race-{cart_id}-{copy}")
        run_workers(runtime, threads=4, burst=True)
        drain()
    assert len(journey.outbox()) == 12
    assert len({row.message_id for row in journey.outbox()}) == 12
