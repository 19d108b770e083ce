"""Draining pending deliveries: oldest first, each processed once however many drain at once,
and a delivery that fails is backed off without holding back the others."""

from __future__ import annotations

import multiprocessing
from datetime import timedelta

import pytest
import time_machine
from sqlmodel import col, func, select

from app.wiring import build_runtime
from sequences.db import Database
from sequences.engine import intake
from sequences.engine.intake import CLAIM_LEASE, claim_deliveries, drain_deliveries, retry_delay
from sequences.models import Cart, CartEvent, DeliveryStatus, WebhookDelivery
from tests.support.factories import checkout_payload, collect_spooled, make_store, send_webhook


@pytest.fixture
def store(runtime):
    return make_store(runtime)


def deliver(client, runtime, count: int) -> list[int]:
    """``count`` checkouts from as many shoppers (distinct phones: each makes its own contact),
    stored (spooled ones moved in, as a drain does first); their ids in the order they came."""
    for n in range(count):
        payload = checkout_payload(checkout_id=f"c{n}", token=f"t{n}", phone=f"+9198{n:08d}")
        response = send_webhook(client, "checkouts/create", payload)
        assert response.json["status"] == "accepted", response.json
    collect_spooled(runtime)
    with runtime.database.session() as session:
        ids = session.exec(
            select(WebhookDelivery.id).order_by(col(WebhookDelivery.received_at), col(WebhookDelivery.id))
        ).all()
    assert len(ids) == count
    return [i for i in ids if i is not None]


def rows(runtime) -> list[WebhookDelivery]:
    with runtime.database.session() as session:
        return list(session.exec(select(WebhookDelivery).order_by(col(WebhookDelivery.id))).all())


def test_pending_deliveries_are_processed_oldest_first_and_once(client, runtime, store):
    # Given three stored deliveries
    ids = deliver(client, runtime, 3)
    # When the workers drain twice
    first, second = drain_deliveries(runtime, limit=100), drain_deliveries(runtime, limit=100)
    # Then all three were processed by the first drain, in the order they came, and the
    # second found nothing to do
    assert (first, second) == (3, 0)
    done = rows(runtime)
    assert [d.status for d in done] == [DeliveryStatus.PROCESSED] * 3
    processed_at = [d.processed_at for d in done]
    assert processed_at == sorted(processed_at)
    assert [d.id for d in done] == ids


def test_a_drain_takes_no_more_than_its_limit(client, runtime, store):
    deliver(client, runtime, 5)
    assert drain_deliveries(runtime, limit=2) == 2
    assert [d.status for d in rows(runtime)].count(DeliveryStatus.PENDING) == 3
    assert drain_deliveries(runtime, limit=100) == 3


def test_a_failing_delivery_is_backed_off_and_holds_back_no_other(client, runtime, store, monkeypatch):
    # Given three deliveries, the middle one failing whenever it is processed
    ids = deliver(client, runtime, 3)
    connector = runtime.connectors["demo"]
    real_parse = connector.parse_webhook

    def parse_failing_c1(identity, raw, **kwargs):
        if b'"id": "c1"' in raw:
            raise RuntimeError("the database went away")
        return real_parse(identity, raw, **kwargs)

    monkeypatch.setattr(connector, "parse_webhook", parse_failing_c1)
    now = runtime.now()
    with time_machine.travel(now, tick=False):
        # When the workers drain
        processed = drain_deliveries(runtime, limit=100)
        # Then the others were processed, and the failing one waits for its back-off...
        assert processed == 2
        failed = rows(runtime)[1]
        assert failed.id == ids[1] and failed.status == DeliveryStatus.PENDING
        assert failed.attempts == 1 and failed.claimed_until == now + retry_delay(1)
        assert failed.outcome and "RuntimeError" in failed.outcome
        # ...rather than being tried again at once
        assert drain_deliveries(runtime, limit=100) == 0
    # When its back-off has passed (and the fault has gone), it is tried and processed
    monkeypatch.setattr(connector, "parse_webhook", real_parse)
    with time_machine.travel(now + retry_delay(1) + timedelta(seconds=1), tick=False):
        assert drain_deliveries(runtime, limit=100) == 1
    assert [d.status for d in rows(runtime)] == [DeliveryStatus.PROCESSED] * 3
    assert rows(runtime)[1].attempts == 2


def test_retry_delays_double_up_to_an_hour():
    assert [retry_delay(n).total_seconds() for n in (1, 2, 3)] == [2, 4, 8]
    assert retry_delay(11) < retry_delay(12) == retry_delay(10_000) == intake.RETRY_LONGEST


def test_rows_claimed_by_a_worker_that_died_are_claimed_again_after_the_lease(client, runtime, store):
    # Given a worker claimed two deliveries and died before processing them
    deliver(client, runtime, 2)
    now = runtime.now()
    with time_machine.travel(now, tick=False):
        dead_workers = claim_deliveries(runtime, 10)
        # Then nobody else takes them while the claim lasts
        assert len(dead_workers) == 2
        assert drain_deliveries(runtime, limit=100) == 0
    # And after the lease, another worker does
    with time_machine.travel(now + CLAIM_LEASE + timedelta(seconds=1), tick=False):
        assert drain_deliveries(runtime, limit=100) == 2


# -- several drainers at once (PostgreSQL: SQLite has one writer) -------------------------------

DELIVERIES = 120
DRAINERS = 4


def _drain_in_child(settings, start, results) -> None:
    runtime = build_runtime(settings, database=Database(settings.database_url))
    start.wait(10)
    total = 0
    # Small claims, so the drainers contend for the same oldest rows again and again.
    while (done := drain_deliveries(runtime, limit=5)) > 0:
        total += done
    results.put(total)
    runtime.database.dispose()


@pytest.mark.postgres(only=True)
def test_several_worker_processes_draining_at_once_process_each_delivery_once(
    client, runtime, store, settings
):
    # Given many pending deliveries
    deliver(client, runtime, DELIVERIES)
    # When four worker processes drain them at the same moment
    context = multiprocessing.get_context("fork")
    start, results = context.Event(), context.Queue()
    children = [
        context.Process(target=_drain_in_child, args=(settings, start, results)) for _ in range(DRAINERS)
    ]
    for child in children:
        child.start()
    start.set()
    counts = [results.get(timeout=60) for _ in children]
    for child in children:
        child.join(10)
        assert child.exitcode == 0
    # Then every delivery was claimed once and processed once, across all of them
    print("XX", [(d.id, d.status, d.attempts, d.outcome) for d in rows(runtime) if d.status != "processed"])
    assert sum(counts) == DELIVERIES
    done = rows(runtime)
    assert {d.status for d in done} == {DeliveryStatus.PROCESSED}
    assert {d.attempts for d in done} == {1}
    with runtime.database.session() as session:
        assert session.exec(select(func.count()).select_from(Cart)).one() == DELIVERIES
        captured = session.exec(
            select(func.count()).select_from(CartEvent).where(CartEvent.kind == "cart_captured")
        ).one()
    assert captured == DELIVERIES
