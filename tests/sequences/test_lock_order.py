"""The one lock order (sequences.db): transactions that meet on a shopper wait, never deadlock.

Each test sets up, on PostgreSQL with real connections, the interleaving that used to form a
cycle: a test connection holds a lock so that the racing transactions queue behind it in a
known order (checked in ``pg_stat_activity``, not guessed with sleeps), then lets go. Under the
old order PostgreSQL's deadlock detector aborted one of them after ``deadlock_timeout`` (1 s);
now both commit. A lock granted after such a wait is on the row as it is then, not as it was
read before (the last test).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import text
from sqlmodel import select

from sequences.db import lock_cart, lock_cart_with_contact, lock_contact
from sequences.engine import steps
from sequences.engine.consent import handle_reply
from sequences.engine.tracking import process_delivery
from sequences.models import Cart, CartStatus, Contact, DeliveryStatus, StepStatus, Store, WebhookDelivery
from sequences.runtime import Runtime
from sequences.whatsapp import health
from tests.support.factories import PHONE, send_webhook
from tests.support.journey import Journey
from tests.support.shopify import MIN, T0, ShopifyDriver, fixture, iso

OTHER_PHONE = "+919812345678"
# How long a test waits for a transaction to reach its lock wait before calling it stuck.
WAIT_LIMIT_S = 5.0


def _lock_waiters(runtime: Runtime) -> int:
    """Backends of this test's database waiting for a lock (the test has a database of its own)."""
    with runtime.database.engine.connect() as connection:
        return int(
            connection.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            ).scalar_one()
        )


def _until_waiting(runtime: Runtime, count: int) -> None:
    deadline = time.monotonic() + WAIT_LIMIT_S
    while _lock_waiters(runtime) < count:
        assert time.monotonic() < deadline, f"expected {count} transactions waiting for a lock"
        time.sleep(0.005)


def _started(job: Callable[[], Any], errors: list[BaseException]) -> threading.Thread:
    """``job`` running in a thread of its own; what it raises lands in ``errors``."""

    def run() -> None:
        try:
            job()
        except BaseException as exc:  # kept for the test's assertion: a thread's error is otherwise lost
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _joined(*threads: threading.Thread) -> None:
    for thread in threads:
        thread.join(WAIT_LIMIT_S)
        assert not thread.is_alive(), "a transaction is still waiting for a lock"


def _pending(runtime: Runtime, topic: str) -> int:
    with runtime.database.session() as session:
        delivery_id = session.exec(
            select(WebhookDelivery.id).where(
                WebhookDelivery.topic == topic, WebhookDelivery.status == DeliveryStatus.PENDING
            )
        ).one()
    assert delivery_id is not None
    return delivery_id


# -- 1. a privacy redact and a snapshot of the same shopper -----------------------------------


@pytest.mark.postgres(only=True)
def test_a_redact_and_a_snapshot_of_the_same_shopper_at_once_both_apply(shopify: ShopifyDriver) -> None:
    """The snapshot's worker holds its delivery row and waits for the contact; the redact holds
    the contact and empties the payloads of the shopper's deliveries, that one included. It
    used to wait for that row: a cycle. Now a delivery being applied is left to its worker
    (it applies after the erasure, as a delivery arriving a moment later would)."""
    shopify.install()
    checkout = shopify.checkout()
    runtime = shopify.runtime
    later = fixture("checkouts_update") | {
        "token": checkout["token"],
        "updated_at": iso(T0 + MIN),
        "abandoned_checkout_url": checkout["abandoned_checkout_url"],
    }
    with shopify.at(MIN):
        assert shopify.post("checkouts/update", later).status_code == 200
        redact = shopify.post(
            "customers/redact", fixture("customers_redact"), path="/webhooks/shopify/compliance"
        )
        assert redact.status_code == 200
    snapshot_id, redact_id = _pending(runtime, "checkouts/update"), _pending(runtime, "customers/redact")
    with runtime.database.session() as session:
        contact_id = session.exec(select(Contact.id).where(Contact.phone_e164 == PHONE)).one()

    with runtime.database.engine.connect() as holder:
        # Holding the contact lines them up: the redact queues for it first, then the snapshot
        # (already holding its own delivery row) behind it.
        holder.execute(text("SELECT id FROM contact WHERE id = :id FOR UPDATE"), {"id": contact_id})
        outcomes: dict[str, str] = {}
        errors: list[BaseException] = []

        def apply(name: str, delivery_id: int) -> None:
            outcomes[name] = process_delivery(runtime, delivery_id)

        redact_thread = _started(lambda: apply("redact", redact_id), errors)
        _until_waiting(runtime, 1)
        snapshot_thread = _started(lambda: apply("snapshot", snapshot_id), errors)
        _until_waiting(runtime, 2)
        holder.rollback()
    _joined(redact_thread, snapshot_thread)

    assert errors == []
    assert outcomes == {"redact": "customer erased (1 contacts)", "snapshot": "updated"}
    with runtime.database.session() as session:
        erased = session.get(Contact, contact_id)
        assert erased is not None and erased.phone_e164 != PHONE and erased.email is None
        # The snapshot applied after the erasure: the shopper is known again from it alone.
        cart = session.exec(select(Cart).where(Cart.platform_cart_id == checkout["token"])).one()
        assert cart.contact_id != contact_id


# -- 2. lock_cart_with_contact when the cart changes hands while it waits ----------------------


@pytest.mark.postgres(only=True)
def test_a_cart_moving_to_another_shopper_while_locked_never_makes_a_cycle(journey: Journey) -> None:
    """A sender peeks the cart's contact (A), locks A, waits for the cart, which meanwhile moves
    to contact B; a STOP from B waits for B. Once the move commits the sender holds the cart
    and needs B; the STOP holds B and needs the cart. The sender's retry used to wait for B
    with the cart still locked: a cycle. Now it lets the cart go first."""
    runtime = journey.runtime
    journey.checkout()
    journey.checkout(checkout_id="chk_2", token="tok_2", phone=OTHER_PHONE)
    moved, other = journey.cart("chk_1"), journey.cart("chk_2")
    assert moved.id is not None and other.contact_id is not None and moved.contact_id != other.contact_id
    cart_id, contact_b = moved.id, other.contact_id
    locked: list[tuple[int | None, int | None]] = []

    def send() -> None:
        with runtime.database.locked_session() as session:
            cart, contact = lock_cart_with_contact(session, cart_id)
            assert cart is not None
            locked.append((cart.contact_id, contact.id if contact else None))

    def stop() -> None:
        handle_reply(runtime, moved.store_id, OTHER_PHONE, "STOP", source="whatsapp_reply", evidence={})

    errors: list[BaseException] = []
    with runtime.database.locked_session() as mover:
        # The move, in the documented order: the new contact, then the cart.
        assert lock_contact(mover, contact_b) is not None
        cart = lock_cart(mover, cart_id)
        assert cart is not None
        cart.contact_id = contact_b
        mover.flush()
        sender = _started(send, errors)
        _until_waiting(runtime, 1)
        stopper = _started(stop, errors)
        _until_waiting(runtime, 2)
    _joined(sender, stopper)

    assert errors == []
    assert locked == [(contact_b, contact_b)]
    assert journey.cart("chk_1").status == CartStatus.OPTED_OUT


# -- 3. an uninstall while a sender holds one of the store's carts ----------------------------


@pytest.mark.postgres(only=True)
@pytest.mark.parametrize("sender_writes", ["the cart's steps", "the store row"])
def test_an_uninstall_waits_for_a_sender_holding_one_of_its_carts(
    messaged_journey: Journey, sender_writes: str
) -> None:
    """A sender holds a contact and its cart, then writes the cart's steps (cancelling them) or
    the store row (pausing it after a WhatsApp error). The uninstall used to write the store
    row and every scheduled step of the store before waiting for that cart: a cycle. Now it
    takes the contacts and carts first, in the lock order, and waits for the sender."""
    journey = messaged_journey
    runtime = journey.runtime
    cart = journey.cart()
    assert cart.id is not None and any(step.status == StepStatus.SCHEDULED for step in journey.steps())
    with journey.at(20 * MIN):
        uninstall = send_webhook(journey.client, "app/uninstalled", {"uninstalled_at": iso(T0 + 20 * MIN)})
    assert uninstall.status_code == 200
    uninstall_id = _pending(runtime, "app/uninstalled")
    errors: list[BaseException] = []
    with runtime.database.locked_session() as sender:
        locked, _contact = lock_cart_with_contact(sender, cart.id)
        assert locked is not None
        uninstaller = _started(lambda: process_delivery(runtime, uninstall_id), errors)
        _until_waiting(runtime, 1)
        if sender_writes == "the cart's steps":
            steps.cancel_open(sender, cart.id, "the sender's own reason")
        else:
            store = sender.get(Store, cart.store_id)
            assert store is not None
            health.pause_store(store, health.WHATSAPP_ERROR, "WhatsApp error 131042", runtime.now())
        sender.flush()
    _joined(uninstaller)

    assert errors == []
    assert journey.cart().status == CartStatus.EXPIRED
    assert all(step.status != StepStatus.SCHEDULED for step in journey.steps())


# -- 4. a STOP waiting for a cart that moves to another shopper ---------------------------------


@pytest.mark.postgres(only=True)
def test_a_stop_leaves_alone_a_cart_that_moved_to_another_shopper_while_it_waited(journey: Journey) -> None:
    """A's STOP reads A's open carts, then waits for each lock in turn; one of them moves to B
    meanwhile. Once locked it is B's cart: A's STOP must not close it."""
    runtime = journey.runtime
    journey.checkout()
    journey.checkout(checkout_id="chk_2", token="tok_2", phone=OTHER_PHONE)
    moving, other = journey.cart("chk_1"), journey.cart("chk_2")
    assert moving.id is not None and other.contact_id is not None
    errors: list[BaseException] = []
    with runtime.database.locked_session() as mover:
        assert lock_contact(mover, other.contact_id) is not None
        cart = lock_cart(mover, moving.id)
        assert cart is not None
        cart.contact_id = other.contact_id
        mover.flush()
        stopper = _started(
            lambda: handle_reply(
                runtime, moving.store_id, PHONE, "STOP", source="whatsapp_reply", evidence={}
            ),
            errors,
        )
        _until_waiting(runtime, 1)
    _joined(stopper)

    assert errors == []
    assert journey.cart("chk_1").status != CartStatus.OPTED_OUT
    with runtime.database.session() as session:
        stopped = session.exec(select(Contact).where(Contact.phone_e164 == PHONE)).one()
        assert stopped.opted_out_at is not None
