"""The cloud transport end to end against the fake Graph API (it refuses what Meta refuses)."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import pairwise

import pytest
from sqlmodel import select

from sequences.models import (
    CartStatus,
    MessageStatus,
    StepStatus,
    Store,
    TemplateStatus,
    WhatsAppTemplate,
)
from tests.fakes import whatsapp_webhooks as hooks
from tests.fakes.whatsapp_webhooks import status_error
from tests.support.cloud import SHOPPER
from tests.support.whatsapp import ACCESS_TOKEN, WABA_ID


@pytest.mark.postgres
def test_an_abandoned_cart_gets_a_real_template_message(cloud):
    # Given a shopper who goes quiet with two items
    cloud.checkout()
    # When 15 minutes pass
    cloud.run(timedelta(minutes=15))
    # Then Meta accepted one template message with the product image, items, total and link
    (sent,) = cloud.sent()
    message = cloud.messages()[0]
    assert sent.template_name == "cart_recovery_image_v1" and sent.language == "en"
    assert sent.to.lstrip("+") == SHOPPER
    assert sent.biz_opaque_callback_data == f"cartback-{message.id}"
    assert sent.header_media == {"link": "http://localhost/demo-store/images/p0.svg"}
    assert (
        "Hi Asha, you left Handloom Cotton Kurta and 1 more in your cart at Store demo-bazaar." in sent.body
    )
    assert "₹2,198.00" in sent.body
    assert sent.button_urls[0].startswith(f"{cloud.runtime.settings.app_url}/r/")
    body = next(c for c in sent.components if c["type"] == "body")
    total = body["parameters"][2]
    assert total == {
        "type": "currency",
        "currency": {"fallback_value": "₹2,198.00", "code": "INR", "amount_1000": 2198000},
    }
    # And the message is recorded as sent, with Meta's id
    assert message.status == MessageStatus.SENT and message.provider_message_id == sent.wamid


def test_statuses_from_meta_move_the_message_forward(cloud):
    cloud.checkout()
    cloud.run(timedelta(minutes=15))
    (sent,) = cloud.sent()
    with cloud.at(timedelta(minutes=16)):
        for status in ("sent", "delivered", "read"):
            assert cloud.deliver(cloud.graph.status_for(sent, status)).status_code == 200
    message = cloud.messages()[0]
    assert message.status == MessageStatus.READ
    assert message.delivered_at is not None and message.read_at is not None
    assert message.cost == Decimal("0.86") and message.pricing_category == "marketing"


@pytest.mark.postgres
def test_a_stop_promotions_tap_prevents_a_step_due_one_second_later(cloud):
    # Given the first message went out and step 2 is due 4 h after the last activity
    cloud.checkout()
    cloud.run(timedelta(minutes=15))
    (first,) = cloud.sent()
    step_two = cloud.steps()[1]
    assert step_two.due_at is not None
    due = step_two.due_at - cloud.steps()[0].due_at + timedelta(minutes=15)
    # When the shopper taps "Stop promotions" one second before it is due
    with cloud.at(due - timedelta(seconds=1)):
        response = cloud.deliver(cloud.graph.button_reply_for(first, 1))
        assert response.status_code == 200
    # Then at the due time nothing more goes out, and the opt-out is on record
    cloud.run(due)
    cloud.run(due + timedelta(hours=20))
    assert len(cloud.sent()) == 1
    assert cloud.cart().status == CartStatus.OPTED_OUT
    (event,) = cloud.consent_events()
    assert event.source == "whatsapp_button" and event.evidence["message_id"] == cloud.messages()[0].id
    # And the shopper got one short confirmation, as a plain reply
    (reply,) = [m for m in cloud.graph.sent_messages if m.type == "text"]
    assert "won't get promotional messages" in reply.body


def test_a_stop_arriving_as_the_next_alarm_is_due_wins(cloud):
    # Given step 2's alarm is due and queued, and the shopper opts out before it runs
    cloud.checkout()
    cloud.run(timedelta(minutes=15))
    (first,) = cloud.sent()
    with cloud.at(timedelta(hours=4, minutes=15)):
        # The alarm is due now; the webhook lands first and the send re-checks under the lock
        cloud.deliver(cloud.graph.button_reply_for(first, 1))
    cloud.run(timedelta(hours=4, minutes=15, seconds=1))
    assert len(cloud.sent()) == 1


@pytest.mark.parametrize(
    ("code", "cart_status", "step_status"),
    [
        (131050, CartStatus.OPTED_OUT, StepStatus.FAILED),
        (131026, CartStatus.UNREACHABLE, StepStatus.FAILED),
        (131049, CartStatus.ABANDONED, StepStatus.FAILED),
    ],
)
def test_meta_refusals_about_the_shopper_act_on_the_cart(cloud, code, cart_status, step_status):
    cloud.checkout()
    cloud.graph.fail_next(code)
    cloud.run(timedelta(minutes=15))
    assert cloud.sent() == []
    assert cloud.steps()[0].status == step_status
    assert cloud.cart().status == cart_status
    assert cloud.messages()[0].error_code == str(code)


def test_a_throughput_refusal_retries_the_step_later(cloud):
    cloud.checkout()
    cloud.graph.fail_next(130429)
    cloud.run(timedelta(minutes=15))
    step = cloud.steps()[0]
    assert step.status == StepStatus.SCHEDULED and cloud.sent() == []
    time.sleep(1.1)  # the number's back-off after a 130429 is real time, shared by all workers
    cloud.run(timedelta(minutes=16))
    assert len(cloud.sent()) == 1 and cloud.steps()[0].status == StepStatus.SENT


@pytest.mark.parametrize(
    ("code", "words"),
    [(131048, "spam"), (368, "policy"), (131031, "locked"), (190, "token"), (131042, "payment")],
)
def test_refusals_that_would_hurt_the_number_pause_the_store_and_say_why(cloud, code, words):
    cloud.checkout(checkout_id="chk_1")
    cloud.graph.fail_next(code)
    cloud.run(timedelta(minutes=15))
    store = cloud.store()
    assert store.sending_paused and store.pause_source == "whatsapp_error"
    assert str(code) in (store.pause_reason or "") and words in (store.pause_reason or "")
    # And nothing more goes out until the merchant resumes
    cloud.run(timedelta(hours=5))
    assert cloud.sent() == []


def test_a_paused_template_holds_its_steps_until_meta_approves_it_again(cloud):
    cloud.checkout()
    cloud.graph.fail_next(132015)
    cloud.run(timedelta(minutes=15))
    with cloud.runtime.database.session() as session:
        template = session.exec(
            select(WhatsAppTemplate).where(
                WhatsAppTemplate.name == "cart_recovery_image_v1", WhatsAppTemplate.language == "en"
            )
        ).first()
    assert template is not None and template.status == TemplateStatus.PAUSED
    assert cloud.steps()[0].status == StepStatus.SCHEDULED
    cloud.run(timedelta(minutes=40))
    assert cloud.sent() == []
    # When Meta reinstates it, the step goes out at its next look
    with cloud.at(timedelta(minutes=45)):
        reinstated = hooks.template_status_update(
            WABA_ID,
            1,
            "cart_recovery_image_v1",
            "en",
            "REINSTATED",
            timestamp=int(datetime.now(UTC).timestamp()),
        )
        cloud.deliver(reinstated)
    cloud.run(timedelta(minutes=60))
    assert len(cloud.sent()) == 1


def test_steps_wait_for_a_template_meta_has_not_approved(cloud):
    with cloud.runtime.database.locked_session() as session:
        for template in session.exec(select(WhatsAppTemplate)).all():
            template.status = TemplateStatus.PENDING
    cloud.checkout()
    cloud.run(timedelta(minutes=15))
    assert cloud.sent() == []
    assert cloud.steps()[0].status == StepStatus.SCHEDULED


def test_a_timeout_after_sending_is_never_retried_and_a_status_resolves_it(cloud):
    import httpx

    from channels.whatsapp.cloud import CloudTransport
    from channels.whatsapp.throttle import SendThrottle

    impatient = httpx.Client(timeout=httpx.Timeout(0.3, connect=2.0))
    cloud.runtime.transport = CloudTransport(
        cloud.graph.url, impatient, SendThrottle(cloud.runtime.redis, key="k", pair_interval_ms=1)
    )
    cloud.graph.latency_seconds = 1.0
    cloud.checkout()
    cloud.run(timedelta(minutes=15))
    cloud.graph.latency_seconds = 0.0
    assert cloud.steps()[0].status == StepStatus.UNCERTAIN
    assert cloud.messages()[0].status == MessageStatus.UNCERTAIN
    cloud.run(timedelta(minutes=30))
    time.sleep(1.0)  # the slow answer is still on its way when the client gave up
    (sent,) = cloud.sent()  # Meta took it once; we never sent it again
    with cloud.at(timedelta(minutes=31)):
        cloud.deliver(cloud.graph.status_for(sent, "delivered"))
    assert cloud.steps()[0].status == StepStatus.SENT
    assert cloud.messages()[0].status == MessageStatus.DELIVERED
    impatient.close()


def test_failed_statuses_that_come_later_act_like_refusals(cloud):
    cloud.checkout()
    cloud.run(timedelta(minutes=15))
    (sent,) = cloud.sent()
    with cloud.at(timedelta(minutes=16)):
        cloud.deliver(cloud.graph.status_for(sent, "failed", errors=[status_error(131050)]))
    assert cloud.cart().status == CartStatus.OPTED_OUT


def test_no_phone_number_token_or_message_id_reaches_the_logs(cloud, caplog):
    caplog.set_level(logging.DEBUG)
    cloud.checkout()
    cloud.run(timedelta(minutes=15))
    (sent,) = cloud.sent()
    with cloud.at(timedelta(minutes=20)):
        cloud.deliver(cloud.graph.status_for(sent, "read"))
        cloud.deliver(cloud.graph.button_reply_for(sent, 1))
    assert len(cloud.graph.sent_messages) == 2  # the template and the confirmation
    # The records as our code wrote them, before any redacting filter: nothing to redact
    for record in caplog.records:
        text = record.getMessage() + " " + " ".join(str(value) for value in vars(record).values())
        assert SHOPPER[2:] not in text, record.getMessage()
        assert ACCESS_TOKEN not in text, record.getMessage()
        assert sent.wamid not in text, record.getMessage()


def test_a_name_with_tabs_and_newlines_is_cleaned_for_meta(cloud):
    cloud.checkout(first_name="Asha\tRao\n\n")
    cloud.run(timedelta(minutes=15))
    (sent,) = cloud.sent()
    assert "Hi Asha Rao, you left" in sent.body


def test_a_refused_parameter_drops_that_step_and_the_template_keeps_working(cloud):
    cloud.graph.fail_next(132018)
    cloud.checkout()
    cloud.run(timedelta(minutes=15))
    assert cloud.steps()[0].status == StepStatus.FAILED
    with cloud.runtime.database.session() as session:
        statuses = {t.status for t in session.exec(select(WhatsAppTemplate)).all()}
    assert statuses == {TemplateStatus.APPROVED}
    # Another shopper's cart still gets its message
    cloud.checkout(timedelta(minutes=1), checkout_id="chk_2", token="tok_2", phone="+919811112222")
    cloud.run(timedelta(minutes=17))
    assert len(cloud.sent()) == 1


def test_an_ambiguous_server_error_is_never_retried(cloud):
    cloud.graph.fail_next(131000)
    cloud.checkout()
    cloud.run(timedelta(minutes=15))
    assert cloud.steps()[0].status == StepStatus.UNCERTAIN
    cloud.run(timedelta(hours=1))
    assert cloud.sent() == [] and cloud.steps()[0].status == StepStatus.UNCERTAIN


def test_being_told_to_slow_down_does_not_count_towards_the_failure_pause(cloud):
    from sequences.whatsapp.health import check_failure_rate

    cloud.graph.fail_next(130429, count=30)
    for n in range(22):
        cloud.checkout(checkout_id=f"chk_{n}", token=f"tok_{n}", phone=f"+9198111{n:05d}")
    cloud.run(timedelta(minutes=15))
    with cloud.runtime.database.locked_session() as session:
        store = session.exec(select(Store)).one()
        assert not check_failure_rate(session, store, datetime.now(UTC))
    assert not cloud.store().sending_paused


def test_a_step_waiting_to_retry_does_not_count_against_its_own_frequency_cap(cloud):
    from sequences.merchant.store_settings import StoreSettings

    with cloud.runtime.database.locked_session() as session:
        store = session.exec(select(Store)).one()
        store.settings = StoreSettings(quiet_hours_enabled=False, max_messages_per_24h=1).to_stored()
    cloud.graph.fail_next(130429)
    cloud.checkout()
    cloud.run(timedelta(minutes=15))
    time.sleep(1.1)  # the number's back-off is real time
    cloud.run(timedelta(minutes=16))
    assert len(cloud.sent()) == 1 and cloud.steps()[0].status == StepStatus.SENT


def test_a_batch_beyond_the_numbers_rate_sends_the_rest_in_turn_and_none_twice(cloud):
    # Given a number Meta allows 3 messages a second, and 5 shoppers due in the same second
    from sequences.models import WhatsAppAccount

    with cloud.runtime.database.session() as session:
        account = session.exec(select(WhatsAppAccount)).one()
        account.messages_per_second = 3
        session.add(account)
    for n in range(5):
        cloud.checkout(checkout_id=f"chk_{n}", token=f"tok_{n}", phone=f"+9198765{n:05d}")
    # When their moment comes
    cloud.run(timedelta(minutes=15))
    # Then what fits the number's pace went out, and the rest never entered the ledger: still
    # scheduled, each due again when its turn comes (within a couple of seconds)
    first_round = len(cloud.sent())
    assert 1 <= first_round < 5
    steps = [cloud.steps(f"chk_{n}")[0] for n in range(5)]
    assert sorted(step.status for step in steps).count(StepStatus.SCHEDULED) == 5 - first_round
    due = cloud.cart("chk_0").last_activity_at + timedelta(minutes=15)
    waiting = [cloud.cart(f"chk_{n}") for n, step in enumerate(steps) if step.status == StepStatus.SCHEDULED]
    assert all(due < cart.next_wake_at <= due + timedelta(seconds=3) for cart in waiting)
    # When their turns come (the number's moments pass in real time)
    for second in range(1, 20):
        if len(cloud.sent()) == 5:
            break
        time.sleep(0.4)
        cloud.run(timedelta(minutes=15, seconds=3 * second))
    # Then they all went, each shopper once, never more than 3 in a second (give or take one
    # moment's jitter between the pace's clock and the fake's)
    sent = sorted(cloud.sent(), key=lambda message: message.accepted_at)
    assert len(sent) == 5 and len({message.to for message in sent}) == 5
    assert min(later.accepted_at - earlier.accepted_at for earlier, later in pairwise(sent)) > 0.25


def test_a_worker_starts_every_send_thread_with_its_client_before_the_first_batch(cloud):
    import threading

    from channels.whatsapp.cloud import SEND_CONCURRENCY

    transport = cloud.runtime.transport
    # (By thread, not name: an earlier test's send threads may still be alive, named alike.)
    before = set(threading.enumerate())
    transport.warm_up()
    started = [
        thread
        for thread in threading.enumerate()
        if thread.name.startswith("graph-send") and thread not in before
    ]
    assert len(started) == SEND_CONCURRENCY
    # The clients were built then (their shared TLS context with them), not at the first moments
    assert transport._tls is not None


def test_a_send_that_missed_its_seconds_end_is_not_sent_and_frees_the_shopper(cloud):
    # Given a message whose moment in its number's pace was taken, but whose worker could not
    # send it before that moment's second ended (sent now, it would count in the next second)
    from channels.transport import OutboundMessage, OutcomeKind, Sender

    transport = cloud.runtime.transport
    sender = Sender("pn-late", ACCESS_TOKEN, 80)
    [slot] = transport.reserve([(sender, SHOPPER)])
    assert slot.send_at is not None and slot.send_by is not None
    late = OutboundMessage(
        message_id=None,
        store_id=cloud.store_id,
        to_phone_e164=SHOPPER,
        template_name="cart_reminder",
        language="en",
        components=[],
        biz_opaque_callback_data="m:late",
        sender=sender,
        send_at=slot.send_at,
        send_by=time.monotonic() - 0.001,
    )
    # When the batch carrying it is sent
    [outcome] = transport.send_batch([late])
    # Then it never reached Meta, and goes again later (not sent, so no duplicate is possible)
    assert cloud.sent() == []
    assert outcome.kind == OutcomeKind.RETRY_LATER and outcome.error_code == "throttled"
    # ...and the shopper's 6 s pair slot it had taken is free for that retry
    [again] = transport.reserve([(sender, SHOPPER)])
    assert again.wait is None


def test_sends_wait_for_their_moments_without_holding_a_send_thread():
    # Given a pool of 2 send threads and 40 sends whose moments are 0.2 s away, then one due now
    from concurrent.futures import ThreadPoolExecutor

    from channels.transport import OutcomeKind, SendOutcome
    from channels.whatsapp.cloud import _Departures

    pool = ThreadPoolExecutor(max_workers=2)
    departures = _Departures(lambda: pool)
    started: list[tuple[float, float]] = []

    def send(moment: float) -> SendOutcome:
        started.append((moment, time.monotonic()))
        return SendOutcome(OutcomeKind.SENT, provider_message_id="wamid.x")

    later = time.monotonic() + 0.2
    waiting = [departures.at(later + n * 0.001, lambda n=n: send(later + n * 0.001)) for n in range(40)]
    now = time.monotonic()
    urgent = departures.at(now, lambda: send(now))
    # Then the one due now leaves at once: no thread sits waiting for the others' moments...
    assert urgent.result(timeout=1).kind == OutcomeKind.SENT
    assert started[0][1] - now < 0.05
    # ...and every other leaves at its moment, not before
    assert all(future.result(timeout=2).kind == OutcomeKind.SENT for future in waiting)
    assert len(started) == 41 and all(began >= moment for moment, began in started)
    pool.shutdown()


def test_a_send_the_pool_can_no_longer_take_fails_its_batch_instead_of_hanging():
    from concurrent.futures import ThreadPoolExecutor

    from channels.transport import OutcomeKind, SendOutcome
    from channels.whatsapp.cloud import _Departures

    pool = ThreadPoolExecutor(max_workers=1)
    pool.shutdown()
    departures = _Departures(lambda: pool)
    leaving = departures.at(time.monotonic(), lambda: SendOutcome(OutcomeKind.SENT, provider_message_id="x"))
    with pytest.raises(RuntimeError):
        leaving.result(timeout=2)
