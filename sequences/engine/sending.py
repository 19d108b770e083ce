"""The cart's clock tick: decide under the cart lock, write the ledger, send, record.

``advance_cart`` is one cart's tick, every case (engine.batches runs the common one for many
carts at once and hands it the rest). It re-checks every guard at send time, under the
contact and cart locks (invariant 2), and moves the step to SENDING and commits *before* the
transport is called, so a re-run, a duplicate job or a worker that died mid-send can never
send that step again (invariant 1): an unresolved SENDING step becomes UNCERTAIN, not resent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

from sqlalchemy import func, update
from sqlmodel import Session, col, select

from channels.transport import OutboundMessage, OutcomeKind, Sender, SendOutcome, callback_data
from channels.whatsapp.templates import TEMPLATE_TEXT_ONLY, TEMPLATE_WITH_IMAGE
from sequences.db import lock_cart_with_contact
from sequences.engine import cart_states, offer_rules, policy, steps, timeline
from sequences.engine.consent import opt_out_locked
from sequences.engine.messages import render_step_message
from sequences.experiments import assignment
from sequences.merchant.store_settings import STORE_POLICY_CONSENT, StoreSettings
from sequences.models import (
    TERMINAL_CART_STATUSES,
    Cart,
    CartLine,
    CartStatus,
    Contact,
    ExperimentAssignment,
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
from sequences.runtime import Runtime
from sequences.whatsapp import health, messaging_limit
from sequences.whatsapp.accounts import sender_for

log = logging.getLogger("cartback.sending")

# How long a SENDING step may stay unresolved before the sweep calls it UNCERTAIN (wall
# clock, longer than any transport timeout).
SENDING_GRACE = timedelta(minutes=5)
# Backoff when the transport says "not now" without a time of its own.
DEFAULT_RETRY_AFTER = timedelta(minutes=1)
# Message statuses that count towards the frequency cap.
REACHED_SHOPPER = (MessageStatus.SENT, MessageStatus.DELIVERED, MessageStatus.READ, MessageStatus.UNCERTAIN)
# A step whose template is not approved looks again this often (within its 24 h window).
TEMPLATE_RECHECK = timedelta(minutes=15)
# A step held by Meta's daily messaging limit looks again this much later (room comes back as
# the oldest of the last 24 hours' shoppers fall out of the window).
LIMIT_RECHECK = timedelta(minutes=30)


@dataclass(frozen=True)
class Decision:
    """What to transmit next, if anything (the cart's next moment is on the cart itself)."""

    outbound: OutboundMessage | None = None
    step_id: int | None = None
    # When the step was due: its lateness is measured at the hand-over to the transport.
    due_at: datetime | None = None


def advance_cart(runtime: Runtime, cart_id: int) -> list[str]:
    """Run everything that is due for the cart now; returns what happened, step by step."""
    happened: list[str] = []
    decision = _decide(runtime, cart_id, happened)
    if decision.outbound is not None:
        finish_send(
            runtime, cart_id, decision, _transmit(runtime, decision.outbound, decision.due_at), happened
        )
    return happened


def finish_send(
    runtime: Runtime, cart_id: int, decision: Decision, outcome: SendOutcome, happened: list[str]
) -> None:
    """Record a transmitted step's outcome and go on with the cart from there."""
    # Bounded: at most one send per step. Recording an outcome also decides what comes next,
    # in the same locked transaction (one round of locking per send, not two).
    for _ in range(5):
        decision = _record_outcome(runtime, cart_id, decision, outcome, happened)
        if decision.outbound is None:
            return
        outcome = _transmit(runtime, decision.outbound, decision.due_at)


def observe_lateness(runtime: Runtime, due_times: Sequence[datetime | None]) -> None:
    """Step lateness (telemetry): from each step's due time to now, its hand-over."""
    now = runtime.now()
    histogram = runtime.telemetry.step_lateness.labels(runtime.transport.name)
    for due_at in due_times:
        if due_at is not None:
            histogram.observe(max((now - due_at).total_seconds(), 0.0))


def _transmit(runtime: Runtime, outbound: OutboundMessage, due_at: datetime | None = None) -> SendOutcome:
    observe_lateness(runtime, [due_at])
    try:
        return runtime.transport.send(outbound)
    except Exception as exc:
        log.exception("transport raised", extra={"message_id": outbound.message_id})
        return SendOutcome(OutcomeKind.UNKNOWN, error_detail=type(exc).__name__)


def _unreachable_reason(contact: Contact | None) -> str | None:
    if contact is None:
        return "no phone number"
    if not contact.marketing_consent:
        return "no marketing consent"
    return None


def _decide(runtime: Runtime, cart_id: int, happened: list[str]) -> Decision:
    with runtime.database.locked_session() as session:
        cart, contact = lock_cart_with_contact(session, cart_id)
        if cart is None or cart.id is None:
            return Decision()
        store = session.get(Store, cart.store_id)
        assert store is not None
        return _decide_locked(runtime, session, store, cart, contact, happened)


def _decide_locked(
    runtime: Runtime, session: Session, store: Store, cart: Cart, contact: Contact | None, happened: list[str]
) -> Decision:
    """Everything due now, decided under the locks the caller holds."""
    assert cart.id is not None
    now = runtime.now()
    store_settings = runtime.store_settings(store)
    # A cart in an arm runs with the arm's settings; before it has one, it becomes eligible
    # after the shortest inactivity of a running experiment's arms.
    resolved = assignment.cart_settings(session, cart.id, cart.store_id, store_settings)
    settings, arm, running = resolved.settings, resolved.arm, resolved.running
    if cart.status in TERMINAL_CART_STATUSES:
        cart.next_wake_at = None
        return Decision()
    if store.status != StoreStatus.ACTIVE:
        steps.cancel_open(session, cart.id, "store uninstalled cartback")
        cart_states.close(cart, CartStatus.EXPIRED, "store uninstalled cartback", now)
        return Decision()

    inactive_at = policy.abandoned_at(cart.last_activity_at, settings, runtime.time_scale)
    if now < inactive_at:
        # Debounce: the shopper was active since this alarm was set.
        return _wait(cart, inactive_at)
    window_end = policy.sequence_window_end(cart.last_activity_at, runtime.time_scale)

    if contact is not None and contact.opted_out_at is not None:
        # Abandoned all the same: the dashboard counts it, as not reachable.
        cart.abandoned_at = cart.abandoned_at or inactive_at
        opt_out_locked(session, contact, [cart], now)
        happened.append("opted out")
        return Decision()
    if cart.status == CartStatus.ACTIVE:
        reason = _unreachable_reason(contact)
        if reason is None and cart.line_count == 0:
            return _wait(cart, None)
        if reason is not None:
            # Abandoned all the same: the dashboard counts it, as not reachable.
            cart.abandoned_at = inactive_at
            cart_states.close(cart, CartStatus.UNREACHABLE, reason, now)
            timeline.record(session, cart, "cart_unreachable", reason=reason)
            happened.append("unreachable")
            return Decision()
        cart_states.abandon(cart, inactive_at)
        timeline.record(session, cart, "cart_abandoned")
        happened.append("abandoned")
        if running is not None and contact is not None and contact.id is not None:
            # Recorded as the cart becomes eligible, before anything is sent.
            row, arm = assignment.assign(
                running, store_settings, cart, contact.id, inactive_at, runtime.time_scale
            )
            session.add(ExperimentAssignment(**row))
            timeline.record(session, cart, "experiment_arm", experiment=arm.experiment_id, arm=arm.name)
            settings = arm.settings
        steps.plan(session, cart, store, settings, runtime.time_scale, holdout=bool(arm and arm.holdout))
        _replace_older_sequences(session, cart, now)

    cart_steps = steps.steps_of(session, cart.id)
    for sending in cart_steps:
        if sending.status != StepStatus.SENDING:
            continue
        assert sending.attempted_at is not None
        if now < sending.attempted_at + SENDING_GRACE:
            # Another worker is mid-send: its own loop continues the sequence. Never put a
            # second message beside an unresolved one; look again when it must be over.
            return _wait(cart, sending.attempted_at + SENDING_GRACE)
        # Its sender died between the ledger and the outcome.
        settle_abandoned_send(session, cart, sending)
    _skip_superseded(session, cart, cart_steps, now, happened)
    while (step := steps.next_due(cart_steps)) is not None:
        assert step.due_at is not None and contact is not None
        if step.due_at > now:
            return _wait(cart, step.due_at)
        if step.step_number > len(settings.steps):
            # The merchant cut the sequence short since this step was planned.
            step.status, step.reason = StepStatus.CANCELLED, "step no longer configured"
            continue
        skip, defer_to = _guard(session, store, settings, cart, contact, now, window_end, runtime)
        channel: Channel | None = None
        if skip is None and defer_to is None:
            skip, defer_to, channel = _channel_guard(runtime, session, store, cart, now, window_end)
        if defer_to is not None:
            step.due_at = defer_to
            return _wait(cart, defer_to)
        if skip is not None:
            step.status, step.reason = StepStatus.SKIPPED, skip
            timeline.record(session, cart, "step_skipped", step=step.step_number, reason=skip)
            happened.append(f"step {step.step_number} skipped: {skip}")
            continue
        assert channel is not None
        return _begin_send(runtime, session, store, settings, cart, contact, step, channel, now)

    if now >= window_end:
        if cart.status in (CartStatus.ABANDONED, CartStatus.RECOVERING):
            cart_states.close(cart, CartStatus.EXPIRED, "sequence over without an order", now)
            timeline.record(session, cart, "cart_expired")
            happened.append("expired")
        return Decision()
    return _wait(cart, window_end)


def settle_abandoned_send(session: Session, cart: Cart, step: RecoveryStep) -> str:
    """A step left SENDING past the grace period: its sender stopped before recording the
    outcome. Maybe sent, so never resent: UNCERTAIN; FAILED when Meta has reported the message
    failed meanwhile (the webhook applied what that means). Returns the status given."""
    message = session.exec(select(Message).where(Message.step_id == step.id)).first()
    if message is not None and message.status == MessageStatus.FAILED:
        # Not uncertain: no message reached the shopper.
        step.status, step.reason = StepStatus.FAILED, message.error_detail or "Meta reported it failed"
        return StepStatus.FAILED
    step.status, step.reason = StepStatus.UNCERTAIN, "sender stopped before recording the outcome"
    if message is not None and message.status == MessageStatus.QUEUED:
        message.status = MessageStatus.UNCERTAIN
    _reached_shopper(cart, step.attempted_at or cart.last_activity_at)
    timeline.record(session, cart, "message_uncertain", step=step.step_number)
    return StepStatus.UNCERTAIN


def _skip_superseded(
    session: Session, cart: Cart, cart_steps: list[RecoveryStep], now: datetime, happened: list[str]
) -> None:
    """After an outage several steps can be overdue at once: send only the latest of them."""
    overdue = [
        step
        for step in cart_steps
        if step.status == StepStatus.SCHEDULED and step.due_at is not None and step.due_at <= now
    ]
    for step in overdue[:-1]:
        step.status, step.reason = StepStatus.SKIPPED, "superseded: a later step was already due"
        timeline.record(session, cart, "step_skipped", step=step.step_number, reason=step.reason)
        happened.append(f"step {step.step_number} skipped: superseded")


def _wait(cart: Cart, at: datetime | None) -> Decision:
    cart.next_wake_at = at
    return Decision()


def _guard(
    session: Session,
    store: Store,
    settings: StoreSettings,
    cart: Cart,
    contact: Contact,
    now: datetime,
    window_end: datetime,
    runtime: Runtime,
) -> tuple[str | None, datetime | None]:
    """(skip reason, defer-until) for the step due now; both None means send."""
    skip, defer_to = send_guard(store, settings, cart, contact, now, window_end)
    if skip is not None or defer_to is not None:
        return skip, defer_to
    since = now - policy.frequency_window(runtime.time_scale)
    recent = session.exec(
        select(func.count())
        .select_from(Message)
        .where(
            Message.contact_id == contact.id,
            Message.store_id == store.id,
            col(Message.created_at) >= since,
            # Messages that went out (or may have): one waiting to retry has not, and a step's
            # own message must not count against that step.
            col(Message.status).in_(REACHED_SHOPPER),
        )
    ).one()
    return frequency_guard(recent, settings)


def send_guard(
    store: Store, settings: StoreSettings, cart: Cart, contact: Contact, now: datetime, window_end: datetime
) -> tuple[str | None, datetime | None]:
    """Every guard but the frequency cap (which counts messages): (skip reason, defer-until)."""
    if store.sending_paused:
        return f"sending paused: {store.pause_reason or 'by the merchant'}", None
    if not contact.marketing_consent:
        return "no marketing consent", None
    if settings.consent_policy == "checkout_checkbox" and contact.consent_source == STORE_POLICY_CONSENT:
        # Consent the store's own opt-in stood for; the merchant has since said it does not.
        return "consent policy: the shopper did not tick the marketing box", None
    if cart.shopper_replied_at is not None:
        return "the shopper replied; a person should answer", None
    if cart.line_count == 0:
        return "cart is empty", None
    if now > window_end:
        return "past the 24 h window", None
    if policy.in_quiet_hours(now, settings, store.timezone):
        morning = policy.after_quiet_hours(now, settings, store.timezone)
        if morning > window_end:
            return "quiet hours: next morning is past the 24 h window", None
        return None, morning
    return None, None


def frequency_guard(recent: int, settings: StoreSettings) -> tuple[str | None, datetime | None]:
    """The last guard: ``recent`` is the shopper's messages from this store within the window."""
    if recent >= settings.max_messages_per_24h:
        return f"frequency cap: {recent} messages in 24 h", None
    return None, None


@dataclass(frozen=True)
class Channel:
    """How this store's messages go out: its number (cloud) and its shoppers' language."""

    sender: Sender | None
    language: str
    lines: list[CartLine]
    template_name: str


def _channel_guard(
    runtime: Runtime, session: Session, store: Store, cart: Cart, now: datetime, window_end: datetime
) -> tuple[str | None, datetime | None, Channel | None]:
    """(skip reason, defer-until, channel): the number and an approved template, when needed."""
    lines = list(
        session.exec(
            select(CartLine).where(CartLine.cart_id == cart.id).order_by(col(CartLine.position))
        ).all()
    )
    account = session.exec(select(WhatsAppAccount).where(WhatsAppAccount.store_id == store.id)).first()
    status = None
    if runtime.transport.needs_whatsapp_account and account is not None:
        status = session.exec(
            select(WhatsAppTemplate.status).where(
                WhatsAppTemplate.store_id == store.id,
                WhatsAppTemplate.name == template_for(lines),
                WhatsAppTemplate.language == account.default_language,
            )
        ).first()
    return channel_guard(
        runtime, lines, account, status, now, window_end, partial(sender_for, runtime), cart.contact_id
    )


def template_for(lines: list[CartLine]) -> str:
    return TEMPLATE_WITH_IMAGE if any(line.image_url for line in lines) else TEMPLATE_TEXT_ONLY


def channel_guard(
    runtime: Runtime,
    lines: list[CartLine],
    account: WhatsAppAccount | None,
    template_status: str | None,
    now: datetime,
    window_end: datetime,
    make_sender: Callable[[WhatsAppAccount], Sender],
    contact_id: int | None = None,
) -> tuple[str | None, datetime | None, Channel | None]:
    """``_channel_guard`` from what it reads: the cart's lines, the store's number and the
    status of the template those lines need in the number's language; and, last, room under
    Meta's daily messaging limit for this shopper (reserved when there is)."""
    template_name = template_for(lines)
    language = account.default_language if account is not None else "en"
    if not runtime.transport.needs_whatsapp_account:
        return None, None, Channel(None, language, lines, template_name)
    if account is None:
        return "no WhatsApp number connected: connect one in cartback's settings", None, None
    if template_status != TemplateStatus.APPROVED:
        # The steps using a template that is not approved (yet, or any more) wait for it.
        waiting = f"template {template_name} ({language}) is {template_status or 'not pushed'}"
        recheck = now + TEMPLATE_RECHECK
        if recheck > window_end:
            return f"{waiting} until past the 24 h window", None, None
        return None, recheck, None
    if not messaging_limit.admit(runtime, account, contact_id, now):
        # Held before Meta refuses: the step waits for room within its 24 h window.
        waiting = "Meta's daily messaging limit for new shoppers is reached"
        recheck = now + LIMIT_RECHECK
        if recheck > window_end:
            return f"{waiting} until past the 24 h window", None, None
        return None, recheck, None
    return None, None, Channel(make_sender(account), language, lines, template_name)


def _replace_older_sequences(session: Session, cart: Cart, now: datetime) -> None:
    """One active sequence per contact per store: a newer cart replaces the older one."""
    if cart.contact_id is None:
        return
    # Locked by id before their steps are touched (the lock order, sequences.db: a cart before
    # its rows); the contact's lock, held, keeps their other writers out meanwhile.
    older = session.exec(
        select(Cart)
        .where(
            Cart.store_id == cart.store_id,
            Cart.contact_id == cart.contact_id,
            Cart.id != cart.id,
            col(Cart.status).not_in(list(TERMINAL_CART_STATUSES)),
            col(Cart.last_activity_at) <= cart.last_activity_at,
        )
        .order_by(col(Cart.id))
        .with_for_update()
    ).all()
    for other in older:
        assert other.id is not None
        steps.cancel_open(session, other.id, f"replaced by newer cart {cart.id}")
        # Conditional: a racing order or opt-out on the older cart wins. (A bulk update the
        # dashboard's recount does not see: open to expired changes none of its figures.)
        session.exec(
            cart_states.close_all(
                update(Cart).where(col(Cart.id) == other.id),
                CartStatus.EXPIRED,
                f"replaced by newer cart {cart.id}",
                now,
            )
        )
        timeline.record(session, other, "sequence_replaced", by_cart=cart.id)


def _begin_send(
    runtime: Runtime,
    session: Session,
    store: Store,
    settings: StoreSettings,
    cart: Cart,
    contact: Contact,
    step: RecoveryStep,
    channel: Channel,
    now: datetime,
) -> Decision:
    """Write the ledger (step SENDING + message row) and hand back what to transmit."""
    assert cart.id is not None and step.id is not None and contact.id is not None and store.id is not None
    lines = channel.lines
    message = session.exec(select(Message).where(Message.step_id == step.id)).first()
    if message is None:
        message = Message(
            store_id=store.id,
            cart_id=cart.id,
            step_id=step.id,
            step_number=step.step_number,
            cart_abandoned_at=cart.abandoned_at,
            contact_id=contact.id,
            transport=runtime.transport.name,
            template_name="",
            language="en",
        )
        session.add(message)
        session.flush()
    assert message.id is not None
    token = runtime.links.sign(message.id)
    configured = settings.steps[step.step_number - 1] if step.step_number <= len(settings.steps) else None
    # Settings apply to every step not yet sent: the offer is the one configured now, and it
    # is frozen on the step from here on (the link's discount follows it).
    wanted = configured.offer if configured and configured.offer and cart.currency == store.currency else None
    if wanted is not None:
        history = offer_rules.load_history(
            session, {store.id: store}, {store.id: settings}, [contact.id], now, runtime.time_scale
        )
        wanted = offer_rules.allowed_offer(
            wanted, cart, contact.id, settings, history, now, runtime.time_scale
        )
    step.offer = wanted.model_dump(mode="json") if wanted else None
    offer = steps.step_offer(step, cart, store)
    rendered = render_step_message(
        store=store,
        cart=cart,
        lines=lines,
        contact=contact,
        offer=offer,
        link_url=runtime.link_url(token),
        link_token=token,
        language=channel.language,
        copy_line=configured.copy_lines.get(channel.language) if configured else None,
    )
    message.template_name, message.language = rendered.template_name, rendered.language
    message.components, message.preview = rendered.components, rendered.preview
    message.status = MessageStatus.QUEUED
    step.status, step.attempted_at = StepStatus.SENDING, now
    # If this worker dies now, the cart comes due at the end of the grace period and its own
    # tick settles the step (settle_abandoned_send).
    cart.next_wake_at = now + SENDING_GRACE
    return Decision(
        step_id=step.id,
        due_at=step.due_at,
        outbound=OutboundMessage(
            message_id=message.id,
            store_id=store.id,
            to_phone_e164=contact.phone_e164,
            template_name=rendered.template_name,
            language=rendered.language,
            components=rendered.components,
            biz_opaque_callback_data=callback_data(message.id),
            preview=rendered.preview,
            sender=channel.sender,
        ),
    )


def _record_outcome(
    runtime: Runtime, cart_id: int, decision: Decision, outcome: SendOutcome, happened: list[str]
) -> Decision:
    assert decision.outbound is not None and decision.step_id is not None
    with runtime.database.locked_session() as session:
        cart, contact = lock_cart_with_contact(session, cart_id)
        step = session.get(RecoveryStep, decision.step_id)
        message = session.get(Message, decision.outbound.message_id)
        store = session.get(Store, decision.outbound.store_id)
        assert cart is not None and step is not None and message is not None and store is not None
        now = runtime.now()
        message.provider_message_id = outcome.provider_message_id or message.provider_message_id
        number = step.step_number
        if step.status == StepStatus.SENT:
            # Meta's status webhook said it went out before this answer came back, and settled
            # the step then (record_sent): whatever this answer says, a sent step stays sent.
            happened.append(f"step {number} sent: confirmed by Meta first")
            return _decide_locked(runtime, session, store, cart, contact, happened)
        # A status webhook can beat this commit (it maps by our message id): what Meta said
        # there (delivered, read, or failed with its code) stands.
        heard_from_meta = message.status in (
            MessageStatus.DELIVERED,
            MessageStatus.READ,
            MessageStatus.FAILED,
        )
        if not heard_from_meta:
            message.error_code, message.error_detail = outcome.error_code, outcome.error_detail
        if message.status == MessageStatus.FAILED and outcome.kind in (OutcomeKind.SENT, OutcomeKind.UNKNOWN):
            # Meta's failed status came first (the webhook acted on it): the step failed.
            step.status, step.reason = StepStatus.FAILED, message.error_detail or "Meta reported it failed"
            happened.append(f"step {number} failed: reported by Meta")
        elif outcome.kind == OutcomeKind.SENT or (outcome.kind == OutcomeKind.UNKNOWN and heard_from_meta):
            record_sent(session, cart, step, message, now)
            happened.append(f"step {number} sent")
        elif outcome.kind == OutcomeKind.UNKNOWN:
            step.status, step.sent_at = StepStatus.UNCERTAIN, None
            if message.status == MessageStatus.QUEUED:
                message.status = MessageStatus.UNCERTAIN
            _reached_shopper(cart, now)
            timeline.record(session, cart, "message_uncertain", step=number, message_id=message.id)
            happened.append(f"step {number} uncertain")
        else:
            _record_failure(runtime, session, store, cart, contact, step, message, outcome, happened)
        return _decide_locked(runtime, session, store, cart, contact, happened)


def record_sent(
    session: Session,
    cart: Cart,
    step: RecoveryStep,
    message: Message,
    at: datetime,
    *,
    event: str = "message_sent",
) -> None:
    """The step's message went out: the step, its message and the cart say so, with the
    timeline and (through the ORM) the dashboard's kept figures. Called under the cart lock by
    whichever hears first: the transport's answer here, or Meta's status webhook (inbound)."""
    step.status, step.sent_at = StepStatus.SENT, at
    if message.status in (MessageStatus.QUEUED, MessageStatus.UNCERTAIN):
        message.status = MessageStatus.SENT
    message.sent_at = message.sent_at or at
    _reached_shopper(cart, at)
    timeline.record(session, cart, event, step=step.step_number, message_id=message.id)


def _reached_shopper(cart: Cart, at: datetime) -> None:
    """A message went out (or may have): attribution starts, and an open cart is recovering."""
    cart.first_message_at = cart.first_message_at or at
    if cart.status in (CartStatus.ABANDONED, CartStatus.ACTIVE):
        cart_states.start_recovering(cart)


def _record_failure(
    runtime: Runtime,
    session: Session,
    store: Store,
    cart: Cart,
    contact: Contact | None,
    step: RecoveryStep,
    message: Message,
    outcome: SendOutcome,
    happened: list[str],
) -> None:
    """A send that did not go out: retry later, drop the step, or act on what Meta said."""
    assert cart.id is not None
    now, number = runtime.now(), step.step_number
    if outcome.kind == OutcomeKind.RETRY_LATER:
        # Not a failure of the message: it goes again (the same row) when the step does.
        message.status = MessageStatus.QUEUED
        retry_at = now + (outcome.retry_after or DEFAULT_RETRY_AFTER)
        window_end = policy.sequence_window_end(cart.last_activity_at, runtime.time_scale)
        if retry_at <= window_end:
            step.status, step.due_at, step.reason = StepStatus.SCHEDULED, retry_at, outcome.error_code
        else:
            step.status, step.reason = StepStatus.SKIPPED, "retry would be past the 24 h window"
        happened.append(f"step {number} retry later")
        return
    message.status, message.failed_at = MessageStatus.FAILED, now
    if outcome.kind == OutcomeKind.PAUSE_TEMPLATE:
        # Meta refused the template itself: stop using it until Meta says otherwise; the step
        # was not sent and waits for the template like any step that uses it.
        health.set_template_status(
            session,
            store.id or 0,
            message.template_name,
            message.language,
            health.template_status_after(outcome.error_code),
            reason=f"WhatsApp error {outcome.error_code}: {outcome.error_detail}",
            at=now,
        )
        step.status, step.due_at, step.reason = StepStatus.SCHEDULED, now, outcome.error_code
        message.status, message.failed_at = MessageStatus.QUEUED, None
        happened.append(f"step {number} waits for its template")
        return
    step.status, step.reason = StepStatus.FAILED, outcome.error_detail or outcome.kind.value
    timeline.record(
        session, cart, "message_failed", step=number, outcome=outcome.kind.value, code=outcome.error_code
    )
    happened.append(f"step {number} failed: {outcome.kind.value}")
    if outcome.kind == OutcomeKind.STOP_CART:
        steps.cancel_open(session, cart.id, "number cannot receive messages")
        cart_states.close(cart, CartStatus.UNREACHABLE, "number cannot receive messages", now)
    elif outcome.kind == OutcomeKind.OPT_OUT and contact is not None:
        opt_out_locked(
            session, contact, [cart], now, source="whatsapp_error", evidence={"code": outcome.error_code}
        )
    elif outcome.kind == OutcomeKind.PAUSE_STORE:
        health.pause_store(
            store, health.WHATSAPP_ERROR, f"WhatsApp error {outcome.error_code}: {outcome.error_detail}", now
        )
    health.check_failure_rate(session, store, now)
