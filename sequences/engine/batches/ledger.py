"""A batch's ledger: decided and written in one transaction under the locks (engine.batches).

Locks in the one order (sequences.db): the batch's contacts by id, then its carts by id; the
dashboard's buckets at commit (rollups). Every cart's state is read in a few statements, the
guards are checked as sending._decide_locked checks them, the numbers' sending limits are taken
(a message that may not go yet stays scheduled), and the steps going out are written SENDING
with their message rows, the carts' next moments and the dashboard's deltas, with Core
statements. What this module does not decide goes back to the caller as "per cart".
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert
from sqlmodel import Session, col, select

from channels.transport import OutboundMessage, Sender, SendsBatches, callback_data
from sequences.db import lock_carts_with_contacts, table_of, update_rows
from sequences.engine import cart_states, offer_rules, policy, timeline
from sequences.engine.messages import render_step_message
from sequences.engine.sending import (
    REACHED_SHOPPER,
    SENDING_GRACE,
    Channel,
    channel_guard,
    frequency_guard,
    send_guard,
    template_for,
)
from sequences.experiments import assignment
from sequences.experiments import figures as experiment_figures
from sequences.experiments.assignment import HOLDOUT_REASON
from sequences.merchant import rollups
from sequences.merchant.store_settings import StoreSettings
from sequences.models import (
    TERMINAL_CART_STATUSES,
    Cart,
    CartEvent,
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
    WhatsAppAccount,
    WhatsAppTemplate,
)
from sequences.runtime import Runtime
from sequences.whatsapp.accounts import sender_for

log = logging.getLogger("cartback.batches")

CART, STEP, MESSAGE, EVENT = table_of(Cart), table_of(RecoveryStep), table_of(Message), table_of(CartEvent)
ASSIGNMENT = table_of(ExperimentAssignment)


@dataclass
class _State:
    """What the batch's decisions read, loaded under the locks in a few statements."""

    carts: dict[int, Cart]
    contacts: dict[int, Contact]
    stores: dict[int, Store]
    settings: dict[int, StoreSettings]
    steps: dict[int, list[RecoveryStep]]
    lines: dict[int, list[CartLine]]
    accounts: dict[int, WhatsAppAccount]
    templates: dict[tuple[int, str, str], str]
    # Messages that reached each (contact, store) within the frequency window.
    recent: dict[tuple[int, int], int]
    # Contacts with an open cart in a store: (contact, store) -> [(cart id, last activity)].
    open_carts: dict[tuple[int, int], list[tuple[int, datetime]]]
    # Steps that already have a message row (a retry): the per-cart path reuses that row.
    with_message: set[int]
    # Each store's number as the transport needs it (one decryption per batch).
    senders: dict[int, Sender] = field(default_factory=dict)
    # The carts already in an experiment's arm, and each store's running experiment.
    arms: dict[int, assignment.CartArm] = field(default_factory=dict)
    running: dict[int, assignment.RunningExperiment] = field(default_factory=dict)


@dataclass
class _Plan:
    """One cart's decision: wait until ``wake_at``, or send ``step_number`` now."""

    cart: Cart
    wake_at: datetime | None = None
    # Abandoned in this batch: when, and the step rows to create.
    abandon_at: datetime | None = None
    new_steps: list[dict[str, Any]] = field(default_factory=list)
    # A step moved (quiet hours, a template not approved yet): (step number, new due time).
    deferred: tuple[int, datetime] | None = None
    send_step: int | None = None
    # When the step to send was due (its lateness is measured at the hand-over).
    send_due_at: datetime | None = None
    channel: Channel | None = None
    # Its number's pace: not before this ``time.monotonic()`` (the transport waits for it),
    # nor after ``send_by`` (the transport does not send it then).
    send_at: float | None = None
    send_by: float | None = None
    # The settings the cart runs with (its arm's, if it has one), and an arm given in this
    # batch: the row to record and the arm.
    settings: StoreSettings | None = None
    assigned: tuple[dict[str, Any], assignment.CartArm] | None = None


@dataclass(frozen=True)
class InFlight:
    cart_id: int
    step_id: int
    outbound: OutboundMessage
    due_at: datetime | None = None


def write_ledger(runtime: Runtime, cart_ids: list[int]) -> tuple[list[InFlight], list[int]]:
    """Decide and write the batch's ledger; returns what to transmit and the carts left to the
    per-cart path (run after this commit)."""
    now = runtime.now()
    with runtime.database.locked_session() as session:
        state, per_cart = _load(runtime, session, cart_ids, now)
        plans: list[_Plan] = []
        for cart in state.carts.values():
            plan = _decide(runtime, state, cart, now)
            if plan is None:
                per_cart.append(cart.id or 0)
            else:
                plans.append(plan)
        _reserve(runtime, state, [plan for plan in plans if plan.send_step is not None], now)
        in_flight = _write(runtime, session, state, plans, now)
    return in_flight, sorted(per_cart)


def _load(runtime: Runtime, session: Session, cart_ids: list[int], now: datetime) -> tuple[_State, list[int]]:
    """Lock the contacts, then the carts (the one lock order), and read what the guards need."""
    locked = lock_carts_with_contacts(session, cart_ids)
    # A cart whose contact changed between the peek and the lock: the per-cart path locks it
    # in order again.
    contacts, carts, per_cart = locked.contacts, locked.carts, list(locked.moved)
    contact_ids = sorted(contacts)
    ids = list(carts)
    store_ids = sorted({cart.store_id for cart in carts.values()})
    stores = {store.id: store for store in session.scalars(select(Store).where(col(Store.id).in_(store_ids)))}
    state = _State(
        carts=carts,
        contacts=contacts,
        stores={store_id: store for store_id, store in stores.items() if store_id is not None},
        settings={store_id: runtime.store_settings(store) for store_id, store in stores.items() if store_id},
        steps=grouped(
            session.scalars(
                select(RecoveryStep)
                .where(col(RecoveryStep.cart_id).in_(ids))
                .order_by(col(RecoveryStep.cart_id), col(RecoveryStep.step_number))
            ),
            lambda step: step.cart_id,
        ),
        lines=grouped(
            session.scalars(
                select(CartLine)
                .where(col(CartLine.cart_id).in_(ids))
                .order_by(col(CartLine.cart_id), col(CartLine.position))
            ),
            lambda line: line.cart_id,
        ),
        accounts={
            account.store_id: account
            for account in session.scalars(
                select(WhatsAppAccount).where(col(WhatsAppAccount.store_id).in_(store_ids))
            )
        },
        templates={
            (store_id, name, language): status
            for store_id, name, language, status in session.execute(
                select(
                    col(WhatsAppTemplate.store_id),
                    col(WhatsAppTemplate.name),
                    col(WhatsAppTemplate.language),
                    col(WhatsAppTemplate.status),
                ).where(col(WhatsAppTemplate.store_id).in_(store_ids))
            )
        },
        recent={
            (contact_id, store_id): count
            for contact_id, store_id, count in session.execute(
                select(col(Message.contact_id), col(Message.store_id), func.count())
                .where(
                    col(Message.contact_id).in_(contact_ids),
                    col(Message.created_at) >= now - policy.frequency_window(runtime.time_scale),
                    col(Message.status).in_(REACHED_SHOPPER),
                )
                .group_by(col(Message.contact_id), col(Message.store_id))
            )
        },
        open_carts=defaultdict(list),
        with_message=set(),
    )
    state.arms = assignment.cart_arms(session, ids, state.settings)
    state.running = assignment.running_experiments(session, store_ids)
    for cart_id, contact_id, store_id, last_activity in session.execute(
        select(col(Cart.id), col(Cart.contact_id), col(Cart.store_id), col(Cart.last_activity_at)).where(
            col(Cart.contact_id).in_(contact_ids), col(Cart.status).not_in(list(TERMINAL_CART_STATUSES))
        )
    ):
        state.open_carts[(contact_id, store_id)].append((cart_id, last_activity))
    due_step_ids = [
        step.id
        for cart_steps in state.steps.values()
        for step in cart_steps
        if step.status == StepStatus.SCHEDULED and step.due_at is not None and step.due_at <= now
    ]
    if due_step_ids:
        state.with_message = {
            step_id
            for step_id in session.scalars(
                select(col(Message.step_id)).where(col(Message.step_id).in_(due_step_ids))
            )
        }
    return state, per_cart


def grouped(rows: Iterable[Any], key: Callable[[Any], int]) -> dict[int, list[Any]]:
    grouped: dict[int, list[Any]] = defaultdict(list)
    for row in rows:
        grouped[key(row)].append(row)
    return grouped


@dataclass
class _Step:
    """A step as the decision sees it: a row already there, or one planned in this batch."""

    number: int
    status: str
    due_at: datetime | None
    row: RecoveryStep | None


def _decide(runtime: Runtime, state: _State, cart: Cart, now: datetime) -> _Plan | None:
    """sending._decide_locked for the common path; None hands the cart to the per-cart path."""
    store = state.stores[cart.store_id]
    arm = state.arms.get(cart.id or 0)
    running = None if arm is not None else state.running.get(cart.store_id)
    # A cart in an arm runs with the arm's settings; before it has one, it becomes eligible
    # after the shortest inactivity of a running experiment's arms (experiments.assignment).
    settings = (
        arm.settings if arm else assignment.eligibility_settings(state.settings[cart.store_id], running)
    )
    contact = state.contacts.get(cart.contact_id) if cart.contact_id is not None else None
    if cart.status in TERMINAL_CART_STATUSES or store.status != StoreStatus.ACTIVE:
        return None
    inactive_at = policy.abandoned_at(cart.last_activity_at, settings, runtime.time_scale)
    if now < inactive_at:
        # Debounce: the shopper was active since this moment was set.
        return _Plan(cart, wake_at=inactive_at)
    if contact is None or contact.opted_out_at is not None:
        return None
    window_end = policy.sequence_window_end(cart.last_activity_at, runtime.time_scale)
    existing = state.steps.get(cart.id or 0, [])
    plan = _Plan(cart, settings=settings)
    if cart.status == CartStatus.ACTIVE:
        if existing or not contact.marketing_consent or cart.line_count == 0:
            return None
        if any(
            other_id != cart.id and last_activity <= cart.last_activity_at
            for other_id, last_activity in state.open_carts.get((contact.id or 0, cart.store_id), [])
        ):
            return None  # an older sequence to replace
        plan.abandon_at = inactive_at
        holdout = False
        if running is not None:
            plan.assigned = assignment.assign(
                running, state.settings[cart.store_id], cart, contact.id or 0, inactive_at, runtime.time_scale
            )
            given = plan.assigned[1]
            settings = plan.settings = given.settings
            holdout = given.holdout
        offers_apply = cart.currency == store.currency
        candidates = []
        for planned in policy.plan_steps(cart.last_activity_at, settings, store.timezone, runtime.time_scale):
            goes = planned.due_at is not None and not holdout
            plan.new_steps.append(
                {
                    "store_id": cart.store_id,
                    "cart_id": cart.id,
                    "step_number": planned.step_number,
                    "status": StepStatus.SCHEDULED if goes else StepStatus.SKIPPED,
                    "reason": HOLDOUT_REASON if holdout else planned.skip_reason,
                    "due_at": planned.due_at if goes else None,
                    "offer": planned.offer.model_dump(mode="json")
                    if planned.offer and offers_apply
                    else None,
                }
            )
            candidates.append(
                _Step(planned.step_number, plan.new_steps[-1]["status"], plan.new_steps[-1]["due_at"], None)
            )
    else:
        if any(step.status == StepStatus.SENDING for step in existing):
            return None
        candidates = [_Step(step.step_number, step.status, step.due_at, step) for step in existing]
    scheduled = [
        step for step in candidates if step.status == StepStatus.SCHEDULED and step.due_at is not None
    ]
    overdue = [step for step in scheduled if step.due_at is not None and step.due_at <= now]
    if len(overdue) > 1:
        return None  # superseded steps to skip
    if not scheduled:
        if now >= window_end:
            return None  # the sequence is over
        plan.wake_at = window_end
        return plan
    step = min(scheduled, key=lambda s: (s.due_at, s.number))
    assert step.due_at is not None
    if step.due_at > now:
        plan.wake_at = step.due_at
        return plan
    if step.number > len(settings.steps) or (step.row is not None and step.row.id in state.with_message):
        return None
    skip, defer_to = send_guard(store, settings, cart, contact, now, window_end)
    if skip is None and defer_to is None:
        skip, defer_to = frequency_guard(state.recent.get((contact.id or 0, cart.store_id), 0), settings)
    channel = None
    if skip is None and defer_to is None:
        lines = state.lines.get(cart.id or 0, [])
        account = state.accounts.get(cart.store_id)
        language = account.default_language if account is not None else "en"
        status = state.templates.get((cart.store_id, template_for(lines), language))
        skip, defer_to, channel = channel_guard(
            runtime,
            lines,
            account,
            status,
            now,
            window_end,
            lambda found: _sender(runtime, state, found),
            cart.contact_id,
        )
    if skip is not None:
        return None
    if defer_to is not None:
        plan.deferred, plan.wake_at = (step.number, defer_to), defer_to
        return plan
    plan.send_step, plan.channel, plan.send_due_at = step.number, channel, step.due_at
    # Counted at once: another cart of the same shopper later in this batch sees this message.
    key = (contact.id or 0, cart.store_id)
    state.recent[key] = state.recent.get(key, 0) + 1
    return plan


def _sender(runtime: Runtime, state: _State, account: WhatsAppAccount) -> Sender:
    if account.store_id not in state.senders:
        state.senders[account.store_id] = sender_for(runtime, account)
    return state.senders[account.store_id]


def _reserve(runtime: Runtime, state: _State, sending: list[_Plan], now: datetime) -> None:
    """Take each message's place in its number's limits; one that must wait stays scheduled."""
    transport = runtime.transport
    if not sending or not isinstance(transport, SendsBatches):
        return
    recipients = []
    for plan in sending:
        contact = state.contacts[plan.cart.contact_id or 0]
        assert plan.channel is not None
        recipients.append((plan.channel.sender, contact.phone_e164))
    for plan, slot in zip(sending, transport.reserve(recipients), strict=True):
        if slot.wait is not None:
            # Not this time: the step stays scheduled and the cart is due when its turn comes.
            plan.send_step, plan.channel, plan.wake_at = None, None, now + slot.wait
            _give_back(state, plan)
        else:
            plan.send_at, plan.send_by = slot.send_at, slot.send_by


def _give_back(state: _State, plan: _Plan) -> None:
    """A message that will not go in this batch no longer counts towards the frequency cap."""
    key = (plan.cart.contact_id or 0, plan.cart.store_id)
    state.recent[key] = state.recent.get(key, 1) - 1


def _write(
    runtime: Runtime, session: Session, state: _State, plans: list[_Plan], now: datetime
) -> list[InFlight]:
    """Every write the plans call for, a statement per kind of write."""
    events: list[dict[str, Any]] = []
    abandoned = [plan for plan in plans if plan.abandon_at is not None]
    if abandoned:
        rows: list[dict[str, Any]] = []
        for plan in abandoned:
            assert plan.abandon_at is not None
            moved = cart_states.abandon_values(plan.cart, plan.abandon_at)
            rows.append({"id": plan.cart.id} | moved)
            before = rollups.counted_values(plan.cart)
            rollups.count_change(session, Cart, before, before | moved)
            events.append(timeline.row(plan.cart, "cart_abandoned", now))
        update_rows(session, CART, ["status", "abandoned_at"], rows)
        # A shopper in an experiment who abandons again: their first cart's figures change.
        experiment_figures.touch_contacts(session, [plan.cart.contact_id for plan in abandoned])
    assigned = [(plan.cart, plan.assigned) for plan in plans if plan.assigned is not None]
    if assigned:
        session.execute(insert(ASSIGNMENT), [row for _cart, (row, _arm) in assigned])
        experiment_figures.touch(session, [cart.id for cart, _assigned in assigned])
        events.extend(
            timeline.row(cart, "experiment_arm", now, experiment=arm.experiment_id, arm=arm.name)
            for cart, (_row, arm) in assigned
        )
    step_ids: dict[tuple[int, int], int] = {
        (step.cart_id, step.step_number): step.id
        for cart_steps in state.steps.values()
        for step in cart_steps
        if step.id is not None
    }
    for plan in plans:
        if plan.deferred is not None and plan.new_steps:
            number, due_at = plan.deferred
            plan.new_steps[number - 1]["due_at"] = due_at
    new_steps = [row for plan in plans for row in plan.new_steps]
    if new_steps:
        for step_id, cart_id, number in session.execute(
            insert(STEP).returning(
                STEP.c.id, STEP.c.cart_id, STEP.c.step_number, sort_by_parameter_order=True
            ),
            [{"attempted_at": None, "sent_at": None, "checkout_url": None} | row for row in new_steps],
        ):
            step_ids[(cart_id, number)] = step_id
    deferred = [plan for plan in plans if plan.deferred is not None and not plan.new_steps]
    if deferred:
        update_rows(
            session,
            STEP,
            ["due_at"],
            [
                {"id": step_ids[(plan.cart.id or 0, plan.deferred[0])], "due_at": plan.deferred[1]}
                for plan in deferred
                if plan.deferred is not None
            ],
        )
    sending = [plan for plan in plans if plan.send_step is not None]
    in_flight = _write_messages(runtime, session, state, sending, step_ids, now, events)
    update_rows(
        session,
        CART,
        ["next_wake_at"],
        [
            {
                "id": plan.cart.id,
                "next_wake_at": now + SENDING_GRACE if plan.send_step is not None else plan.wake_at,
            }
            for plan in plans
        ],
    )
    if events:
        session.execute(insert(EVENT), events)
    return in_flight


def _write_messages(
    runtime: Runtime,
    session: Session,
    state: _State,
    sending: list[_Plan],
    step_ids: dict[tuple[int, int], int],
    now: datetime,
    events: list[dict[str, Any]],
) -> list[InFlight]:
    """The message rows of the steps going out, then their content (the link needs the row's id)."""
    if not sending:
        return []
    rows: list[dict[str, Any]] = []
    for plan in sending:
        cart, number = plan.cart, plan.send_step or 0
        rows.append(
            {
                "store_id": cart.store_id,
                "cart_id": cart.id,
                "step_id": step_ids[(cart.id or 0, number)],
                "step_number": number,
                "cart_abandoned_at": plan.abandon_at or cart.abandoned_at,
                "contact_id": cart.contact_id,
                "transport": runtime.transport.name,
                "template_name": "",
                "language": "en",
                "components": [],
                "preview": {},
                "status": MessageStatus.QUEUED,
                "created_at": now,
            }
        )
    message_ids = dict(
        (step_id, message_id)
        for message_id, step_id in session.execute(
            insert(MESSAGE).returning(MESSAGE.c.id, MESSAGE.c.step_id, sort_by_parameter_order=True), rows
        )
    )
    contents, step_rows, in_flight = [], [], []
    # The discount rules' past (engine.offer_rules), read for every cart in the batch at once,
    # and only once a message carries an offer.
    history: offer_rules.OfferHistory | None = None
    for plan, row in zip(sending, rows, strict=True):
        cart, channel, number = plan.cart, plan.channel, plan.send_step or 0
        assert channel is not None
        store, settings = state.stores[cart.store_id], plan.settings or state.settings[cart.store_id]
        contact = state.contacts[cart.contact_id or 0]
        message_id = message_ids[row["step_id"]]
        token = runtime.links.sign(message_id)
        configured = settings.steps[number - 1]
        # Settings apply to every step not yet sent: the offer is the one configured now,
        # frozen on the step from here on (the link's discount follows it).
        offer = configured.offer if configured.offer and cart.currency == store.currency else None
        if offer is not None:
            if history is None:
                stores = {plan.cart.store_id for plan in sending}
                history = offer_rules.load_history(
                    session,
                    {store_id: state.stores[store_id] for store_id in stores},
                    {store_id: state.settings[store_id] for store_id in stores},
                    [plan.cart.contact_id for plan in sending if plan.cart.contact_id is not None],
                    now,
                    runtime.time_scale,
                )
            offer = offer_rules.allowed_offer(
                offer, cart, contact.id or 0, settings, history, now, runtime.time_scale
            )
            if offer is not None:
                offer_rules.count_sent(history, contact.id or 0, cart.store_id, cart.id or 0, now)
        rendered = render_step_message(
            store=store,
            cart=cart,
            lines=channel.lines,
            contact=contact,
            offer=offer,
            link_url=runtime.link_url(token),
            link_token=token,
            language=channel.language,
            copy_line=configured.copy_lines.get(channel.language),
        )
        contents.append(
            {
                "id": message_id,
                "template_name": rendered.template_name,
                "language": rendered.language,
                "components": rendered.components,
                "preview": rendered.preview,
            }
        )
        step_rows.append(
            {
                "id": row["step_id"],
                "status": StepStatus.SENDING,
                "attempted_at": now,
                "offer": offer.model_dump(mode="json") if offer else None,
            }
        )
        in_flight.append(
            InFlight(
                cart.id or 0,
                row["step_id"],
                OutboundMessage(
                    message_id=message_id,
                    store_id=cart.store_id,
                    to_phone_e164=contact.phone_e164,
                    template_name=rendered.template_name,
                    language=rendered.language,
                    components=rendered.components,
                    biz_opaque_callback_data=callback_data(message_id),
                    preview=rendered.preview,
                    sender=channel.sender,
                    send_at=plan.send_at,
                    send_by=plan.send_by,
                ),
                plan.send_due_at,
            )
        )
    update_rows(session, MESSAGE, ["template_name", "language", "components", "preview"], contents)
    update_rows(session, STEP, ["status", "attempted_at", "offer"], step_rows)
    return in_flight
