"""Meta's message statuses: each moves one of our messages forward, once.

- a status only moves a message forward (sent < delivered < read; failed is terminal);
- a sent, delivered or read status settles a step its sender never recorded (SENDING: the worker
  died, or still waits, after Meta took the message; UNCERTAIN: the answer was lost) as SENT, once,
  as the sender would have (``sending.record_sent``), and the cart's alarm rings now for what
  comes next; a step already SENT is never touched again;
- a failed status applies what its code means (opt-out, unreachable, pauses) under the contact
  and cart locks the senders take (invariant 2);
- a delivered marketing template gets its cost from the rate card (Meta sends no amount).
"""

from __future__ import annotations

from decimal import Decimal

from sqlmodel import Session, col, select

from channels.transport import OutcomeKind, message_id_from_callback
from channels.whatsapp.errors import action_for
from channels.whatsapp.webhook_events import StatusEvent
from sequences.db import lock_cart_with_contact
from sequences.engine import cart_states, steps, timeline
from sequences.engine.consent import opt_out_contact_locked
from sequences.engine.sending import record_sent
from sequences.models import (
    TERMINAL_CART_STATUSES,
    Cart,
    CartStatus,
    Contact,
    Message,
    MessageStatus,
    RecoveryStep,
    StepStatus,
    Store,
)
from sequences.runtime import Runtime
from sequences.whatsapp import health
from sequences.whatsapp.inbound.applied import Applied

_RANK = {
    MessageStatus.QUEUED: 0,
    MessageStatus.UNCERTAIN: 0,
    MessageStatus.SENT: 1,
    MessageStatus.DELIVERED: 2,
    MessageStatus.READ: 3,
}
# Meta charges per delivered marketing template and sends no amount: the rate card, per
# recipient calling code, in that market's currency (India, 2026: about ₹0.86 before GST).
MARKETING_RATES: dict[str, tuple[Decimal, str]] = {"91": (Decimal("0.86"), "INR")}


def _find_message(session: Session, store_id: int, event: StatusEvent) -> Message | None:
    """By Meta's wamid; by our own id in biz_opaque_callback_data only for a message whose send
    answer was lost (no wamid stored), and then only if it went to the same shopper: other apps
    on the same WhatsApp account get these webhooks too, with callback data of their own."""
    message = session.exec(
        select(Message).where(Message.store_id == store_id, Message.provider_message_id == event.wamid)
    ).first()
    message_id = message_id_from_callback(event.biz_opaque_callback_data)
    if message is not None or message_id is None or event.recipient_id is None:
        return message
    row = session.exec(
        select(Message, Contact.phone_e164)
        .join(Contact, col(Contact.id) == col(Message.contact_id))
        .where(
            Message.id == message_id, Message.store_id == store_id, col(Message.provider_message_id).is_(None)
        )
    ).first()
    if row is None or row[1] != f"+{event.recipient_id}":
        return None
    return row[0]


def apply_status(runtime: Runtime, store_id: int, event: StatusEvent, result: Applied) -> bool:
    with runtime.database.locked_session() as session:
        peek = _find_message(session, store_id, event)
        if peek is None or peek.id is None:
            return False
        cart, contact = lock_cart_with_contact(session, peek.cart_id)
        message = session.get(Message, peek.id, populate_existing=True)
        store = session.get(Store, store_id)
        assert message is not None and cart is not None and store is not None
        message.provider_message_id = message.provider_message_id or event.wamid
        _record_pricing(message, event, contact)
        if event.status == "failed":
            return _apply_failure(runtime, session, store, cart, message, contact, event, result)
        new = {
            "sent": MessageStatus.SENT,
            "delivered": MessageStatus.DELIVERED,
            "read": MessageStatus.READ,
        }.get(event.status)
        if new is None or message.status == MessageStatus.FAILED:
            return False
        moved = _RANK.get(MessageStatus(message.status), 0) < _RANK[new]
        if moved:
            message.status = new
        # A read without a delivered first implies both (Meta skips "delivered" sometimes).
        message.sent_at = message.sent_at or event.at
        if _RANK[new] >= _RANK[MessageStatus.DELIVERED]:
            message.delivered_at = message.delivered_at or event.at
        if new == MessageStatus.READ:
            message.read_at = message.read_at or event.at
        step = session.get(RecoveryStep, message.step_id)
        if step is not None and step.status in (StepStatus.SENDING, StepStatus.UNCERTAIN):
            _settle_step(runtime, session, cart, step, message, result)
            return True
        return moved


def _settle_step(
    runtime: Runtime, session: Session, cart: Cart, step: RecoveryStep, message: Message, result: Applied
) -> None:
    """Meta says the message went out, and its step never recorded it: settle it as sent.

    Under the contact and cart locks the senders take (the caller's), so a sender whose answer
    comes later finds the step SENT and leaves it so (``sending._record_outcome``), and the
    sweep, which only looks at SENDING steps, no longer calls it uncertain.

    A SENDING step held the sequence back (``_decide_locked`` waits on it) with the cart's alarm
    at the end of the grace period: the alarm is set to now, and the cart's own clock
    (``advance_cart``) decides what comes next, as after any send. It is not decided here: the
    next step may be due already, and a webhook request sends nothing. An UNCERTAIN step held
    nothing back (the sequence went on already), so the alarm stays as it is.

    A "failed" status never comes here (``_apply_failure``): it marks the message failed at once
    and applies what its code means (opt-out, unreachable, pauses), but leaves a SENDING step to
    its sender, which records it FAILED when its answer comes, or to the sweep after the grace
    period, which records it FAILED too on seeing the message failed. Deliberately: the
    dashboard counts the message as failed from now on (its figures read the message), a failed
    message neither starts attribution nor makes the cart recovering, and the next step, hours
    away, is delayed by the grace period at most; settling it here would make the webhook a
    second writer of the sender's own failure outcome for nothing a merchant would see.
    """
    assert cart.id is not None and message.sent_at is not None
    was_sending = step.status == StepStatus.SENDING
    # Meta's time of the first status we heard: when the message went out, or just after.
    record_sent(
        session,
        cart,
        step,
        message,
        message.sent_at,
        event="message_sent" if was_sending else "message_confirmed",
    )
    if was_sending and cart.status not in TERMINAL_CART_STATUSES:
        # The sequence goes on from here: the cart is due now (engine.dispatch claims it).
        cart.next_wake_at = runtime.now()


def _record_pricing(message: Message, event: StatusEvent, contact: Contact | None) -> None:
    """Meta charges a marketing template once it is delivered: the cost is set then, never on a
    message that failed."""
    if event.pricing_category is not None and message.pricing_category is None:
        message.pricing_category, message.billable = event.pricing_category, event.billable
    delivered = event.status in ("delivered", "read")
    if not delivered or message.cost is not None or message.status == MessageStatus.FAILED:
        return
    if message.billable is False or message.pricing_category != "marketing" or contact is None:
        return
    for calling_code, (rate, currency) in MARKETING_RATES.items():
        if contact.phone_e164.startswith(f"+{calling_code}"):
            message.cost, message.cost_currency = rate, currency


def _apply_failure(
    runtime: Runtime,
    session: Session,
    store: Store,
    cart: Cart,
    message: Message,
    contact: Contact | None,
    event: StatusEvent,
    result: Applied,
) -> bool:
    if message.status in (MessageStatus.FAILED, MessageStatus.DELIVERED, MessageStatus.READ):
        return False  # failed is terminal; a late "failed" does not undo a delivery
    code, detail = event.errors[0] if event.errors else (None, "Meta reported the message failed")
    now = runtime.now()
    message.status, message.failed_at = MessageStatus.FAILED, event.at
    message.error_code, message.error_detail = (str(code) if code is not None else None), detail
    message.cost = message.cost_currency = None
    assert cart.id is not None
    step = session.get(RecoveryStep, message.step_id)
    if step is not None and step.status in (StepStatus.SENT, StepStatus.UNCERTAIN):
        step.status, step.reason = StepStatus.FAILED, detail
    timeline.record(session, cart, "message_failed", step=step.step_number if step else None, code=code)
    action = action_for(code)
    if action.kind == OutcomeKind.OPT_OUT and contact is not None:
        evidence = {"code": code, "message_id": message.id, "wamid": event.wamid, "at": event.at.isoformat()}
        opt_out_contact_locked(
            session, contact, now, source="whatsapp_error", evidence=evidence, said_at=event.at
        )
        if contact.id is not None:
            result.opted_out_contacts.add(contact.id)
    elif action.kind == OutcomeKind.STOP_CART:
        steps.cancel_open(session, cart.id, "number cannot receive messages")
        if cart.status not in TERMINAL_CART_STATUSES:
            cart_states.close(cart, CartStatus.UNREACHABLE, "number cannot receive WhatsApp messages", now)
    elif action.kind == OutcomeKind.PAUSE_TEMPLATE:
        health.set_template_status(
            session,
            store.id or 0,
            message.template_name,
            message.language,
            health.template_status_after(code),
            reason=f"WhatsApp error {code}: {detail}",
            at=now,
        )
    elif action.kind == OutcomeKind.PAUSE_STORE:
        health.pause_store(
            store, health.WHATSAPP_ERROR, f"WhatsApp error {code}: {action.merchant_reason}", now
        )
    health.check_failure_rate(session, store, now)
    return True
