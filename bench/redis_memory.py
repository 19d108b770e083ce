"""(d) Redis memory per pending cart: what a cart waiting for its next step costs in Redis.

The schedule lives in the database (``Cart.next_wake_at``, claimed by the workers'
dispatchers), so by design a pending cart has nothing in Redis. This measures that claim from
outside rather than assuming it: pending carts are seeded with a worker running (its
dispatcher polling, its sweep run over them), and Redis's ``used_memory`` is read before and
after.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

from app.worker import enqueue_sweep
from bench.environment import POSTGRESQL, SQLITE, BenchEnv, make_store
from bench.processes import wait_until
from bench.report import Section, say
from bench.seed import seed_abandoned_carts
from bench.workers import start_workers, stop_workers, wait_registered
from sequences.runtime import Runtime

ABOUT = """
Redis memory per pending cart: a fresh database (PostgreSQL when installed) and an emptied
Redis, one `cartback worker` running idle (its dispatcher polls the database every 0.25 s, its
job loop waits on the queue). A sweep is run first and the worker left a few seconds, so the
fixed costs (worker registration, the sweep's job, the periodic keys) are paid before the first
reading of `INFO memory` `used_memory`. Then 10,000 pending carts are seeded (abandoned, step 1
due 4 to ~7 hours ahead, as the engine leaves them), a second sweep runs over them, the worker
polls for a few more seconds, and `used_memory` is read again: the difference divided by
10,000 is what a pending cart costs in Redis. Whatever a worker kept per cart would show here.
Target ≤ 1 KB. Redis runs with `--save '' --appendonly no`.
"""

# Seconds the worker is left polling after each step, so what it would keep per cart is there.
SETTLE_S = 3.0
# Sweep job ids outside the periodic ones' range (sweep-{minute since the epoch}).
SWEEP_SLOT_BASE = 10**9


@dataclass(frozen=True)
class MemoryConfig:
    carts: int = 10_000
    ahead: timedelta = timedelta(hours=4)


def quick() -> MemoryConfig:
    return MemoryConfig(carts=2_000)


def _used_memory(client: Any) -> int:
    return int(client.info("memory")["used_memory"])


def _run_sweep(runtime: Runtime, slot: int) -> None:
    """Enqueue a sweep and wait until the worker has run it."""
    enqueue_sweep(runtime.redis, SWEEP_SLOT_BASE + slot)
    job_id = f"sweep-{SWEEP_SLOT_BASE + slot}"

    def done() -> bool:
        try:
            status = Job.fetch(job_id, connection=runtime.redis).get_status(refresh=True)
        except NoSuchJobError:
            return True  # finished and its result not kept
        return status in (JobStatus.FINISHED, JobStatus.FAILED)

    wait_until(done, timeout=60, what="the sweep to run")


def run(env: BenchEnv, config: MemoryConfig | None = None) -> Section:
    config = config or MemoryConfig()
    section = Section("memory", "(d) Redis per pending cart", ABOUT)
    database = POSTGRESQL if env.has_postgres() else SQLITE
    say(f"(d) Redis memory per pending cart, {config.carts:,} pending carts ({database})")
    with env.scenario("memory", database=database) as scenario:
        runtime = scenario.runtime
        store = make_store(runtime)
        client = env.redis.client()
        workers = start_workers(scenario, 1)
        try:
            wait_registered(runtime, workers)
            _run_sweep(runtime, 1)
            time.sleep(SETTLE_S)
            before, keys_before = _used_memory(client), int(client.dbsize())
            base = datetime.now(UTC) + config.ahead
            # One second apart: distinct moments, as real carts abandoned at different times.
            seed_abandoned_carts(runtime, store, [base + timedelta(seconds=n) for n in range(config.carts)])
            _run_sweep(runtime, 2)
            time.sleep(SETTLE_S)
            after, keys_after = _used_memory(client), int(client.dbsize())
            alive = workers[0].alive()
        finally:
            stop_workers(workers)
            client.close()
    if not alive:
        raise RuntimeError(f"the worker exited during the measurement; log:\n{workers[0].log_tail()}")
    per_cart = (after - before) / config.carts
    section.add(
        "**bytes per pending cart** (used_memory delta)",
        f"**{per_cart:,.1f} B**",
        f"target ≤ 1,024 B; {database}, 1 worker running",
    )
    section.add(
        "keys per pending cart",
        f"{(keys_after - keys_before) / config.carts:.4f}",
        f"{keys_before:,} keys before the carts, {keys_after:,} after",
    )
    section.add(
        "used_memory before / after the carts",
        f"{before:,} B / {after:,} B",
        f"{config.carts:,} pending carts; the difference is Redis's own churn (clients, the worker's heartbeat)",
    )
    section.add("100,000 pending carts would take", f"{max(per_cart, 0) * 100_000 / 2**20:,.2f} MiB")
    return section
