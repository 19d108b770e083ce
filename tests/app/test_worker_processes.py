"""Several `cartback worker` processes on PostgreSQL, as production runs them (issue 16's "Done when").

- Four workers send 2,000 steps due in the same second while purchases and STOPs arrive for a
  quarter of the carts: no (cart, step) is sent twice, nothing is sent after a recorded
  purchase or opt-out, every other step goes out once, and the dashboard's kept figures equal
  a recount.
- The worker holding a write transaction on the schedule is SIGKILLed mid-burst: the survivor
  sends every step still to go within 10 s of the later of its due time and the kill, none
  twice; what the dead one had put in the ledger is never sent again.
- Three workers start the periodic sweep exactly once per period.
- A worker's own life: an idle worker logs no error, and a SIGTERM stops it within seconds.

The workers are real processes (tests.support.worker_processes); the test process only seeds
the database, plays the shoppers and reads the ledger.
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from redis import Redis
from sqlalchemy import func, insert, select, text
from sqlmodel import col

from app.wiring import build_runtime
from bench.seed import PRICE, seed_abandoned_carts
from connectors.base import OrderEvent
from sequences.config import Settings
from sequences.db import Database
from sequences.engine.consent import handle_reply
from sequences.engine.dispatch import CLAIM_LEASE
from sequences.engine.tracking import apply_order
from sequences.experiments import figures as experiment_figures
from sequences.experiments.manage import ArmSpec, start_experiment
from sequences.merchant import rollups
from sequences.models import (
    Cart,
    CartStatus,
    Contact,
    ExperimentArm,
    ExperimentAssignment,
    Message,
    RecoveryStep,
    SandboxOutboxMessage,
    StepStatus,
    Store,
)
from sequences.runtime import Runtime
from tests.support.factories import make_store
from tests.support.worker_processes import WorkerFleet

pytestmark = [pytest.mark.slow, pytest.mark.postgres(only=True)]

# Job loops per worker process (`--threads`); rq registers one worker per loop.
THREADS = 2
# Seconds the workers get to exit once the test has seen everything settle; a warm stop has
# its own test (test_a_worker_with_two_job_loops_exits_within_5_s_of_sigterm).
SETTLED_STOP_S = 3.0


@pytest.fixture
def fleet(settings: Settings, database: Database, redis_conn: Redis, tmp_path: Path) -> Iterator[WorkerFleet]:
    """The test's worker processes; every one is stopped before the database is checked and dropped."""
    fleet = WorkerFleet(settings, tmp_path)
    try:
        yield fleet
    finally:
        fleet.stop_all(timeout=SETTLED_STOP_S)


@pytest.fixture
def engine_runtime(settings: Settings, database: Database, redis_conn: Redis) -> Runtime:
    """The engine in the test process: seeding, and the shoppers' purchases and STOPs."""
    return build_runtime(settings, database=database, redis=redis_conn)


def seed(runtime: Runtime, due: list[datetime]) -> Store:
    """A store with one abandoned cart per due time (cart i, contact i), figures recounted."""
    store = make_store(runtime)
    assert store.id is not None
    seed_abandoned_carts(runtime, store, due)
    # The seed's bulk inserts bypass the dashboard's kept figures: count them once.
    rollups.rebuild(runtime.database.session, store.id)
    return store


def scalar(database: Database, statement: Any) -> int:
    with database.session() as session:
        return int(session.execute(statement).scalar_one())


def step_one_left(database: Database) -> int:
    """Steps 1 not settled yet: still due, or in the ledger without an outcome."""
    return scalar(
        database,
        select(func.count())
        .select_from(RecoveryStep)
        .where(
            col(RecoveryStep.step_number) == 1,
            col(RecoveryStep.status).in_([StepStatus.SCHEDULED, StepStatus.SENDING]),
        ),
    )


def carts_due_or_claimed(database: Database) -> int:
    """Carts whose moment has come, or is a claim's lease away (claimed, being decided)."""
    horizon = datetime.now(UTC) + CLAIM_LEASE
    return scalar(database, select(func.count()).select_from(Cart).where(col(Cart.next_wake_at) <= horizon))


def sent_steps(database: Database) -> int:
    return scalar(
        database,
        select(func.count()).select_from(RecoveryStep).where(col(RecoveryStep.status) == StepStatus.SENT),
    )


def sends_per_step(database: Database) -> Counter[tuple[int, int]]:
    """Sandbox outbox rows (what reached a phone) per (cart, step), through their message rows."""
    with database.session() as session:
        rows = session.execute(
            select(col(Message.cart_id), col(Message.step_number), func.count())
            .select_from(SandboxOutboxMessage)
            .join(Message, col(Message.id) == col(SandboxOutboxMessage.message_id))
            .group_by(col(Message.cart_id), col(Message.step_number))
        ).all()
    return Counter({(cart_id, step): count for cart_id, step, count in rows})


def unlinked_outbox_rows(database: Database) -> int:
    return scalar(
        database,
        select(func.count())
        .select_from(SandboxOutboxMessage)
        .where(col(SandboxOutboxMessage.message_id).is_(None)),
    )


# -- 1. four workers, 2,000 carts due at once, purchases and STOPs racing them ------------------

CARTS = 2_000
WORKERS = 4
# Every RACE_EVERY-th cart gets a shopper who buys or replies STOP while the burst is sent.
RACE_EVERY = 4
RACING_THREADS = 4


@dataclass(frozen=True)
class Record:
    """A purchase or an opt-out the test recorded, and when its commit had returned."""

    cart_id: int
    kind: str  # "purchase" | "stop"
    committed_at: datetime


def race(runtime: Runtime, store_id: int, cart_id: int, kind: str, phone: str) -> Record:
    if kind == "stop":
        handle_reply(runtime, store_id, phone, "STOP", source="race", evidence={})
    else:
        with runtime.database.locked_session() as session:
            store = session.get(Store, store_id)
            assert store is not None
            apply_order(
                runtime,
                session,
                store,
                OrderEvent(
                    order_id=f"order-{cart_id}",
                    created_at=datetime.now(UTC),
                    currency="INR",
                    total=PRICE,
                    cart_id=f"chk_{cart_id}",
                ),
            )
    return Record(cart_id, kind, datetime.now(UTC))


def in_experiment(runtime: Runtime, store_id: int) -> int:
    """Every abandoned cart of the store in one of two arms of a running experiment, its
    figures counted once (the seed's bulk inserts bypass them, as the dashboard's)."""
    experiment = start_experiment(
        runtime, store_id, "Two arms", [ArmSpec("A", control=True), ArmSpec("B")], planned_per_arm=1_000
    )
    assert experiment.id is not None
    with runtime.database.session() as session:
        arms = sorted(
            session.execute(
                select(col(ExperimentArm.id)).where(col(ExperimentArm.experiment_id) == experiment.id)
            ).scalars()
        )
        carts = session.execute(
            select(col(Cart.id), col(Cart.contact_id), col(Cart.abandoned_at)).where(
                col(Cart.store_id) == store_id
            )
        ).all()
        session.execute(
            insert(ExperimentAssignment),
            [
                {
                    "experiment_id": experiment.id,
                    "arm_id": arms[cart_id % 2],
                    "store_id": store_id,
                    "cart_id": cart_id,
                    "contact_id": contact_id,
                    "assigned_at": abandoned_at,
                    "counts_until": abandoned_at + timedelta(days=7),
                    "value_until": abandoned_at + timedelta(days=90),
                }
                for cart_id, contact_id, abandoned_at in carts
            ],
        )
        experiment_figures.rebuild(session, experiment.id)
        session.commit()
    return experiment.id


def test_four_workers_send_each_due_step_once_and_nothing_after_a_purchase_or_stop(
    engine_runtime: Runtime, database: Database, fleet: WorkerFleet
) -> None:
    # Given 2,000 abandoned carts whose step 1 is due in the same second, each in an arm of an
    # experiment (whose kept figures must come out equal to a recount, checked as every test
    # ends: four processes' commits adding to the same arms, purchases and STOPs among them)
    runtime = engine_runtime
    due = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)
    store = seed(runtime, [due] * CARTS)
    assert store.id is not None
    experiment_id = in_experiment(runtime, store.id)
    with database.session() as session:
        phones = dict(session.execute(select(col(Cart.id), col(Contact.phone_e164)).join(Contact)).all())
    racers = [
        (cart_id, "purchase" if n % 2 else "stop")
        for n, cart_id in enumerate(range(RACE_EVERY, CARTS + 1, RACE_EVERY))
    ]
    random.Random(16).shuffle(racers)

    # When four worker processes start sending them, and a quarter of the shoppers buy or reply
    # STOP meanwhile (each record takes a few tens of ms: they go on through the whole burst)
    fleet.start(WORKERS, threads=THREADS)
    # (From the burst's first send decision: started before it, the shoppers all finished
    # while four workers were still starting in a clean clone, and nothing raced.)
    fleet.wait_until(
        lambda: (
            scalar(
                database,
                select(func.count())
                .select_from(RecoveryStep)
                .where(col(RecoveryStep.attempted_at).is_not(None)),
            )
            > 0
        ),
        timeout=60,
        what="the burst's first send decision",
        poll=0.01,
    )
    records: list[Record] = []
    failures: list[Exception] = []
    pending = iter(racers)
    take = threading.Lock()

    def shopper() -> None:
        while True:
            with take:
                racer = next(pending, None)
            if racer is None:
                return
            cart_id, kind = racer
            try:
                records.append(race(runtime, store.id or 0, cart_id, kind, phones[cart_id]))
            except Exception as exc:  # reported below, with the count
                failures.append(exc)

    shoppers = [threading.Thread(target=shopper, name=f"shopper-{n}") for n in range(RACING_THREADS)]
    for thread in shoppers:
        thread.start()
    for thread in shoppers:
        thread.join(60)
    assert not failures, f"{len(failures)} purchases/STOPs failed, first: {failures[0]!r}"
    fleet.wait_until(
        lambda: step_one_left(database) == 0 and carts_due_or_claimed(database) == 0,
        timeout=60,
        what="every step 1 settled and no cart due",
        poll=0.25,
    )
    fleet.check_alive()
    fleet.stop_all(timeout=SETTLED_STOP_S)

    # Then no (cart, step) reached a phone twice, and every outbox row is a ledger message
    sends = sends_per_step(database)
    assert [key for key, count in sends.items() if count > 1] == []
    assert unlinked_outbox_rows(database) == 0
    # Only step 1 was due: steps 2 and 3 are hours away
    assert {step for _cart, step in sends} == {1}

    by_cart = {record.cart_id: record for record in records}
    assert len(by_cart) == len(racers)
    with database.session() as session:
        steps = {
            cart_id: (status, attempted_at)
            for cart_id, status, attempted_at in session.execute(
                select(
                    col(RecoveryStep.cart_id), col(RecoveryStep.status), col(RecoveryStep.attempted_at)
                ).where(col(RecoveryStep.step_number) == 1)
            )
        }
        carts = {
            cart_id: (status, closed_at, opted_out_at)
            for cart_id, status, closed_at, opted_out_at in session.execute(
                select(col(Cart.id), col(Cart.status), col(Cart.closed_at), col(Contact.opted_out_at)).join(
                    Contact
                )
            )
        }

    # Every cart without a racing shopper had its step 1 sent, once
    quiet = [cart_id for cart_id in range(1, CARTS + 1) if cart_id not in by_cart]
    assert [cart_id for cart_id in quiet if steps[cart_id][0] != StepStatus.SENT] == []
    assert [cart_id for cart_id in quiet if sends[(cart_id, 1)] != 1] == []

    # A racing shopper's cart was messaged before the purchase or STOP was recorded, or never
    messaged_first = never_messaged = 0
    after_record: list[str] = []
    for cart_id, record in by_cart.items():
        status, attempted_at = steps[cart_id]
        cart_status, closed_at, opted_out_at = carts[cart_id]
        # When the record's own transaction says it happened (taken under its locks).
        recorded_in_db = opted_out_at if record.kind == "stop" else closed_at
        assert recorded_in_db is not None, f"cart {cart_id}: the {record.kind} was not recorded"
        if sends[(cart_id, 1)]:
            messaged_first += 1
            assert status == StepStatus.SENT, f"cart {cart_id}: sent but its step is {status}"
            assert attempted_at is not None
            if not (attempted_at < record.committed_at and attempted_at < recorded_in_db):
                after_record.append(
                    f"cart {cart_id} ({record.kind}): ledger at {attempted_at.isoformat()}, recorded at "
                    f"{recorded_in_db.isoformat()}, committed by {record.committed_at.isoformat()}"
                )
        else:
            never_messaged += 1
            assert status in (StepStatus.CANCELLED, StepStatus.SKIPPED), f"cart {cart_id}: step 1 {status}"
            expected = CartStatus.OPTED_OUT if record.kind == "stop" else CartStatus.CONVERTED_UNASSISTED
            assert cart_status == expected, f"cart {cart_id}: {cart_status} after its {record.kind}"
    assert after_record == []
    # The race was run: shoppers recorded before, during and after the burst of sends
    attempted = sorted(at for _status, at in steps.values() if at is not None)
    during = sum(attempted[0] <= record.committed_at <= attempted[-1] for record in records)
    print(
        f"\nburst: {len(attempted)} ledger writes in {(attempted[-1] - attempted[0]).total_seconds():.1f} s; "
        f"racers: {during} recorded during it, {messaged_first} messaged before their record, "
        f"{never_messaged} never messaged"
    )
    assert messaged_first > 0 and never_messaged > 0 and during > 0, (messaged_first, never_messaged, during)

    # And the dashboard's and the experiment's kept figures equal a recount (conftest checks it
    # again at teardown): every cart, send, purchase and STOP counted once, in its arm
    with database.session() as session:
        assert rollups.differences(session, store.id) == []
        assert experiment_figures.differences(session, experiment_id) == []
        arms = experiment_figures.arm_figures(session, experiment_id).values()
    assert sum(arm["eligible"] for arm in arms) == CARTS
    assert sum(arm["messaged"] for arm in arms) == len(sends)
    assert sum(arm["opted_out"] for arm in arms) == sum(record.kind == "stop" for record in records)
    assert sum(arm["recovered"] for arm in arms) == sum(record.kind == "purchase" for record in records)


# -- 2. the worker claiming due work is SIGKILLed mid-burst ----------------------------------

KILL_CARTS = 700
# Due times spread evenly over this window, starting once the workers are up.
KILL_FIRST_DUE = timedelta(seconds=5)
KILL_SPREAD = timedelta(seconds=10)
# The bound on what a dead worker may cost the steps still to go.
KILL_BOUND = timedelta(seconds=10)
SENDS_BEFORE_KILL = 60


def worker_mid_write(database: Database) -> str | None:
    """The worker whose connection has a write transaction open right now (claiming carts,
    writing the ledger, the outbox or the outcomes), if any."""
    with database.engine.connect() as connection:
        return connection.execute(
            text(
                "SELECT application_name FROM pg_stat_activity"
                " WHERE datname = current_database() AND application_name LIKE 'worker-%'"
                " AND backend_xid IS NOT NULL ORDER BY xact_start LIMIT 1"
            )
        ).scalar()


def test_a_worker_killed_mid_burst_delays_no_step_more_than_10_s_and_sends_none_twice(
    engine_runtime: Runtime, database: Database, fleet: WorkerFleet
) -> None:
    # Given steps due at a steady rate over ~10 s from once the workers are up, two workers
    # sending them
    runtime = engine_runtime
    first_due = datetime.now(UTC) + KILL_FIRST_DUE
    due = [first_due + KILL_SPREAD * n / KILL_CARTS for n in range(KILL_CARTS)]
    seed(runtime, due)
    fleet.start(2, threads=THREADS, name_connections=True)
    fleet.wait_until(
        lambda: sent_steps(database) >= SENDS_BEFORE_KILL, timeout=45, what=f"{SENDS_BEFORE_KILL} sends"
    )

    # When the worker caught with a write transaction open on the schedule is SIGKILLed
    victim_name: str | None = None

    def caught() -> bool:
        nonlocal victim_name
        victim_name = worker_mid_write(database)
        return victim_name is not None

    fleet.wait_until(caught, timeout=10, what="a worker mid-write", poll=0.002)
    assert victim_name is not None
    victim = fleet.by_name(victim_name)
    victim.kill()
    killed_at = datetime.now(UTC)
    survivor = next(worker for worker in fleet.workers if worker is not victim)
    with database.session() as session:
        in_ledger_at_kill = {
            step_id
            for step_id in session.execute(
                select(col(RecoveryStep.id)).where(col(RecoveryStep.status) == StepStatus.SENDING)
            ).scalars()
        }

    # Then the survivor sends the rest: every step 1 is settled by the last due time + the bound
    fleet.wait_until(
        lambda: (
            scalar(
                database,
                select(func.count())
                .select_from(RecoveryStep)
                .where(col(RecoveryStep.step_number) == 1, col(RecoveryStep.status) == StepStatus.SCHEDULED),
            )
            == 0
            and carts_due_or_claimed(database) == 0
        ),
        timeout=(due[-1] - datetime.now(UTC)).total_seconds() + KILL_BOUND.total_seconds() + 5,
        what="every step 1 out of the schedule",
        poll=0.25,
    )
    fleet.check_alive([survivor])
    fleet.stop_all(timeout=SETTLED_STOP_S)

    with database.session() as session:
        rows = session.execute(
            select(
                col(RecoveryStep.id),
                col(RecoveryStep.cart_id),
                col(RecoveryStep.status),
                col(RecoveryStep.due_at),
                col(RecoveryStep.attempted_at),
                col(RecoveryStep.sent_at),
            ).where(col(RecoveryStep.step_number) == 1)
        ).all()
        sent_after_kill = {
            step_id
            for step_id in session.execute(
                select(col(Message.step_id))
                .join(SandboxOutboxMessage, col(SandboxOutboxMessage.message_id) == col(Message.id))
                .where(col(SandboxOutboxMessage.created_at) > killed_at)
            ).scalars()
        }
    sends = sends_per_step(database)
    # None twice
    assert [key for key, count in sends.items() if count > 1] == []
    # What the killed worker had put in the ledger stays there (SENDING, later UNCERTAIN), never
    # sent again; every other step was sent
    stuck = [row for row in rows if row.status in (StepStatus.SENDING, StepStatus.UNCERTAIN)]
    assert {row.id for row in stuck} <= in_ledger_at_kill
    assert [row.id for row in stuck if row.id in sent_after_kill] == []
    assert [
        row.cart_id
        for row in rows
        if row.status not in (StepStatus.SENT, StepStatus.SENDING, StepStatus.UNCERTAIN)
    ] == []
    # Within 10 s of the later of its due time and the kill, for every step still to go at the kill
    late = []
    lateness = []
    for row in rows:
        if row.status != StepStatus.SENT or row.sent_at <= killed_at:
            continue
        waited = row.sent_at - max(row.due_at, killed_at)
        lateness.append(waited.total_seconds())
        if waited > KILL_BOUND:
            late.append(f"cart {row.cart_id}: due {row.due_at.isoformat()}, sent {row.sent_at.isoformat()}")
    assert late == [], f"killed at {killed_at.isoformat()}: {late[:10]}"
    assert lateness, "nothing was left to send after the kill"
    print(
        f"\n{victim.name} killed {(killed_at - first_due).total_seconds():.1f} s into the burst; "
        f"{len(stuck)} steps left in its ledger; after the kill {len(lateness)} sent, "
        f"worst {max(lateness):.2f} s after max(due, kill)"
    )


# -- 3. the periodic sweep, once per period across three workers -----------------------------

# The sweep's period for this test (production: app.worker.SWEEP_INTERVAL_SECONDS = 60). Each
# worker looks every app.worker.PROMOTE_LOCK_MS (1.5 s), so every 4 s period is looked at
# even when a loaded machine delays a look or two.
SWEEP_PERIOD_S = 4
FULL_PERIODS = 4
SWEEP_LAUNCHER = ("-m", "tests.support.short_sweep_worker", str(SWEEP_PERIOD_S))
SWEEP_JOB_RAN = re.compile(r"Job OK.*\(sweep-(\d+)\)")


def test_the_periodic_sweep_runs_once_per_period_with_three_workers(
    database: Database, redis_conn: Redis, fleet: WorkerFleet
) -> None:
    # Given three workers whose sweep comes every 4 s
    workers = fleet.start(3, threads=1, command=SWEEP_LAUNCHER)
    fleet.wait_until(lambda: int(redis_conn.scard("rq:workers")) >= 3, timeout=45, what="three workers")
    first = int(time.time()) // SWEEP_PERIOD_S + 1
    last = first + FULL_PERIODS - 1

    def sweeps_ran() -> dict[str, Counter[int]]:
        """Per worker, how many times each period's sweep job ran to the end."""
        return {
            worker.name: Counter(
                int(match.group(1))
                for entry in worker.log_entries()
                if (match := SWEEP_JOB_RAN.search(str(entry.get("event", ""))))
            )
            for worker in workers
        }

    # When they run for four whole periods
    fleet.wait_until(
        lambda: any(last in ran for ran in sweeps_ran().values()),
        timeout=(FULL_PERIODS + 1) * SWEEP_PERIOD_S + 20,
        what=f"the sweep of period {last}",
        poll=0.2,
    )
    fleet.check_alive()
    fleet.stop_all(timeout=SETTLED_STOP_S)

    # Then each whole period had exactly one sweep, and no period ever had two
    by_worker = sweeps_ran()
    ran = sum(by_worker.values(), Counter[int]())
    assert {period: ran[period] for period in range(first, last + 1)} == dict.fromkeys(
        range(first, last + 1), 1
    )
    assert [period for period, count in ran.items() if count > 1] == []
    # Each one ran to its end
    done = sum(entry.get("event") == "sweep done" for worker in workers for entry in worker.log_entries())
    assert done == sum(ran.values())
    print(f"\nsweeps per worker: { {name: sorted(periods) for name, periods in by_worker.items()} }")


# -- the worker process's own life: quiet when idle, and a prompt warm stop ------------------

# Longer than the runtime's Redis socket timeout (app.wiring: 5 s), shorter than rq's blocking
# dequeue (WORKER_TTL_SECONDS - 15 = 15 s): an idle job loop waits through it.
IDLE_S = 8.0
# Seconds a warm stop of an idle worker may take: rq's main loop stops at once (measured: 1.6 s
# from SIGTERM to exit with `--threads 1`), and platforms SIGKILL what is still running soon
# after (`docker stop`: 10 s; Heroku: 30 s), mid-batch, leaving its steps uncertain.
WARM_STOP_S = 5.0


def test_idle_workers_log_no_errors(redis_conn: Redis, fleet: WorkerFleet) -> None:
    # Given four workers with two job loops each and nothing to do
    workers = fleet.start(4, threads=2)
    fleet.wait_until(lambda: int(redis_conn.scard("rq:workers")) >= 8, timeout=45, what="eight job loops")

    # When they wait for work for longer than a Redis read may take
    time.sleep(IDLE_S)
    fleet.check_alive()

    # Then none logged an error: waiting for a job is not a failure
    errors = {
        worker.name: [
            entry["event"] for entry in worker.log_entries() if entry.get("level") in ("error", "critical")
        ]
        for worker in workers
    }
    assert {name: events for name, events in errors.items() if events} == {}


def test_a_worker_with_two_job_loops_exits_within_5_s_of_sigterm(
    redis_conn: Redis, fleet: WorkerFleet
) -> None:
    # Given a worker with two job loops, idle: its first sweep done, both loops waiting for a job
    (worker,) = fleet.start(1, threads=2)
    fleet.wait_until(
        lambda: any(entry.get("event") == "sweep done" for entry in worker.log_entries()),
        timeout=45,
        what="the first sweep",
    )
    time.sleep(1)

    # When it is asked to stop (a deploy, a scale-down)
    worker.terminate()
    started = time.monotonic()
    while worker.alive() and time.monotonic() - started < WARM_STOP_S:
        time.sleep(0.1)
    exited_in = time.monotonic() - started
    still_running = worker.alive()
    worker.kill()

    # Then it has exited, cleanly, before the platform would have to kill it
    assert not still_running, f"still running {exited_in:.1f} s after SIGTERM:\n{worker.log_tail()}"
    assert worker.process.returncode == 0
