"""Applying Meta's webhook events: statuses, shopper replies, preferences, template and
number health. Each event is applied in its own transaction, idempotently, so a delivery Meta
retries (for up to 7 days) or a replayed event changes nothing:

- a status only moves a message forward (sent < delivered < read; failed is terminal);
- a sent, delivered or read status settles a step its sender never recorded (SENDING: the worker
  died, or still waits, after Meta took the message; UNCERTAIN: the answer was lost) as SENT, once,
  as the sender would have (``sending.record_sent``), and the cart's alarm rings now for what
  comes next; a step already SENT is never touched again;
- a shopper's message or preference change is recorded once under its Meta id;
- template and number updates carry Meta's time and never overwrite a newer word.

Opt-outs happen here, inside the webhook request, under the contact lock the senders take,
so a step that is due a second later re-checks and does not go out (invariant 2).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from channels.transport import OutcomeKind, message_id_from_callback
from channels.whatsapp.errors import action_for
from channels.whatsapp.templates import STOP_PAYLOAD, TEMPLATE_NAMES
from channels.whatsapp.webhook_events import (
    Event,
    InboundEvent,
    PhoneQualityEvent,
    PreferenceEvent,
    StatusEvent,
    TemplateEvent,
)
from sequences.db import lock_cart_with_contact, lock_contact
from sequences.engine import cart_states, steps, timeline
from sequences.engine.consent import (
    ReplyIntent,
    ReplyResult,
    apply_intent_locked,
    classify_reply,
    opt_out_contact_locked,
)
from sequences.engine.scheduling import schedule_wake
from sequences.engine.sending import record_sent
from sequences.models import (
    TERMINAL_CART_STATUSES,
    Cart,
    CartStatus,
    Contact,
    InboundMessage,
    Message,
    MessageStatus,
    RecoveryStep,
    StepStatus,
    Store,
    StoreStatus,
    TemplateStatus,
    WhatsAppAccount,
    WhatsAppTemplate,
)
from sequences.privacy.erasure import event_key, is_suppressed
from sequences.runtime import Runtime
from sequences.whatsapp import health

log = logging.getLogger("cartback.whatsapp.inbound")

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
# Meta's template events mapped to what we store; FLAGGED templates still send.
_TEMPLATE_EVENTS = {
    "APPROVED": TemplateStatus.APPROVED,
    "REINSTATED": TemplateStatus.APPROVED,
    "REJECTED": TemplateStatus.REJECTED,
    "PAUSED": TemplateStatus.PAUSED,
    "DISABLED": TemplateStatus.DISABLED,
    "PENDING_DELETION": TemplateStatus.DISABLED,
    "DELETED": TemplateStatus.DISABLED,
    "PENDING": TemplateStatus.PENDING,
}
# A confirmation can only go inside the shopper's 24-hour customer-service window.
REPLY_WINDOW = timedelta(hours=24)


def _has_number(session: Session, contact_id: int | None) -> bool:
    phone = session.exec(select(Contact.phone_e164).where(Contact.id == contact_id)).first()
    return bool(phone and phone.startswith("+"))


@dataclass
class Applied:
    """What a delivery did, for the response log and for work after the commit."""

    applied: int = 0
    ignored: int = 0
    opted_out_contacts: set[int] = field(default_factory=set)
    confirmations: list[int] = field(default_factory=list)
    # Carts whose alarm is set to now (a step settled by Meta's status), rung after the commits.
    wakes: list[tuple[int, datetime]] = field(default_factory=list)


def apply_events(runtime: Runtime, events: list[Event]) -> Applied:
    result = Applied()
    accounts = _Accounts(runtime)
    for event in events:
        if isinstance(event, StatusEvent | InboundEvent | PreferenceEvent):
            store_id = accounts.store_for_number(event.phone_number_id)
            if store_id is None:
                # A number no installed store owns: acknowledged and dropped.
                result.ignored += 1
                continue
            if isinstance(event, StatusEvent):
                done = _apply_status(runtime, store_id, event, result)
            elif isinstance(event, InboundEvent):
                done = _apply_inbound(runtime, store_id, event, result)
            else:
                done = _apply_preference(runtime, store_id, event, result)
        elif isinstance(event, TemplateEvent):
            done = _apply_template(runtime, accounts.stores_for_waba(event.waba_id), event)
        else:
            done = _apply_phone_quality(runtime, event)
        if done:
            result.applied += 1
        else:
            result.ignored += 1
    for cart_id, at in result.wakes:
        schedule_wake(runtime, cart_id, at)
    return result


class _Accounts:
    """Number -> store lookups, cached for one delivery (a delivery names few numbers)."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._numbers: dict[str, int | None] = {}

    def store_for_number(self, phone_number_id: str) -> int | None:
        if phone_number_id not in self._numbers:
            with self._runtime.database.session() as session:
                self._numbers[phone_number_id] = session.exec(
                    select(WhatsAppAccount.store_id)
                    .join(Store, col(Store.id) == col(WhatsAppAccount.store_id))
                    .where(
                        WhatsAppAccount.phone_number_id == phone_number_id, Store.status == StoreStatus.ACTIVE
                    )
                ).first()
        return self._numbers[phone_number_id]

    def stores_for_waba(self, waba_id: str) -> list[int]:
        with self._runtime.database.session() as session:
            return list(
                session.exec(select(WhatsAppAccount.store_id).where(WhatsAppAccount.waba_id == waba_id)).all()
            )


# -- statuses -------------------------------------------------------------------------------


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


def _apply_status(runtime: Runtime, store_id: int, event: StatusEvent, result: Applied) -> bool:
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
        now = runtime.now()
        cart.next_wake_at = now
        result.wakes.append((cart.id, now))


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


# -- shopper messages and preferences -------------------------------------------------------


def _intent(event: InboundEvent) -> ReplyIntent:
    if event.payload == STOP_PAYLOAD:
        return ReplyIntent.STOP
    return classify_reply(event.text) if event.text else ReplyIntent.OTHER


def _contact_for(
    session: Session, runtime: Runtime, store_id: int, wa_id: str | None, context_wamid: str | None
) -> tuple[int | None, int | None]:
    """(contact id, our message id): by the message answered, else by the sender's number."""
    if context_wamid:
        row = session.exec(
            select(Message.contact_id, Message.id).where(
                Message.store_id == store_id, Message.provider_message_id == context_wamid
            )
        ).first()
        # An erased contact's number is gone: a reply to its old message is matched by the
        # sender's number like any other, so a STOP still protects that number.
        if row is not None and _has_number(session, row[0]):
            return row[0], row[1]
    if wa_id:
        phone = f"+{wa_id}"
        contact_id = session.exec(
            select(Contact.id).where(Contact.store_id == store_id, Contact.phone_e164 == phone)
        ).first()
        if contact_id is None:
            erased = is_suppressed(session, runtime, store_id, phone)
            contact_id = erased.id if erased is not None else None
        return contact_id, None
    return None, None


def _apply_inbound(runtime: Runtime, store_id: int, event: InboundEvent, result: Applied) -> bool:
    intent = _intent(event)
    source = "whatsapp_button" if event.payload == STOP_PAYLOAD else "whatsapp_reply"
    key = event_key(runtime, event.wamid)
    try:
        with runtime.database.locked_session() as session:
            if _seen(session, store_id, key):
                return False
            contact_id, reply_to = _contact_for(
                session, runtime, store_id, event.from_wa_id, event.context_wamid
            )
            contact = lock_contact(session, contact_id) if contact_id is not None else None
            if contact is None and intent == ReplyIntent.STOP and event.from_wa_id:
                # STOP from a number we hold nothing for: remember it, so no cart ever messages it.
                contact = _new_opted_out_contact(session, store_id, f"+{event.from_wa_id}", event.at)
            if contact is None:
                log.info("message from an unknown shopper", extra={"store_id": store_id, "kind": event.kind})
                return False
            inbound = InboundMessage(
                store_id=store_id,
                contact_id=contact.id,
                provider_event_id=key,
                kind=event.kind,
                intent=intent.value,
                text=event.text,
                reply_to_message_id=reply_to,
                sent_at=event.at,
            )
            session.add(inbound)
            session.flush()
            evidence: dict[str, Any] = {
                "wamid": event.wamid,
                "text": (event.text or "")[:160],
                "at": event.at.isoformat(),
                "inbound_id": inbound.id,
            }
            if reply_to is not None:
                evidence["message_id"] = reply_to
            outcome = apply_intent_locked(
                session, contact, intent, runtime.now(), source=source, evidence=evidence, said_at=event.at
            )
    except IntegrityError:
        return False  # the same message applied by a concurrent delivery
    _after(result, outcome, inbound.id if outcome.changed and intent != ReplyIntent.OTHER else None)
    return True


def _apply_preference(runtime: Runtime, store_id: int, event: PreferenceEvent, result: Applied) -> bool:
    if event.category != "marketing_messages" or event.value not in ("stop", "resume"):
        return False
    intent = ReplyIntent.STOP if event.value == "stop" else ReplyIntent.START
    key = event_key(runtime, f"user_preferences:{event.wa_id}:{int(event.at.timestamp())}:{event.value}")
    try:
        with runtime.database.locked_session() as session:
            if _seen(session, store_id, key):
                return False
            contact_id, _ = _contact_for(session, runtime, store_id, event.wa_id, None)
            contact = lock_contact(session, contact_id) if contact_id is not None else None
            if contact is None and intent == ReplyIntent.STOP:
                contact = _new_opted_out_contact(session, store_id, f"+{event.wa_id}", event.at)
            if contact is None:
                return False
            session.add(
                InboundMessage(
                    store_id=store_id,
                    contact_id=contact.id,
                    provider_event_id=key,
                    kind="user_preferences",
                    intent=intent.value,
                    sent_at=event.at,
                )
            )
            evidence = {"preference": event.value, "at": event.at.isoformat()}
            outcome = apply_intent_locked(
                session,
                contact,
                intent,
                runtime.now(),
                source="whatsapp_user_preferences",
                evidence=evidence,
                said_at=event.at,
            )
    except IntegrityError:
        return False
    # WhatsApp itself confirmed this choice to the shopper: no reply of ours.
    _after(result, outcome, None)
    return True


def _seen(session: Session, store_id: int, key: str) -> bool:
    return (
        session.exec(
            select(InboundMessage.id).where(
                InboundMessage.store_id == store_id, InboundMessage.provider_event_id == key
            )
        ).first()
        is not None
    )


def _new_opted_out_contact(session: Session, store_id: int, phone: str, at: datetime) -> Contact:
    contact = Contact(
        store_id=store_id, phone_e164=phone, marketing_consent=False, created_at=at, updated_at=at
    )
    session.add(contact)
    session.flush()
    return contact


def _after(result: Applied, outcome: ReplyResult, confirm_inbound_id: int | None) -> None:
    if outcome.intent == ReplyIntent.STOP and outcome.contact_id is not None:
        result.opted_out_contacts.add(outcome.contact_id)
    if confirm_inbound_id is not None:
        result.confirmations.append(confirm_inbound_id)


# -- templates and number health ------------------------------------------------------------


def _apply_template(runtime: Runtime, store_ids: list[int], event: TemplateEvent) -> bool:
    """Status and quality of our templates; the merchant's other templates are not ours to track."""
    if not store_ids or event.name not in TEMPLATE_NAMES:
        return False
    language = event.language.split("_")[0]
    with runtime.database.locked_session() as session:
        for store_id in store_ids:
            if event.quality is not None:
                # Quality is a separate word from status: it does not move the status's clock.
                template = session.exec(
                    select(WhatsAppTemplate).where(
                        WhatsAppTemplate.store_id == store_id,
                        WhatsAppTemplate.name == event.name,
                        WhatsAppTemplate.language == language,
                    )
                ).first()
                if template is not None:
                    template.quality_score = event.quality[:16]
                continue
            status = _TEMPLATE_EVENTS.get((event.event or "").upper())
            if status is None:
                continue  # FLAGGED and other notices: the template still sends
            reason = event.reason if event.reason and event.reason != "NONE" else None
            health.set_template_status(
                session,
                store_id,
                event.name,
                language,
                status,
                reason=reason,
                at=event.at,
                platform_template_id=event.template_id,
            )
    return True


def _apply_phone_quality(runtime: Runtime, event: PhoneQualityEvent) -> bool:
    """FLAGGED (quality turned RED) pauses, UNFLAGGED lifts a quality pause; an older event
    arriving late, or one naming another number of the same account, changes nothing."""
    digits = "".join(ch for ch in event.display_phone_number if ch.isdigit())
    applied = False
    with runtime.database.locked_session() as session:
        accounts = session.exec(select(WhatsAppAccount).where(WhatsAppAccount.waba_id == event.waba_id)).all()
        for account in accounts:
            ours = "".join(ch for ch in (account.display_phone_number or "") if ch.isdigit())
            if ours and ours != digits:
                continue
            if not ours and len(accounts) != 1:
                continue  # cannot tell which number it names
            if account.quality_at is not None and event.at <= account.quality_at:
                continue
            if event.event == "THROUGHPUT_UPGRADE":
                account.messages_per_second = max(account.messages_per_second, 1000)
            elif event.event in ("FLAGGED", "UNFLAGGED"):
                account.quality_rating = "RED" if event.event == "FLAGGED" else "GREEN"
                account.quality_at = event.at
                store = session.get(Store, account.store_id)
                assert store is not None
                health.quality_changed(store, account.quality_rating, runtime.now())
            else:
                continue
            account.updated_at = runtime.now()
            applied = True
    return applied
