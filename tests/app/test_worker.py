"""The worker process: it claims due carts from the database, and starts periodic work once."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import time_machine

from app.worker import (
    SWEEP_INTERVAL_SECONDS,
    Dispatcher,
    claim_period,
    promote_scheduled_jobs,
    run_workers,
    start_periodic_work,
)
from channels.transport import OutboundMessage, Sender, SendOutcome, Slot
from sequences.sandbox import SandboxTransport
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
    assert runtime.queue.count == 2  # the sync and the sweep


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


class _FirstBatchWaits:
    """The sandbox, except that the first batch's sends wait until let go (Meta answering
    slowly, or moments a few hundred ms ahead)."""

    name = "sandbox"
    needs_whatsapp_account = False

    def __init__(self, sandbox: SandboxTransport) -> None:
        self.sandbox = sandbox
        self.waiting, self.let_go = threading.Event(), threading.Event()

    def reserve(self, recipients: Sequence[tuple[Sender | None, str]]) -> list[Slot]:
        return self.sandbox.reserve(recipients)

    def warm_up(self) -> None:
        """Nothing to start."""

    def send_batch(self, messages: Sequence[OutboundMessage]) -> list[SendOutcome]:
        if not self.waiting.is_set():
            self.waiting.set()
            self.let_go.wait(timeout=10)
        return self.sandbox.send_batch(messages)

    def send(self, message: OutboundMessage) -> SendOutcome:
        return self.sandbox.send(message)


def _eventually(condition: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_a_batch_waiting_on_its_sends_does_not_hold_back_the_next_claim(client, runtime, drain):
    # The dispatcher's slots bound the batches being claimed and written, not those whose
    # sends wait on their moments: a slot held through the wait stopped the claims, and a
    # number's moments passed with nobody to take them (bench (f), 1 number: 7-13 a start).
    make_store(runtime)
    journey = Journey(client, runtime, drain)
    journey.checkout(checkout_id="chk_1", token="tok_1", phone="+919876500001")
    journey.checkout(timedelta(minutes=1), checkout_id="chk_2", token="tok_2", phone="+919876500002")
    assert isinstance(runtime.transport, SandboxTransport)
    transport = _FirstBatchWaits(runtime.transport)
    dispatcher = Dispatcher(replace(runtime, transport=transport), batches_in_flight=1)
    claimed: list[int] = []
    try:
        with journey.at(timedelta(minutes=15, seconds=30)):
            assert dispatcher.round() == 1
            assert transport.waiting.wait(timeout=5)
        with journey.at(timedelta(minutes=16, seconds=30)):
            second = threading.Thread(target=lambda: claimed.append(dispatcher.round()), daemon=True)
            second.start()
            second.join(timeout=5)
            assert claimed == [1], "the second cart waited for the first batch's sends"
            # ... and sent while the first batch still waits
            assert _eventually(lambda: [row.to_phone for row in journey.outbox()] == ["+919876500002"])
            transport.let_go.set()
    finally:
        transport.let_go.set()
        dispatcher.stop()
    assert sorted(row.to_phone for row in journey.outbox()) == ["+919876500001", "+919876500002"]
