"""Every job cartback puts in Redis: its dotted name, its options, and the names jobs had before.

Jobs are enqueued by dotted name, from here. Code that schedules work (the engine, the sync,
the worker's timers, the WooCommerce connect view) therefore never imports the code that runs
it: ``sequences.jobs`` holds the RQ entry points at the top of the import graph and is imported
only by the worker, when a job runs.

A name is a promise to Redis: a wake-up is scheduled up to 22 hours ahead under the name it had
when it was enqueued. When an entry point moves, its old name goes into ``FORMER_NAMES`` and the
worker's ``CartbackJob`` runs the job under its new name, so an upgrade never strands a job.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rq import Queue, Retry
from rq.job import Job
from rq.utils import import_attribute

# The RQ entry points (sequences/jobs.py), by the names jobs carry in Redis.
# Deliveries and carts are claimed from the database now (engine.intake, engine.dispatch):
# nothing enqueues these two, which run what an older version left in Redis.
PROCESS_DELIVERY = "sequences.jobs.process_delivery_job"
ADVANCE_CART = "sequences.jobs.advance_cart_job"
SWEEP = "sequences.jobs.sweep_job"
SYNC_OPT_OUT = "sequences.jobs.sync_opt_out_job"
SEND_CONFIRMATION = "sequences.jobs.send_confirmation_job"
SET_UP_STORE = "sequences.jobs.set_up_store_job"
SYNC_PLATFORM = "sequences.jobs.sync_platform_job"
SYNC_STORE = "sequences.jobs.sync_store_job"
REPLAN_STORE = "sequences.jobs.replan_store_job"
COMPLETE_WOOCOMMERCE_CONNECTION = "sequences.jobs.complete_connection_job"
RECONCILE_STORE = "sequences.jobs.reconcile_store_job"
RECHECK_ORDER = "sequences.jobs.recheck_order_job"
DELETE_EXPIRED_DISCOUNTS = "sequences.jobs.delete_expired_discounts_job"
EVALUATE_ALERTS = "sequences.jobs.evaluate_alerts_job"
NOTIFY_INCIDENT = "sequences.jobs.notify_incident_job"
# The demo platform's webhook sender: development only (demo/ is never loaded in production).
DELIVER_DEMO_WEBHOOK = "demo.store.webhooks.deliver_webhook"

JOB_NAMES = (
    PROCESS_DELIVERY,
    ADVANCE_CART,
    SWEEP,
    SYNC_OPT_OUT,
    SEND_CONFIRMATION,
    SET_UP_STORE,
    SYNC_PLATFORM,
    SYNC_STORE,
    REPLAN_STORE,
    COMPLETE_WOOCOMMERCE_CONNECTION,
    RECONCILE_STORE,
    RECHECK_ORDER,
    DELETE_EXPIRED_DISCOUNTS,
    EVALUATE_ALERTS,
    NOTIFY_INCIDENT,
    DELIVER_DEMO_WEBHOOK,
)

# Names jobs were enqueued under before their entry point moved -> the name that runs them now.
# Never remove a line while a job enqueued under it may still wait in Redis (up to 22 hours for
# a wake-up, a week for a failed job an operator may requeue).
FORMER_NAMES = {
    "app.woocommerce_connect.complete_connection_job": COMPLETE_WOOCOMMERCE_CONNECTION,
    "app.woocommerce.connect.complete_connection_job": COMPLETE_WOOCOMMERCE_CONNECTION,
    "app.demo_store.webhooks.deliver_webhook": DELIVER_DEMO_WEBHOOK,
}

# Finished jobs leave nothing behind (unique ids must be reusable, Redis stays small).
RESULT_TTL_SECONDS = 0
# Failed jobs are kept a week for operators to inspect.
FAILURE_TTL_SECONDS = 7 * 24 * 3600
JOB_TIMEOUT_SECONDS = 120
# Transient failures (a locked database, a restarted Redis) retry; the ledger makes it safe.
RETRY_INTERVALS_SECONDS = (2, 10, 30)


def current_name(name: str) -> str:
    """The dotted name a job enqueued as ``name`` runs under today."""
    return FORMER_NAMES.get(name, name)


class CartbackJob(Job):
    """An RQ job that still runs when it was enqueued under a name its entry point has left."""

    @property
    def func(self) -> Callable[..., Any] | None:
        name = self.func_name
        if name is None or self.instance is not None:
            return super().func  # type: ignore[no-any-return]
        function: Callable[..., Any] = import_attribute(current_name(name))
        return function


@dataclass(frozen=True, slots=True)
class JobOptions:
    """How a job is identified, kept and retried; the defaults are the engine's jobs'.

    ``None`` leaves a setting to rq's default.
    """

    job_id: str
    # Fixed text: rq's default description repeats the arguments, which may hold personal data.
    description: str | None
    # A unique id makes a second enqueue a DuplicateJobError instead of a second job.
    unique: bool = True
    result_ttl: int = RESULT_TTL_SECONDS
    failure_ttl: int | None = FAILURE_TTL_SECONDS
    job_timeout: int | None = JOB_TIMEOUT_SECONDS
    # Empty: a failure is final (the caller or the sweep decides what happens next).
    retry_intervals: tuple[int, ...] = RETRY_INTERVALS_SECONDS

    def as_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"job_id": self.job_id, "result_ttl": self.result_ttl}
        if self.unique:
            kwargs["unique"] = True
        if self.description is not None:
            kwargs["description"] = self.description
        if self.failure_ttl is not None:
            kwargs["failure_ttl"] = self.failure_ttl
        if self.job_timeout is not None:
            kwargs["job_timeout"] = self.job_timeout
        if self.retry_intervals:
            kwargs["retry"] = Retry(max=len(self.retry_intervals), interval=list(self.retry_intervals))
        return kwargs


def enqueue(queue: Queue, name: str, *args: Any, options: JobOptions, at: datetime | None = None) -> Job:
    """Put the job named ``name`` on the queue now, or scheduled for ``at``.

    Raises rq's DuplicateJobError for a unique id already in hand and RedisError when Redis is
    unreachable: each caller knows which of those the sweep will make good.
    """
    if name not in JOB_NAMES:
        raise ValueError(f"unknown job {name!r}: add it to sequences.queue.JOB_NAMES")
    job: Job
    if at is None:
        job = queue.enqueue(name, *args, **options.as_kwargs())
    else:
        job = queue.enqueue_at(at, name, *args, **options.as_kwargs())
    return job
