"""The alarm's tick decides under the cart lock whether a due step goes out (sequences.engine.sending):
consent, a phone, lines, one sequence per shopper, the frequency cap, quiet hours, a paused store,
an outage."""

from __future__ import annotations

from datetime import timedelta

from sequences.merchant.store_settings import Offer, StepSetting, StoreSettings
from sequences.models import CartStatus, StepStatus
from tests.support.factories import make_store
from tests.support.journey import Journey

MIN = timedelta(minutes=1)
H = timedelta(hours=1)


def test_a_shopper_without_consent_is_never_messaged(journey):
    journey.checkout(consent=False)
    journey.run(15 * MIN)
    journey.run(4 * H)
    assert journey.outbox() == []
    assert journey.cart().status == CartStatus.UNREACHABLE
    assert journey.cart().status_reason == "no marketing consent"


def test_a_cart_without_a_phone_is_unreachable(journey):
    journey.checkout(phone=None)
    journey.run(15 * MIN)
    assert journey.cart().status == CartStatus.UNREACHABLE


def test_an_emptied_cart_is_not_chased(journey):
    journey.checkout()
    journey.checkout(MIN, prices=())
    journey.run(20 * MIN)
    assert journey.outbox() == []


def test_a_newer_cart_replaces_the_older_sequence_of_the_same_shopper(journey):
    journey.checkout()
    journey.run(15 * MIN)
    journey.checkout(20 * MIN, checkout_id="chk_2", token="tok_2")
    journey.run(35 * MIN)
    journey.run(4 * H)
    journey.run(5 * H)
    assert journey.cart("chk_1").status == CartStatus.EXPIRED
    assert journey.cart("chk_1").status_reason == f"replaced by newer cart {journey.cart('chk_2').id}"
    sent_for = [message.cart_id for message in journey.messages()]
    assert sent_for.count(journey.cart("chk_1").id) == 1  # its step 2 never went out
    assert sent_for.count(journey.cart("chk_2").id) == 2


def test_the_frequency_cap_limits_messages_to_one_shopper_across_carts(client, runtime, drain):
    make_store(runtime, settings=StoreSettings(quiet_hours_enabled=False, max_messages_per_24h=1))
    journey = Journey(client, runtime, drain)
    journey.checkout()
    journey.run(15 * MIN)
    journey.checkout(20 * MIN, checkout_id="chk_2", token="tok_2")
    journey.run(40 * MIN)
    assert len(journey.outbox()) == 1
    assert journey.steps("chk_2")[0].reason == "frequency cap: 1 messages in 24 h"


def test_a_step_due_in_quiet_hours_waits_for_the_morning(client, runtime, drain):
    settings = StoreSettings(
        steps=[
            StepSetting(delay_minutes=15),
            StepSetting(delay_minutes=8 * 60, offer=Offer(kind="fixed", value="100")),
        ]
    )
    make_store(runtime, settings=settings)
    journey = Journey(client, runtime, drain)
    journey.checkout()  # 14:30 IST; step 2 lands at 22:30 IST
    journey.run(15 * MIN)
    journey.run(8 * H + MIN)
    assert len(journey.outbox()) == 1
    journey.run(18 * H + 31 * MIN)  # 09:01 IST next day
    assert len(journey.outbox()) == 2


def test_a_paused_store_skips_due_steps(client, runtime, drain, journey):
    from sqlmodel import select

    from sequences.models import Store

    with runtime.database.session() as session:
        store = session.exec(select(Store)).one()
        store.sending_paused, store.pause_reason = True, "merchant paused"
    journey.checkout()
    journey.run(15 * MIN)
    assert journey.outbox() == []
    assert journey.steps()[0].reason == "sending paused: merchant paused"


def test_after_an_outage_only_the_latest_overdue_step_is_sent(journey):
    journey.checkout()
    journey.run(5 * MIN)
    # Nothing ran between 5 minutes and 5 hours (workers down): steps 1 and 2 are both overdue.
    journey.run(5 * H)
    assert len(journey.outbox()) == 1
    assert "Claim ₹100 off!" in journey.outbox()[0].body
    statuses = [(step.status, step.reason) for step in journey.steps()[:2]]
    assert statuses == [
        (StepStatus.SKIPPED, "superseded: a later step was already due"),
        (StepStatus.SENT, None),
    ]
