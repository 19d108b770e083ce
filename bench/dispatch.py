"""(c) Sandbox dispatch rate: 5,000 steps all due now, with 1 and 2 workers -> messages/s.

This is the workers' capacity for the whole send path (lock, guards, ledger, render, sandbox
outbox insert, outcome, next alarm), without the scheduler's once-a-second poll in the way:
the alarms are already due, so ``schedule_wake`` puts them straight on the queue.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bench.environment import BenchEnv, make_store
from bench.profiling import Profiler
from bench.report import Section, say
from bench.seed import seed_abandoned_carts
from bench.workers import (
    cpu_seconds,
    send_rates,
    start_workers,
    status_summary,
    step_one_times,
    stop_workers,
    wait_for_sent,
    wait_registered,
)

ABOUT = """
Sandbox dispatch rate: 5,000 abandoned carts whose step 1 is already due, alarms enqueued
immediately (`schedule_wake` with a due time in the past goes straight onto the queue), then
1 (or 2) `cartback worker` processes start; the time from starting them until the last step 1
is SENT gives messages/s (worker start-up included; if 60 s pass first, the rate is over the
steps sent by then). "steady" is the rate between the first
and the last send decision, without start-up. Each message is the full send path: contact and
cart lock (SQLite `BEGIN IMMEDIATE`), guards, ledger write, template render, link signing, the
sandbox transport's outbox insert, the outcome transaction, and the cart's next alarm.
"""


@dataclass(frozen=True)
class DispatchConfig:
    steps: int = 5_000
    worker_counts: tuple[int, ...] = (1, 2)
    # Bounded so `make bench` stays under ~10 minutes; the rate is then over what was sent.
    timeout_s: float = 60.0


def quick() -> DispatchConfig:
    return DispatchConfig(steps=500, worker_counts=(1,), timeout_s=60.0)


def _one(env: BenchEnv, config: DispatchConfig, workers_n: int, section: Section) -> float:
    label = f"dispatch/{workers_n} worker{'s' if workers_n > 1 else ''}"
    with env.scenario(f"dispatch-{workers_n}") as scenario:
        runtime = scenario.runtime
        store = make_store(runtime)
        # Due a second ago: the inactivity has passed and the alarms go straight to the queue.
        due = datetime.now(UTC) - timedelta(seconds=1)
        seed_abandoned_carts(runtime, store, [due] * config.steps)
        started = datetime.now(UTC)
        workers = start_workers(scenario, workers_n)
        profiler: Profiler | None = None
        try:
            wait_registered(runtime, workers)
            cpu_before, wall_before = cpu_seconds(workers), time.monotonic()
            if env.profile:  # the first worker, while it works through the queue
                profiler = Profiler(label.replace("/", "-").replace(" ", "-"), workers[0].pid, 40)
            wait_for_sent(runtime, workers, config.steps, timeout_s=config.timeout_s, label=label)
            cpu = cpu_seconds(workers) - cpu_before
            wall = time.monotonic() - wall_before
        finally:
            stop_workers(workers)
            if profiler:
                profiler.finish(timeout=10)
        times = step_one_times(runtime)
    rates = send_rates(times, started)
    if rates is None:
        section.note(f"{label}: nothing was sent ({status_summary(times)})")
        return 0.0
    sent, elapsed, rate, steady = rates.sent, rates.elapsed_s, rates.rate, rates.steady
    tag = f"{workers_n} worker{'s' if workers_n > 1 else ''}"
    section.add(f"{tag}: messages/s", f"{rate:,.0f}", f"{sent:,} sent in {elapsed:.1f} s from worker start")
    section.add(
        f"{tag}: steady messages/s",
        f"{steady:,.0f}",
        f"first send decision {(rates.first_decision - started).total_seconds():.1f} s after start",
    )
    section.add(
        f"{tag}: worker CPU per message",
        f"{cpu / max(rates.decisions, 1) * 1000:.0f} ms",
        f"workers busy {cpu / (wall * workers_n):.0%} of their wall time",
    )
    section.note(f"{label}: ledger {status_summary(times)}")
    return rate


def run(env: BenchEnv, config: DispatchConfig | None = None) -> Section:
    config = config or DispatchConfig()
    section = Section("dispatch", "(c) dispatch rate", ABOUT)
    say(f"(c) sandbox dispatch rate, {config.steps:,} steps due now")
    rates: dict[int, float] = {}
    for workers_n in config.worker_counts:
        began = time.monotonic()
        rates[workers_n] = _one(env, config, workers_n, section)
        say(f"  ({time.monotonic() - began:.0f} s)")
    if rates.get(1) and rates.get(2):
        section.add(
            "2 workers / 1 worker", f"{rates[2] / rates[1]:.2f}×", "2 CPUs; SQLite has one writer at a time"
        )
    return section
