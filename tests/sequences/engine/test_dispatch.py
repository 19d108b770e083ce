"""The schedule is the database's: due carts are claimed in batches by whichever worker asks."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlmodel import col, select

from sequences.engine import dispatch
from sequences.engine.dispatch import CLAIM_LEASE, claim_due_carts, dispatch_due
from sequences.engine.sending import SENDING_GRACE
from sequences.models import Cart, MessageStatus, StepStatus
from tests.support.journey import T0

MIN = timedelta(minutes=1)


def _checkouts(journey, count: int, gap: timedelta = MIN) -> list[int]:
    for n in range(count):
        # ``gap`` apart: their moments come in this order.
        journey.checkout(n * gap, checkout_id=f"chk_{n}", token=f"tok_{n}", phone=f"+9198765{n:05d}")
    with journey.runtime.database.session() as session:
        return list(session.exec(select(Cart.id).order_by(col(Cart.next_wake_at))).all())


@pytest.mark.postgres
def test_a_claim_takes_the_due_carts_oldest_first_and_none_that_is_not_due(journey, runtime):
    cart_ids = _checkouts(journey, 5)
    with journey.at(15 * MIN + 2 * MIN):
        # Carts 0, 1 and 2 are due (15, 16 and 17 minutes after their checkouts)
        assert claim_due_carts(runtime, limit=2) == cart_ids[:2]
        assert claim_due_carts(runtime, limit=10) == cart_ids[2:3]
        assert claim_due_carts(runtime, limit=10) == []


@pytest.mark.postgres
def test_a_claimed_cart_comes_due_again_after_the_lease_when_its_claimer_died(journey, runtime):
    [cart_id] = _checkouts(journey, 1)
    due = T0 + 15 * MIN
    with journey.at(due):
        # A worker claims it and dies before deciding anything
        assert claim_due_carts(runtime) == [cart_id]
    with journey.at(due + CLAIM_LEASE - timedelta(seconds=1)):
        assert claim_due_carts(runtime) == []
    # Then whichever worker is alive takes it when the lease is over, and sends
    journey.run(due + CLAIM_LEASE)
    assert len(journey.outbox()) == 1


def test_a_batch_that_failed_is_tried_again_after_the_lease(journey, runtime, monkeypatch):
    [cart_id] = _checkouts(journey, 1)
    real = dispatch.advance_batch
    calls: list[list[int]] = []

    def fails_once(runtime_, cart_ids):
        calls.append(cart_ids)
        if len(calls) == 1:
            raise ConnectionError("the database went away")
        return real(runtime_, cart_ids)

    monkeypatch.setattr(dispatch, "advance_batch", fails_once)
    with journey.at(15 * MIN):
        assert dispatch_due(runtime) == 1
    assert journey.outbox() == []
    journey.run(15 * MIN + CLAIM_LEASE)
    assert calls == [[cart_id], [cart_id]]
    assert len(journey.outbox()) == 1


@pytest.mark.postgres(only=True)
def test_concurrent_claimers_never_take_the_same_cart(journey, runtime):
    cart_ids = _checkouts(journey, 40, gap=timedelta(seconds=10))
    claims: list[list[int]] = []
    barrier = threading.Barrier(4)

    def claimer() -> None:
        barrier.wait()
        while batch := claim_due_carts(runtime, limit=3):
            claims.append(batch)

    with journey.at(15 * MIN + 40 * MIN):
        threads = [threading.Thread(target=claimer) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    claimed = [cart_id for batch in claims for cart_id in batch]
    assert sorted(claimed) == sorted(cart_ids)


class _SenderDied(BaseException):
    """Escapes every handler, as the end of a killed process would."""


def test_a_step_left_sending_by_a_dead_sender_is_settled_by_the_carts_own_moment(
    journey, runtime, monkeypatch
):
    # Given a sender that wrote the ledger and died before the transport answered
    journey.checkout()

    def dies(_messages):
        raise _SenderDied

    with monkeypatch.context() as patch:
        patch.setattr(runtime.transport, "send", dies)
        patch.setattr(runtime.transport, "send_batch", dies)
        with pytest.raises(_SenderDied):
            journey.run(15 * MIN)
    assert journey.steps()[0].status == StepStatus.SENDING
    # When the cart's moment comes (the end of the grace period), with no sweep
    assert journey.cart().next_wake_at == T0 + 15 * MIN + SENDING_GRACE
    journey.run(15 * MIN + SENDING_GRACE)
    # Then the step is uncertain (never resent) and the sequence goes on to step 2 in time
    steps = journey.steps()
    assert steps[0].status == StepStatus.UNCERTAIN
    assert journey.outbox() == []
    assert journey.cart().next_wake_at == steps[1].due_at
    journey.run(steps[1].due_at)
    assert len(journey.outbox()) == 1
    assert [m.status for m in journey.messages()] == [MessageStatus.UNCERTAIN, MessageStatus.SENT]
