"""Meta's status webhook settles a step whose sender never recorded its answer (sequences.whatsapp.inbound).

A worker that dies once Meta has accepted the message (or whose answer is lost) leaves the step
SENDING; the sweep would call it UNCERTAIN five minutes later. When Meta says the message was
sent, delivered or read, the step is SENT at once, and the cart moves on as after any send. The
cloud transport talks to the fake Graph API on 127.0.0.1; every test ends by checking the
dashboard's kept figures against a recount.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from channels.transport import OutboundMessage, OutboundText, OutcomeKind, SendOutcome
from sequences.engine.sending import SENDING_GRACE, advance_cart
from sequences.engine.sweep import run_sweep
from sequences.merchant import rollups
from sequences.models import CartStatus, MessageStatus, StepStatus
from tests.fakes.whatsapp_webhooks import status_error

MIN = timedelta(minutes=1)
# Step 1 is due when the cart counts as abandoned: 15 minutes after the shopper went quiet.
DUE = 15 * MIN


class WorkerKilled(BaseException):
    """The worker's process ending (a deploy, SIGKILL) right after Meta took the message: not
    an Exception, so nothing in the send path records an outcome."""


class _Wrapped:
    """The real cloud transport with something happening around a template send."""

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self.name = transport.name
        self.needs_whatsapp_account = transport.needs_whatsapp_account

    def send_text(self, message: OutboundText) -> SendOutcome:
        return self.transport.send_text(message)  # type: ignore[no-any-return]


class _KilledOnceSent(_Wrapped):
    def send(self, message: OutboundMessage) -> SendOutcome:
        self.transport.send(message)
        raise WorkerKilled


class _StatusBeatsALostAnswer(_Wrapped):
    """Meta accepts, its "sent" webhook arrives while the sender still waits, then the answer
    times out (what the cloud transport reports for a lost answer)."""

    def __init__(self, transport: Any, cloud: Any) -> None:
        super().__init__(transport)
        self.cloud = cloud

    def send(self, message: OutboundMessage) -> SendOutcome:
        self.transport.send(message)
        [sent] = self.cloud.sent()
        assert self.cloud.deliver(self.cloud.graph.status_for(sent, "sent")).status_code == 200
        return SendOutcome(OutcomeKind.UNKNOWN, error_detail="no answer from Meta (ReadTimeout)")


def send_step_one_with(cloud: Any, transport: Any) -> None:
    real = cloud.runtime.transport
    cloud.runtime.transport = transport
    try:
        with cloud.at(DUE):
            advance_cart(cloud.runtime, cloud.cart().id)
    finally:
        cloud.runtime.transport = real


def left_sending(cloud: Any) -> Any:
    """Given a quiet shopper whose step 1 Meta accepted, the worker died before recording it:
    the step is SENDING and its message has no wamid. Returns what the fake Graph API took."""
    cloud.checkout()
    with pytest.raises(WorkerKilled):
        send_step_one_with(cloud, _KilledOnceSent(cloud.runtime.transport))
    [sent] = cloud.sent()
    [message] = cloud.messages()
    assert cloud.steps()[0].status == StepStatus.SENDING
    assert message.status == MessageStatus.QUEUED and message.provider_message_id is None
    assert sent.biz_opaque_callback_data == f"cartback-{message.id}"
    return sent


def meta_says(cloud: Any, sent: Any, status: str, moment: timedelta = DUE + MIN, **overrides: Any) -> Any:
    """Meta's signed status webhook for the message, at ``moment``; due jobs run after it."""
    with cloud.at(moment):
        return cloud.deliver(cloud.graph.status_for(sent, status, **overrides))


def assert_figures_match_a_recount(cloud: Any) -> None:
    with cloud.runtime.database.session() as session:
        assert rollups.differences(session, cloud.store_id) == []


@pytest.mark.postgres
def test_a_delivered_status_settles_a_step_left_sending_at_once(cloud):
    sent = left_sending(cloud)
    # When Meta reports the message delivered, a minute later (by our id: no wamid stored)
    response = meta_says(cloud, sent, "delivered")
    # Then the step is sent now, not five minutes from now, and the cart is being recovered
    assert response.status_code == 200 and response.get_json()["applied"] == 1
    step, [message], cart = cloud.steps()[0], cloud.messages(), cloud.cart()
    assert step.status == StepStatus.SENT and step.sent_at is not None
    assert message.status == MessageStatus.DELIVERED and message.provider_message_id == sent.wamid
    assert cart.status == CartStatus.RECOVERING and cart.first_message_at == step.sent_at
    assert cloud.events().count("message_sent") == 1
    assert_figures_match_a_recount(cloud)


def test_the_next_step_is_scheduled_at_once_and_goes_out_when_due(cloud):
    sent = left_sending(cloud)
    meta_says(cloud, sent, "read")
    # The cart's next moment is step 2's (it stood at the end of the grace period before)
    step_two = cloud.steps()[1]
    assert step_two.status == StepStatus.SCHEDULED and step_two.due_at is not None
    cart = cloud.cart()
    assert cart.next_wake_at == step_two.due_at
    # When its time comes, step 2 goes out
    cloud.run(step_two.due_at)
    assert len(cloud.sent()) == 2
    assert [step.status for step in cloud.steps()[:2]] == [StepStatus.SENT, StepStatus.SENT]
    assert_figures_match_a_recount(cloud)


def test_the_sweep_no_longer_calls_a_settled_step_uncertain(cloud):
    sent = left_sending(cloud)
    meta_says(cloud, sent, "sent")
    with cloud.at(DUE + SENDING_GRACE + MIN):
        report = run_sweep(cloud.runtime)
    assert report.steps_uncertain == 0
    assert cloud.steps()[0].status == StepStatus.SENT
    assert cloud.messages()[0].status == MessageStatus.SENT
    assert "message_uncertain" not in cloud.events()
    assert_figures_match_a_recount(cloud)


def test_a_replayed_status_settles_nothing_twice(cloud):
    sent = left_sending(cloud)
    meta_says(cloud, sent, "delivered")
    steps, messages, cart, events = cloud.steps(), cloud.messages(), cloud.cart(), cloud.events()
    # When Meta retries the same delivery later
    response = meta_says(cloud, sent, "delivered", moment=DUE + 3 * MIN)
    # Then nothing changes
    assert response.get_json()["applied"] == 0
    assert [s.model_dump() for s in cloud.steps()] == [s.model_dump() for s in steps]
    assert [m.model_dump() for m in cloud.messages()] == [m.model_dump() for m in messages]
    assert cloud.cart().model_dump() == cart.model_dump()
    assert cloud.events() == events
    assert_figures_match_a_recount(cloud)


@pytest.mark.postgres
def test_metas_sent_status_beating_a_lost_answer_keeps_the_step_sent(cloud):
    # Given Meta's "sent" webhook arrives while the sender waits, and then its answer is lost
    cloud.checkout()
    send_step_one_with(cloud, _StatusBeatsALostAnswer(cloud.runtime.transport, cloud))
    # Then the step stays sent (Meta said so), recorded once, never downgraded to uncertain
    step, [message] = cloud.steps()[0], cloud.messages()
    assert step.status == StepStatus.SENT
    assert message.status == MessageStatus.SENT and message.provider_message_id == cloud.sent()[0].wamid
    assert message.error_detail is None
    assert cloud.cart().status == CartStatus.RECOVERING
    events = cloud.events()
    assert events.count("message_sent") == 1 and "message_uncertain" not in events
    assert len(cloud.sent()) == 1
    assert_figures_match_a_recount(cloud)


def test_a_status_for_a_step_the_sweep_called_uncertain_settles_it_and_the_cart(cloud):
    # Given the step left sending was called uncertain by the sweep
    sent = left_sending(cloud)
    with cloud.at(DUE + SENDING_GRACE + MIN):
        assert run_sweep(cloud.runtime).steps_uncertain == 1
    # When Meta's word arrives after all
    meta_says(cloud, sent, "delivered", moment=DUE + SENDING_GRACE + 2 * MIN)
    # Then the step is sent and the cart is being recovered, as after any send
    assert cloud.steps()[0].status == StepStatus.SENT
    assert cloud.cart().status == CartStatus.RECOVERING
    assert cloud.events()[-1] == "message_confirmed"
    assert_figures_match_a_recount(cloud)


def test_a_failed_status_leaves_a_step_sending_to_its_sender_then_the_sweep_fails_it(cloud):
    sent = left_sending(cloud)
    # When Meta reports the message failed (the per-shopper marketing cap)
    meta_says(cloud, sent, "failed", errors=[status_error(131049)])
    # Then the message failed, and the step waits for its sender's answer
    assert cloud.messages()[0].status == MessageStatus.FAILED
    assert cloud.steps()[0].status == StepStatus.SENDING
    # And once the grace period is over, the sweep records what Meta said: failed, not uncertain
    with cloud.at(DUE + SENDING_GRACE + MIN):
        report = run_sweep(cloud.runtime)
    assert report.steps_uncertain == 0
    assert cloud.steps()[0].status == StepStatus.FAILED
    cart = cloud.cart()
    assert cart.first_message_at is None and cart.status == CartStatus.ABANDONED
    assert "message_uncertain" not in cloud.events()
    assert_figures_match_a_recount(cloud)
