"""One test (at least) per DESIGN.md invariant that fails without it."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlmodel import func, select

from app.wiring import build_runtime
from channels.transport import OutboundMessage, SendOutcome
from sequences import runtime as runtime_module
from sequences.db import Database
from sequences.engine.consent import handle_reply
from sequences.engine.sending import SENDING_GRACE, advance_cart
from sequences.engine.sweep import run_sweep
from sequences.models import (
    Cart,
    CartStatus,
    Contact,
    Message,
    MessageStatus,
    RecoveryStep,
    SandboxOutboxMessage,
    StepStatus,
    Store,
)
from sequences.sandbox import SandboxTransport
from tests.support.factories import PHONE, make_store, order_payload
from tests.support.journey import T0, Journey

MIN = timedelta(minutes=1)


def outbox_count(runtime) -> int:
    with runtime.database.session() as session:
        return session.exec(select(func.count()).select_from(SandboxOutboxMessage)).one()


# -- 1. at most one message per (cart, step) ---------------------------------------------


@pytest.mark.postgres
def test_a_step_job_run_twice_sends_once(journey, runtime):
    journey.checkout()
    cart_id = journey.cart().id
    with journey.at(15 * MIN + timedelta(seconds=1)):
        advance_cart(runtime, cart_id)
        advance_cart(runtime, cart_id)
    assert outbox_count(runtime) == 1


@pytest.mark.postgres
def test_two_workers_running_the_same_due_step_at_once_send_once(journey, runtime):
    journey.checkout()
    cart_id = journey.cart().id
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait()
            advance_cart(runtime, cart_id)
        except BaseException as exc:
            errors.append(exc)

    with journey.at(15 * MIN + timedelta(seconds=1)):
        threads = [threading.Thread(target=worker) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    assert errors == []
    assert outbox_count(runtime) == 1


class _HangAfterLedger:
    """A transport that signals it was called, then hangs until the process is killed."""

    name = "sandbox"
    needs_whatsapp_account = False

    def __init__(self, flag: Path) -> None:
        self.flag = flag

    def send(self, message: OutboundMessage) -> SendOutcome:
        self.flag.write_text(str(message.message_id))
        time.sleep(60)
        raise AssertionError("should have been killed")


def _send_in_child(settings, cart_id: int, flag: str, moment: float) -> None:
    import time_machine

    with time_machine.travel(moment, tick=False):
        runtime = build_runtime(settings, database=Database(settings.database_url))
        runtime.transport = _HangAfterLedger(Path(flag))
        advance_cart(runtime, cart_id)


@pytest.mark.postgres
def test_a_worker_killed_between_the_ledger_and_the_send_never_causes_a_second_send(
    journey, runtime, settings, tmp_path
):
    journey.checkout()
    cart_id = journey.cart().id
    due = T0 + 15 * MIN + timedelta(seconds=1)
    flag = tmp_path / "transport-called"
    child = multiprocessing.get_context("fork").Process(
        target=_send_in_child, args=(settings, cart_id, str(flag), due.timestamp())
    )
    child.start()
    deadline = time.monotonic() + 20
    while not flag.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert flag.exists(), "the child never reached the transport"
    os.kill(child.pid, signal.SIGKILL)
    child.join(5)

    # The step stays claimed: a re-run (RQ retry, duplicate alarm) does not send it.
    with journey.at(due + MIN):
        advance_cart(runtime, cart_id)
    assert outbox_count(runtime) == 0
    assert journey.steps()[0].status == StepStatus.SENDING

    # After the grace period the sweep calls it uncertain (shown, never resent blindly).
    with journey.at(due + SENDING_GRACE + MIN):
        report = run_sweep(runtime)
        advance_cart(runtime, cart_id)
    assert report.steps_uncertain == 1
    step = journey.steps()[0]
    assert step.status == StepStatus.UNCERTAIN
    assert journey.messages()[0].status == MessageStatus.UNCERTAIN
    assert "message_uncertain" in journey.events()
    assert outbox_count(runtime) == 0


def test_the_sandbox_transport_is_idempotent_per_message(runtime, journey):
    journey.checkout()
    journey.run(15 * MIN)
    message = journey.messages()[0]
    outbound = OutboundMessage(
        message_id=message.id,
        store_id=message.store_id,
        to_phone_e164=PHONE,
        template_name="t",
        language="en",
        components=[],
        biz_opaque_callback_data=str(message.id),
        preview={"body": "again"},
    )
    SandboxTransport(runtime.database).send(outbound)
    assert outbox_count(runtime) == 1


# -- 2. nothing after opt-out or purchase --------------------------------------------------


def test_a_stop_recorded_before_a_due_step_runs_prevents_the_send(journey, runtime):
    journey.checkout()
    journey.run(15 * MIN)
    store_id = journey.cart().store_id
    with journey.at(2 * timedelta(hours=1)):
        handle_reply(runtime, store_id, PHONE, "STOP", source="test", evidence={})
    # The alarm for step 2 is still in Redis; when it fires nothing goes out.
    journey.run(4 * timedelta(hours=1))
    journey.run(23 * timedelta(hours=1))
    assert outbox_count(runtime) == 1
    assert journey.cart().status == CartStatus.OPTED_OUT


def test_an_opt_out_sticks_for_later_carts(journey, runtime):
    journey.checkout()
    journey.run(15 * MIN)
    with journey.at(20 * MIN):
        handle_reply(
            runtime, journey.cart().store_id, PHONE, "stop promotions", source="test", evidence={"text": "x"}
        )
    journey.checkout(timedelta(days=2), checkout_id="chk_2", token="tok_2")
    journey.run(timedelta(days=2, minutes=16))
    assert outbox_count(runtime) == 1
    assert journey.cart("chk_2").status == CartStatus.OPTED_OUT
    events = journey.consent_events()
    assert [event.kind for event in events] == ["opt_out"]


@pytest.mark.postgres
@pytest.mark.parametrize("racer", ["stop", "order"])
def test_stop_or_purchase_racing_a_due_step_never_sends_after_it_was_recorded(
    journey, runtime, client, racer
):
    """Run the race many times; in every outcome, a send was decided before the record."""
    for attempt in range(6):
        cart_id_text = f"chk_race_{attempt}"
        phone_tail = f"{attempt:02d}"
        journey.checkout(checkout_id=cart_id_text, token=f"tok_{attempt}", phone=f"+9198765432{phone_tail}")
        with runtime.database.session() as session:
            cart = session.exec(select(Cart).where(Cart.platform_cart_id == cart_id_text)).one()
        barrier = threading.Barrier(2)

        def send(barrier=barrier, cart=cart) -> None:
            barrier.wait()
            advance_cart(runtime, cart.id)

        def record(
            barrier=barrier, cart=cart, phone_tail=phone_tail, attempt=attempt, cart_id_text=cart_id_text
        ) -> None:
            barrier.wait()
            if racer == "stop":
                handle_reply(
                    runtime, cart.store_id, f"+9198765432{phone_tail}", "STOP", source="race", evidence={}
                )
            else:
                from connectors.base import OrderEvent
                from sequences.engine.tracking import apply_order

                with runtime.database.locked_session() as session:
                    store = session.get(Store, cart.store_id)
                    apply_order(
                        runtime,
                        session,
                        store,
                        OrderEvent(
                            order_id=f"o{attempt}",
                            created_at=datetime.now(UTC),
                            currency="INR",
                            total=Decimal("10"),
                            cart_id=cart_id_text,
                        ),
                    )

        with journey.at(15 * MIN + timedelta(seconds=1)):
            threads = [threading.Thread(target=send), threading.Thread(target=record)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
        with runtime.database.session() as session:
            cart = session.get(Cart, cart.id)
            step = session.exec(
                select(RecoveryStep).where(RecoveryStep.cart_id == cart.id, RecoveryStep.step_number == 1)
            ).first()
            recorded_status = {"stop": CartStatus.OPTED_OUT, "order": CartStatus.CONVERTED_UNASSISTED}[racer]
            if step is not None and step.status == StepStatus.SENT:
                # The send was decided first: the record came after (and so the cart is
                # recovering → then opted out / recovered), never the other way round.
                assert cart.first_message_at is not None
            else:
                assert cart.status == recorded_status
                assert (
                    session.exec(
                        select(func.count()).select_from(Message).where(Message.cart_id == cart.id)
                    ).one()
                    == 0
                )
        # Nothing more is ever sent for this cart.
        journey.run(5 * timedelta(hours=1))
        with runtime.database.session() as session:
            assert (
                session.exec(
                    select(func.count()).select_from(Message).where(Message.cart_id == cart.id)
                ).one()
                <= 1
            )


# -- 3. each delivery processed once ------------------------------------------------------


def test_a_replayed_order_webhook_does_not_double_count_revenue(journey, runtime):
    journey.checkout()
    journey.run(15 * MIN)
    order = order_payload(order_id="ord_1", total="2098.00")
    journey.webhook(30 * MIN, "orders/create", order, delivery_id="same")
    journey.webhook(31 * MIN, "orders/create", order, delivery_id="same")
    assert journey.events().count("cart_recovered") == 1


def test_processing_a_delivery_twice_changes_nothing(journey, runtime):
    from sequences.jobs import process_delivery_job
    from sequences.models import WebhookDelivery

    journey.checkout()
    with runtime.database.session() as session:
        delivery_id = session.exec(select(WebhookDelivery.id)).one()
    assert process_delivery_job(delivery_id) == "already processed"
    assert journey.events() == ["cart_captured"]


# -- 4. Redis holds nothing the database does not ------------------------------------------


def test_redis_flushed_mid_sequence_loses_no_step(journey, runtime):
    journey.checkout()
    journey.run(15 * MIN)
    runtime.redis.flushall()
    # No sweep needed: the schedule is the carts' next moment in the database.
    journey.run(4 * timedelta(hours=1))
    assert outbox_count(runtime) == 2


def test_a_delivery_stored_while_redis_was_down_is_applied_by_the_sweep(journey, runtime, client, redis_url):
    from redis import Redis

    from tests.support.factories import checkout_payload, send_webhook

    runtime.redis = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    with journey.at(0 * MIN):
        send_webhook(client, "checkouts/create", checkout_payload(updated_at=T0))
    runtime.redis = Redis.from_url(redis_url)
    runtime_module.install(runtime)
    with journey.at(1 * MIN):
        assert run_sweep(runtime).deliveries_applied == 1
    journey.run(1 * MIN)
    journey.run(16 * MIN)
    assert outbox_count(runtime) == 1


# -- 5. money is Decimal with a currency ---------------------------------------------------


@pytest.mark.postgres
def test_money_round_trips_exactly_through_the_database(journey):
    journey.checkout(prices=("1499.99", "0.01", "100000.10"))
    cart = journey.cart()
    assert cart.total == Decimal("101500.10")
    assert isinstance(cart.total, Decimal) and cart.currency == "INR"


def test_totals_are_shown_the_indian_way(journey):
    journey.checkout(prices=("100000.00",))
    journey.run(15 * MIN)
    assert "Total: ₹1,00,000.00" in journey.outbox()[0].body


# -- 6. phones are E.164 -------------------------------------------------------------------


def test_phones_are_stored_in_e164_whatever_the_shopper_typed(journey, runtime):
    journey.checkout(phone="098765-43210")
    with runtime.database.session() as session:
        assert session.exec(select(Contact.phone_e164)).one() == "+919876543210"


# -- 7. secrets encrypted, no personal data in logs ----------------------------------------


def test_store_secrets_are_encrypted_at_rest(runtime):
    make_store(runtime, "secretive", secret="whsec-plain-value")
    with runtime.database.engine.connect() as connection:
        rows = connection.execute(
            text("SELECT webhook_secret_ciphertext, access_token_ciphertext FROM store")
        ).all()
    assert all("whsec-plain-value" not in row[0] and "token-secretive" not in row[1] for row in rows)


def test_no_phone_email_or_link_token_appears_in_logs(journey, runtime, client, caplog):
    import io
    import logging

    from app.logs import configure_logging

    stream = io.StringIO()
    configure_logging("DEBUG", stream)
    caplog.set_level(logging.DEBUG)
    try:
        journey.checkout()
        journey.run(15 * MIN)
        token = journey.link_path().removeprefix("/r/")
        client.get(f"/r/{token}X")
        with journey.at(20 * MIN):
            handle_reply(runtime, journey.cart().store_id, PHONE, "STOP", source="test", evidence={})
    finally:
        logging.getLogger().handlers = [
            h for h in logging.getLogger().handlers if not getattr(h, "_cartback", False)
        ]
    emitted = stream.getvalue() + "\n".join(
        record.getMessage() + str(vars(record)) for record in caplog.records
    )
    for secret in ("9876543210", "asha@example.in", token):
        assert secret not in emitted


# -- 8. UTC everywhere; SQLite shared safely ----------------------------------------------


@pytest.mark.postgres
def test_times_come_back_as_aware_utc(journey):
    journey.checkout()
    cart = journey.cart()
    assert cart.last_activity_at == T0
    assert cart.last_activity_at.utcoffset() == timedelta(0)


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(runtime):
    with runtime.database.engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA busy_timeout")).scalar() >= 5000


# -- 9. every tenant sees only its own data ------------------------------------------------


def test_the_same_checkout_id_and_phone_in_two_stores_stay_apart(client, runtime, drain):
    make_store(runtime, "store-a")
    make_store(runtime, "store-b")
    journey = Journey(client, runtime, drain)
    from tests.support.factories import checkout_payload

    journey.webhook(0 * MIN, "checkouts/create", checkout_payload(updated_at=T0), store="store-a")
    journey.webhook(0 * MIN, "checkouts/create", checkout_payload(updated_at=T0), store="store-b")
    journey.run(15 * MIN)
    with runtime.database.session() as session:
        store_a = session.exec(select(Store).where(Store.platform_store_id == "store-a")).one()
        assert session.exec(select(func.count()).select_from(Cart)).one() == 2
        assert session.exec(select(func.count()).select_from(Contact)).one() == 2
    # A STOP to store A leaves store B's shopper relationship alone.
    with journey.at(20 * MIN):
        handle_reply(runtime, store_a.id, PHONE, "STOP", source="test", evidence={})
    with runtime.database.session() as session:
        statuses = dict(session.exec(select(Cart.store_id, Cart.status)).all())
    assert statuses[store_a.id] == CartStatus.OPTED_OUT
    assert sorted(statuses.values()) == [CartStatus.OPTED_OUT, CartStatus.RECOVERING]
    # An order in store B does not recover store A's cart.
    journey.webhook(30 * MIN, "orders/create", order_payload(), store="store-b")
    with runtime.database.session() as session:
        carts = {c.store_id: c.status for c in session.exec(select(Cart)).all()}
    assert carts[store_a.id] == CartStatus.OPTED_OUT
    assert CartStatus.RECOVERED in carts.values()


@pytest.mark.postgres
def test_a_time_given_in_another_zone_is_stored_as_the_same_instant_in_utc(journey, runtime):
    from zoneinfo import ZoneInfo

    journey.checkout()
    india_evening = datetime(2026, 11, 28, 21, 30, tzinfo=ZoneInfo("Asia/Kolkata"))
    with runtime.database.session() as session:
        cart = session.exec(select(Cart)).one()
        cart.abandoned_at = india_evening
    stored = journey.cart().abandoned_at
    assert stored == india_evening
    assert stored.tzinfo == UTC and stored.hour == 16


def test_a_naive_time_is_refused_rather_than_guessed(journey, runtime):
    from sqlalchemy.exc import StatementError

    journey.checkout()
    with pytest.raises(StatementError, match="naive datetime"), runtime.database.session() as session:
        cart = session.exec(select(Cart)).one()
        cart.abandoned_at = datetime(2026, 11, 28, 9, 0)  # naive on purpose
