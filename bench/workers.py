"""Worker processes as production runs them, and watching the ledger until the steps are sent.

Workers are `python -m app.cli.main worker` (RQ job loops plus the dispatcher thread that claims
due carts from the database, app.worker), the sandbox transport unless told otherwise, and the
scenario's database and Redis. The
bench only reads the database while they work: the ledger is the truth of what was sent.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import func, select
from sqlmodel import col

from bench.environment import PYTHON, REPO, Scenario
from bench.processes import REGISTRY, Child, children_of, pids_cpu_seconds, tree_cpu_seconds, wait_until
from bench.report import say
from sequences.models import RecoveryStep, StepStatus
from sequences.runtime import Runtime

# Seconds between progress lines while waiting.
PROGRESS_EVERY_S = 10.0
POLL_S = 0.25


def start_workers(scenario: Scenario, count: int, *, threads: int = 1) -> list[Child]:
    return [
        REGISTRY.spawn(
            f"worker {n}",
            [PYTHON, "-m", "app.cli.main", "worker", "--threads", str(threads)],
            env=scenario.environ,
            cwd=REPO,
            log_path=scenario.path / f"worker-{n}.log",
        )
        for n in range(1, count + 1)
    ]


def wait_registered(
    runtime: Runtime, workers: list[Child], timeout_s: float = 30.0, *, per_worker: int = 1
) -> None:
    """Until every worker's job loops have registered with rq (imports done; the dispatcher
    thread starts just before them)."""
    wait_until(
        lambda: int(runtime.redis.scard("rq:workers")) >= len(workers) * per_worker,
        timeout=timeout_s,
        child=workers[0],
        what="workers to register with rq",
    )


def cpu_seconds(workers: list[Child]) -> float:
    """CPU seconds of the worker processes (all their threads) and anything they forked."""
    return tree_cpu_seconds(workers)


def stop_workers(workers: list[Child]) -> None:
    REGISTRY.stop_many(workers)


def sent_count(runtime: Runtime, step_number: int = 1) -> int:
    with runtime.database.session() as session:
        return int(
            session.execute(
                select(func.count())
                .select_from(RecoveryStep)
                .where(
                    col(RecoveryStep.step_number) == step_number, col(RecoveryStep.status) == StepStatus.SENT
                )
            ).scalar_one()
        )


def wait_for_sent(runtime: Runtime, workers: list[Child], total: int, *, timeout_s: float, label: str) -> int:
    """Poll the ledger until `total` step-1 rows are SENT or the time is up; returns the count."""
    started = time.monotonic()
    deadline = started + timeout_s
    next_progress = started + PROGRESS_EVERY_S
    sent = 0
    while True:
        sent = sent_count(runtime)
        now = time.monotonic()
        if sent >= total:
            return sent
        dead = [w for w in workers if not w.alive()]
        if dead:
            say(
                f"  {label}: {dead[0].name} exited with status {dead[0].proc.returncode}; log tail:\n{dead[0].log_tail()}"
            )
            return sent
        if now >= deadline:
            say(f"  {label}: gave up after {timeout_s:.0f} s with {sent:,}/{total:,} sent")
            return sent
        if now >= next_progress:
            say(f"  {label}: {sent:,}/{total:,} sent after {now - started:.0f} s")
            next_progress += PROGRESS_EVERY_S
        time.sleep(POLL_S)


@dataclass(frozen=True)
class StepTimes:
    due_at: datetime
    attempted_at: datetime | None
    sent_at: datetime | None
    status: str


def step_one_times(runtime: Runtime) -> list[StepTimes]:
    with runtime.database.session() as session:
        rows = session.execute(
            select(
                col(RecoveryStep.due_at),
                col(RecoveryStep.attempted_at),
                col(RecoveryStep.sent_at),
                col(RecoveryStep.status),
            ).where(col(RecoveryStep.step_number) == 1)
        ).all()
    return [StepTimes(*row) for row in rows]


def status_summary(times: list[StepTimes]) -> str:
    counts = Counter(t.status for t in times)
    return ", ".join(f"{status} {n:,}" for status, n in counts.most_common())


@dataclass(frozen=True)
class SendRates:
    sent: int
    decisions: int  # send decisions committed (attempted steps)
    first_decision: datetime
    elapsed_s: float  # worker start to the last send
    rate: float  # sent / elapsed
    steady: float  # decisions per second between the first and the last decision


def send_rates(times: list[StepTimes], started: datetime) -> SendRates | None:
    """Messages/s of a dispatch run from the ledger; None when nothing was sent."""
    sent = sum(1 for t in times if t.status == StepStatus.SENT)
    attempted = sorted(t.attempted_at for t in times if t.attempted_at is not None)
    finished = max((t.sent_at for t in times if t.sent_at is not None), default=None)
    if not attempted or finished is None:
        return None
    elapsed = (finished - started).total_seconds()
    span = (attempted[-1] - attempted[0]).total_seconds()
    steady = (len(attempted) - 1) / span if span > 0 else float("nan")
    return SendRates(sent, len(attempted), attempted[0], elapsed, sent / elapsed, steady)


def postgres_pids(runtime: Runtime) -> list[int]:
    """The PostgreSQL server's processes (postmaster and its backends); [] on SQLite or when
    the server's pid file cannot be read."""
    if runtime.database.sqlite:
        return []
    with runtime.database.engine.connect() as connection:
        datadir = str(connection.exec_driver_sql("SHOW data_directory").scalar_one())
    try:
        postmaster = int((Path(datadir) / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return []
    return [postmaster, *children_of(postmaster)]


def postgres_cpu_seconds(runtime: Runtime) -> float | None:
    """CPU seconds of the PostgreSQL server's live processes (backends that exited in the
    window are missed, so this is a lower bound); None on SQLite."""
    pids = postgres_pids(runtime)
    return pids_cpu_seconds(pids) if pids else None
