"""The RQ worker class cartback runs: in-process jobs, the engine runtime, a periodic sweep.

SimpleWorker runs jobs in the worker process instead of forking one per job: ~2.6x the job
rate here (measured: ~210 vs ~80 trivial jobs/s), and the database pool and HTTP client stay
warm. A job that crashes the process is covered by the ledger and the sweep, not by a fork.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from redis.exceptions import RedisError
from rq import Queue, SimpleWorker
from rq.exceptions import DuplicateJobError
from rq.timeouts import TimerDeathPenalty

from app.logs import configure_logging
from app.wiring import build_runtime
from connectors.base import RegistersWebhooks
from sequences import queue
from sequences import runtime as runtime_module
from sequences.config import ConfigError, Settings
from sequences.queue import CartbackJob, JobOptions
from sequences.runtime import QUEUE_NAME, Runtime

log = logging.getLogger("cartback.worker")

# Seconds between sweeps (rebuilding Redis from the database); one runs per interval across
# all workers thanks to its unique job id.
SWEEP_INTERVAL_SECONDS = 60
# Seconds between syncs of the platforms that never retry a failed delivery (WooCommerce):
# their webhooks re-activated and changed orders read back. A lost order update is caught
# within this, well inside the 15 minutes before a cart's first message.
PLATFORM_SYNC_INTERVAL_SECONDS = 600
# Worker key TTL in Redis; rq derives the blocking dequeue timeout from it (ttl - 15 s), so
# an idle worker looks at the sweep clock every 15 s instead of rq's default ~7 minutes.
WORKER_TTL_SECONDS = 30
# rq logs three lines per job at INFO ("default: wake (…)", "Job OK", "result discarded"): at
# hundreds of sends a second that is most of the log and a few ms of CPU per message. The
# engine logs what happened to each cart itself; rq's warnings and errors still show.
RQ_LOG_LEVEL = "WARNING"


class CartbackWorker(SimpleWorker):
    # Runs jobs enqueued under a name their entry point has since left (sequences.queue).
    job_class = CartbackJob

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("worker_ttl", WORKER_TTL_SECONDS)
        super().__init__(*args, **kwargs)
        self._next_sweep_at = 0.0
        if not _installed():
            configure_logging()
            runtime_module.install(worker_runtime(Settings.from_env()))

    @property
    def should_run_maintenance_tasks(self) -> bool:
        return time.monotonic() >= self._next_sweep_at or bool(super().should_run_maintenance_tasks)

    def run_maintenance_tasks(self) -> None:
        if time.monotonic() >= self._next_sweep_at:
            self._next_sweep_at = time.monotonic() + SWEEP_INTERVAL_SECONDS
            enqueue_sweep(self.connection)
            enqueue_platform_syncs(self.connection, runtime_module.current())
        if super().should_run_maintenance_tasks:
            super().run_maintenance_tasks()  # type: ignore[no-untyped-call]


class JobThreadWorker(CartbackWorker):
    """An extra job loop inside `cartback worker --threads N`, sharing the process's runtime.

    A send spends most of its time waiting for Meta's answer (~100 ms); threads keep many sends
    in flight per process. Only the main thread may handle signals or arm SIGALRM, so these
    loops time jobs out with a timer and stop when the main loop stops them; the main loop
    alone runs the scheduler and the sweep.
    """

    death_penalty_class = TimerDeathPenalty

    def _install_signal_handlers(self) -> None:
        """The main thread owns signals; it stops this loop through ``request_stop``."""

    @property
    def should_run_maintenance_tasks(self) -> bool:
        return False


def run_workers(runtime: Runtime, *, threads: int = 1, burst: bool = False) -> None:
    """The main job loop (scheduler, sweep, signals) plus ``threads - 1`` loops in threads."""
    queues = [runtime.queue]
    extras = [JobThreadWorker(queues, connection=runtime.redis) for _ in range(max(threads, 1) - 1)]
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
        CartbackWorker(queues, connection=runtime.redis).work(
            burst=burst, with_scheduler=True, logging_level=RQ_LOG_LEVEL
        )
    finally:
        for extra in extras:
            # rq's request_stop raises in the calling thread when the loop is idle: set the
            # flag the loop checks between jobs instead.
            extra._stop_requested = True
        for thread in running:
            # An idle loop notices within its dequeue timeout; a busy one after its job.
            thread.join(timeout=WORKER_TTL_SECONDS)


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


def _queue(connection: Any) -> Queue:
    return Queue(QUEUE_NAME, connection=connection, job_class=CartbackJob)


def enqueue_platform_syncs(connection: Any, runtime: Runtime) -> None:
    """One sync job per interval and platform, whichever worker gets there first."""
    slot = int(time.time()) // PLATFORM_SYNC_INTERVAL_SECONDS
    for platform in runtime.connectors.platforms():
        if runtime.connectors.capable(platform, RegistersWebhooks) is None:
            continue
        try:
            options = JobOptions(
                f"sync-{platform}-{slot}",
                f"sync {platform}",
                # Kept for the slot, so the workers' checks each minute find it and skip.
                result_ttl=PLATFORM_SYNC_INTERVAL_SECONDS,
                failure_ttl=None,
                job_timeout=PLATFORM_SYNC_INTERVAL_SECONDS,
                retry_intervals=(),
            )
            queue.enqueue(_queue(connection), queue.SYNC_PLATFORM, platform, options=options)
        except DuplicateJobError:
            pass
        except RedisError:
            log.warning("platform sync not enqueued: Redis unreachable")


def enqueue_sweep(connection: Any) -> None:
    slot = int(time.time()) // SWEEP_INTERVAL_SECONDS
    options = JobOptions(f"sweep-{slot}", "sweep", failure_ttl=None, job_timeout=None, retry_intervals=())
    try:
        queue.enqueue(_queue(connection), queue.SWEEP, options=options)
    except DuplicateJobError:
        pass
    except RedisError:
        log.warning("sweep not enqueued: Redis unreachable")
