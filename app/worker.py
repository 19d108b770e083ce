"""The worker process: RQ job loops, and the dispatcher that claims due carts from the database.

Every worker process is the same, and none is special:
- RQ job loops (``--threads``) run the queued jobs (deliveries, syncs, the sweep...).
- An intake thread applies pending webhook deliveries as they arrive (engine.intake: the web
  process only stores them).
- One dispatcher thread claims the carts whose moment has come (``Cart.next_wake_at``, see
  sequences.engine.dispatch) and runs them as batches (engine.batch_send: a few statements
  per batch, the transport's calls concurrent), polling at least every
  DISPATCH_POLL_SECONDS. Whichever worker is alive takes due work: a dead one
  costs its claimed carts the claim's lease (seconds), never a stall.
- The same thread promotes RQ's scheduled jobs (retries with a back-off) under a lock of a
  second or two, instead of RQ's scheduler process whose lock outlives a dead holder by
  minutes, and starts the periodic jobs (the sweep, the platform syncs) once per period
  across all workers: the first worker to claim the period's key in Redis enqueues it.

SimpleWorker runs jobs in the worker process instead of forking one per job: ~2.6x the job
rate here (measured: ~210 vs ~80 trivial jobs/s), and the database pool and HTTP client stay
warm. A job that crashes the process is covered by the ledger and the sweep, not by a fork.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, SimpleWorker
from rq.exceptions import DuplicateJobError
from rq.registry import ScheduledJobRegistry
from rq.scheduler import RQScheduler
from rq.timeouts import TimerDeathPenalty
from rq.worker import WorkerStatus

from app.logs import configure_logging
from app.wiring import build_runtime
from channels.transport import SendsBatches
from connectors.base import RegistersWebhooks
from sequences import queue
from sequences import runtime as runtime_module
from sequences.config import ConfigError, Settings
from sequences.engine import dispatch
from sequences.engine.batches import advance_batch
from sequences.engine.intake import drain_deliveries
from sequences.queue import CartbackJob, JobOptions
from sequences.runtime import QUEUE_NAME, Runtime

log = logging.getLogger("cartback.worker")

# Seconds between sweeps (the database's safety net and chores); one per interval across all
# workers (``claim_period``).
SWEEP_INTERVAL_SECONDS = 60
# Seconds between syncs of the platforms that never retry a failed delivery (WooCommerce):
# their webhooks re-activated and changed orders read back. A lost order update is caught
# within this, well inside the 15 minutes before a cart's first message.
PLATFORM_SYNC_INTERVAL_SECONDS = 600
# Seconds between evaluations of the alert rules (every store's, the service's): the issue's
# "every minute"; one per interval across all workers.
ALERTS_INTERVAL_SECONDS = 60
# Seconds between deletions of discount codes that expired unused (a code lives 48 h or so:
# an hour late keeps the merchant's discount list clean enough).
DISCOUNT_CLEANUP_INTERVAL_SECONDS = 3600
# How often an idle dispatcher looks for due carts: the schedule's granularity (a step goes
# out at most this late, plus the time to send it). An index range scan that finds nothing.
DISPATCH_POLL_SECONDS = 0.1
# How often the scheduled-job promotion runs, and how long its lock lives: a holder that
# dies delays retries by at most this.
PROMOTE_LOCK_MS = 1500
PROMOTE_LOCK_KEY = "cartback:rq-promote-lock"
PERIOD_KEY = "cartback:period:{name}:{slot}"
# Deliveries the intake loop applies before it looks at the clock again.
DRAIN_LIMIT = 200
# Worker key TTL in Redis; rq derives the blocking dequeue timeout from it (ttl - 15 s).
WORKER_TTL_SECONDS = 30
# The job loops' Redis socket timeout: longer than their blocking dequeue.
JOB_LOOP_SOCKET_TIMEOUT_SECONDS = WORKER_TTL_SECONDS + 10
# rq logs three lines per job at INFO ("default: sweep (…)", "Job OK", "result discarded"): at
# hundreds of jobs a second that is most of the log. rq's warnings and errors still show.
RQ_LOG_LEVEL = "WARNING"


class CartbackWorker(SimpleWorker):
    # Runs jobs enqueued under a name their entry point has since left (sequences.queue).
    job_class = CartbackJob

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("worker_ttl", WORKER_TTL_SECONDS)
        super().__init__(*args, **kwargs)
        if not _installed():
            configure_logging()
            runtime_module.install(worker_runtime(Settings.from_env()))


class JobThreadWorker(CartbackWorker):
    """An extra job loop inside `cartback worker --threads N`, sharing the process's runtime.

    Only the main thread may handle signals or arm SIGALRM, so these loops time jobs out with
    a timer and stop when the main loop stops them; the main loop alone runs rq's maintenance.
    """

    death_penalty_class = TimerDeathPenalty

    def _install_signal_handlers(self) -> None:
        """The main thread owns signals; it stops this loop through ``request_stop``."""

    @property
    def should_run_maintenance_tasks(self) -> bool:
        return False


class Dispatcher:
    """The loop that claims due carts, promotes scheduled jobs and starts periodic work.

    Up to ``batches_in_flight`` claimed batches are worked on at once, each on a thread of its
    own: a batch waiting on a slow number (or a slow Graph API) holds back only itself.
    """

    def __init__(self, runtime: Runtime, *, batches_in_flight: int = 1) -> None:
        self.runtime = runtime
        self.stopping = threading.Event()
        self._next_promotion = 0.0
        self._width = max(batches_in_flight, 1)
        self._slots = threading.BoundedSemaphore(self._width)
        # Batches handed to a batch thread and not yet done.
        self._in_flight = 0
        self._counting = threading.Lock()
        self._pool = ThreadPoolExecutor(self._width, thread_name_prefix="batch")

    def round(self) -> int:
        """One pass: periodic work, scheduled jobs, then one claim of due carts, handed to a
        free batch thread (waiting for one). Returns the number of carts claimed (a full batch
        means more are waiting)."""
        now = time.monotonic()
        if now >= self._next_promotion:
            self._next_promotion = now + PROMOTE_LOCK_MS / 1000
            try:
                start_periodic_work(self.runtime)
                promote_scheduled_jobs(self.runtime.redis)
            except RedisError as exc:
                log.warning("Redis unreachable: periodic work waits", extra={"error": type(exc).__name__})
        self._slots.acquire()
        if self.stopping.is_set():
            # Stopping: nothing more is claimed (a claim would hold its carts for the lease).
            self._slots.release()
            return 0
        handed: list[bool] = []
        try:
            claimed = dispatch.dispatch_due(
                self.runtime,
                run=lambda runtime, cart_ids: handed.append(self._hand(cart_ids)),
            )
        finally:
            if not handed:
                self._slots.release()
        return claimed

    def _hand(self, cart_ids: list[int]) -> bool:
        with self._counting:
            self._in_flight += 1
        self._pool.submit(self._advance, cart_ids)
        return True

    def _advance(self, cart_ids: list[int]) -> None:
        try:
            advance_batch(self.runtime, cart_ids)
        except Exception:
            # The claim's lease brings the carts back.
            log.exception(
                "batch not advanced; its carts come due again after the lease", extra={"carts": len(cart_ids)}
            )
        finally:
            with self._counting:
                self._in_flight -= 1
            self._slots.release()

    def claims_back_to_back(self) -> bool:
        """After a full claim, whether the next one follows at once: only while the batch just
        claimed is the only one in flight; otherwise it waits for the next poll.

        Claimed back to back, a burst's first batches took every slot at once; on a paced
        number they all wait on their moments and on Meta (~0.45 s) and end together, and for
        that long no claim took the moments that opened (bench (f), 1 number: 11-21 moments of
        a run lost at the burst's start, 2,400 sent in up to 30.4 s; 0-2 with this). Claims a
        poll apart keep one near whenever a number's next moments open. Quick batches (the
        sandbox) lose little: at most two full claims a poll per worker while batches overlap,
        2,000 carts a second (bench (c), 1 worker: ~1,160 messages/s against ~1,250)."""
        with self._counting:
            return self._in_flight <= 1

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                claimed = self.round()
            except Exception:
                # A database restart, say: log, wait a moment, go on; the schedule is intact.
                log.exception("dispatch round failed; retrying")
                claimed = 0
            if claimed < dispatch.BATCH or not self.claims_back_to_back():
                self.stopping.wait(DISPATCH_POLL_SECONDS)

    def take_deliveries(self) -> None:
        """The intake loop: pending deliveries applied as they arrive, beside the dispatch so
        a burst of webhooks never delays a due message."""
        while not self.stopping.is_set():
            try:
                applied = drain_deliveries(self.runtime, limit=DRAIN_LIMIT)
            except Exception:
                log.exception("delivery drain failed; retrying")
                applied = 0
            if applied < DRAIN_LIMIT:
                self.stopping.wait(DISPATCH_POLL_SECONDS)

    def drain(self) -> int:
        """Deliveries and rounds until nothing is due (``--burst``); returns what ran."""
        total = 0
        while claimed := drain_deliveries(self.runtime, limit=DRAIN_LIMIT) + self.round():
            total += claimed
        # Every batch handed out is done before the caller looks at the queue.
        self._pool.shutdown(wait=True)
        self._pool = ThreadPoolExecutor(self._width, thread_name_prefix="batch")
        return total

    def stop(self, loops: list[threading.Thread] | None = None) -> None:
        """Stop claiming; the loops (dispatcher, intake) end their round, then the batches in
        flight finish (their steps are in the ledger: a batch cut short leaves them uncertain)."""
        self.stopping.set()
        for loop in loops or []:
            loop.join(timeout=WORKER_TTL_SECONDS)
        self._pool.shutdown(wait=True)


def run_workers(runtime: Runtime, *, threads: int = 1, burst: bool = False) -> None:
    """The dispatcher and the main job loop (signals), plus ``threads - 1`` job loops in threads."""
    queues = [runtime.queue]
    dispatcher = Dispatcher(runtime, batches_in_flight=threads)
    if burst:
        # Whatever is due now, then the queue, until both are empty.
        while True:
            claimed = dispatcher.drain()
            had_jobs = runtime.queue.count > 0
            _run_job_loops(runtime, queues, threads=threads, burst=True)
            if not claimed and not had_jobs:
                break
        dispatcher.stop()
        return
    if isinstance(runtime.transport, SendsBatches):
        runtime.transport.warm_up()
    # Everything built so far (modules, the app's objects, 64 send threads' clients) lives as
    # long as the worker: kept out of the collector's full passes, which stopped a sending
    # worker for 100-235 ms every few seconds (bench (f): a number's second short of its 80).
    gc.freeze()
    loops = [
        threading.Thread(target=dispatcher.run, name="dispatcher", daemon=True),
        threading.Thread(target=dispatcher.take_deliveries, name="intake", daemon=True),
    ]
    for loop in loops:
        loop.start()
    try:
        _run_job_loops(runtime, queues, threads=threads, burst=False)
    finally:
        dispatcher.stop(loops)


def _run_job_loops(runtime: Runtime, queues: list[Queue], *, threads: int, burst: bool) -> None:
    # The loops' own Redis client: their blocking dequeue waits up to WORKER_TTL_SECONDS - 15 s,
    # longer than the runtime client's 5 s socket timeout (which the dispatcher's quick calls
    # keep), and rq only raises the timeout of connections made after a worker is built.
    connection = Redis.from_url(
        runtime.settings.redis_url, socket_connect_timeout=2, socket_timeout=JOB_LOOP_SOCKET_TIMEOUT_SECONDS
    )
    queues = [Queue(each.name, connection=connection, job_class=CartbackJob) for each in queues]
    extras = [JobThreadWorker(queues, connection=connection) for _ in range(max(threads, 1) - 1)]
    running = [
        threading.Thread(
            target=extra.work,
            kwargs={"burst": burst, "logging_level": RQ_LOG_LEVEL},
            name=f"rq-loop-{n}",
            daemon=True,
        )
        for n, extra in enumerate(extras, start=2)
    ]
    for thread in running:
        thread.start()
    try:
        CartbackWorker(queues, connection=connection).work(burst=burst, logging_level=RQ_LOG_LEVEL)
    finally:
        for extra in extras:
            # rq's request_stop raises in the calling thread when the loop is idle: set the
            # flag the loop checks between jobs instead.
            extra._stop_requested = True
        for extra, thread in zip(extras, running, strict=True):
            # A busy loop finishes its job. An idle one is left to end with the process: rq's
            # blocking dequeue never looks at the stop flag, and waiting for it would outlast
            # the platform's grace period (a worker SIGKILLed mid-batch leaves steps uncertain).
            # A burst loop ends by itself once the queue is empty, and is waited for: closing
            # the connection under its last heartbeat made it die on a closed socket.
            if burst or extra.get_state() == WorkerStatus.BUSY:
                thread.join(timeout=queue.JOB_TIMEOUT_SECONDS)
        connection.close()


def worker_runtime(settings: Settings) -> Runtime:
    """The runtime a worker runs with; refuses a database without cartback's tables.

    Failing at start, with the fix, beats failing every job with "no such table".
    """
    runtime = build_runtime(settings)
    problem = runtime.database.schema_problem()
    if problem:
        raise ConfigError(f"cartback worker: {problem}")
    return runtime


def _installed() -> bool:
    try:
        runtime_module.current()
    except RuntimeError:
        return False
    return True


def _queue(connection: Redis) -> Queue:
    return Queue(QUEUE_NAME, connection=connection, job_class=CartbackJob)


def claim_period(
    connection: Redis, name: str, interval_seconds: int, *, at: float | None = None
) -> int | None:
    """The current period's number if this caller is the first to claim it, else None.

    The key outlives the period, so a job that finishes early cannot be started again in the
    same period by a worker whose clock ticks later (a job id alone is freed when it ends).
    """
    slot = int(time.time() if at is None else at) // interval_seconds
    key = PERIOD_KEY.format(name=name, slot=slot)
    return slot if connection.set(key, 1, nx=True, ex=2 * interval_seconds) else None


def start_periodic_work(runtime: Runtime) -> None:
    """The sweep once a minute and the platform syncs once per interval, across all workers."""
    if (slot := claim_period(runtime.redis, "sweep", SWEEP_INTERVAL_SECONDS)) is not None:
        enqueue_sweep(runtime.redis, slot)
    if (slot := claim_period(runtime.redis, "platform-sync", PLATFORM_SYNC_INTERVAL_SECONDS)) is not None:
        enqueue_platform_syncs(runtime.redis, runtime, slot)
    if (
        slot := claim_period(runtime.redis, "discount-cleanup", DISCOUNT_CLEANUP_INTERVAL_SECONDS)
    ) is not None:
        enqueue_periodic(
            runtime.redis, queue.DELETE_EXPIRED_DISCOUNTS, f"discount-cleanup-{slot}", "discount cleanup"
        )


def promote_scheduled_jobs(connection: Redis) -> int:
    """Move RQ's scheduled jobs whose time has come onto the queue; one promoter at a time.

    What rq's scheduler process does, under a lock of PROMOTE_LOCK_MS instead of minutes.
    """
    if not connection.set(PROMOTE_LOCK_KEY, 1, nx=True, px=PROMOTE_LOCK_MS):
        return 0
    registry = ScheduledJobRegistry(QUEUE_NAME, connection=connection)  # type: ignore[no-untyped-call]
    due = len(registry.get_jobs_to_schedule())
    if due:
        scheduler = RQScheduler([QUEUE_NAME], connection=connection)
        scheduler.prepare_registries([QUEUE_NAME])
        scheduler.enqueue_scheduled_jobs()  # type: ignore[no-untyped-call]
    return due


def enqueue_platform_syncs(connection: Redis, runtime: Runtime, slot: int) -> None:
    """One sync job per platform that needs one, for the period ``slot``."""
    for platform in runtime.connectors.platforms():
        if runtime.connectors.capable(platform, RegistersWebhooks) is None:
            continue
        try:
            options = JobOptions(
                f"sync-{platform}-{slot}",
                f"sync {platform}",
                failure_ttl=None,
                job_timeout=PLATFORM_SYNC_INTERVAL_SECONDS,
                retry_intervals=(),
            )
            queue.enqueue(_queue(connection), queue.SYNC_PLATFORM, platform, options=options)
        except DuplicateJobError:
            pass
        except RedisError:
            log.warning("platform sync not enqueued: Redis unreachable")


def enqueue_sweep(connection: Redis, slot: int) -> None:
    enqueue_periodic(connection, queue.SWEEP, f"sweep-{slot}", "sweep")


def enqueue_periodic(connection: Redis, name: str, job_id: str, description: str) -> None:
    options = JobOptions(job_id, description, failure_ttl=None, job_timeout=None, retry_intervals=())
    try:
        queue.enqueue(_queue(connection), name, options=options)
    except DuplicateJobError:
        pass
    except RedisError:
        log.warning("periodic job not enqueued: Redis unreachable", extra={"job": description})
