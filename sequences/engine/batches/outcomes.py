"""A batch's outcomes: "sent" written for the whole batch in one transaction (engine.batches).

Under the same locks as the ledger (contacts by id, carts by id, buckets at commit). Only a
plain "sent" for a step still SENDING whose message Meta has not reported on, on a cart still
abandoned or recovering, is written here; every other outcome is handed back for
sending.finish_send, which knows what each means.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import insert
from sqlmodel import col, select

from channels.transport import OutcomeKind, SendOutcome
from sequences.db import lock_carts_with_contacts, update_rows
from sequences.engine import cart_states, policy, steps, timeline
from sequences.engine.batches.ledger import CART, EVENT, MESSAGE, STEP, InFlight, grouped
from sequences.engine.sending import SENDING_GRACE, Decision
from sequences.experiments import figures as experiment_figures
from sequences.merchant import rollups
from sequences.merchant.store_settings import StoreSettings
from sequences.models import (
    Cart,
    CartStatus,
    Message,
    MessageStatus,
    RecoveryStep,
    StepStatus,
    Store,
)
from sequences.runtime import Runtime


def record_outcomes(
    runtime: Runtime, in_flight: list[InFlight], outcomes: list[SendOutcome]
) -> list[tuple[int, Decision, SendOutcome]]:
    """Write "sent" for the batch; returns the sends the per-cart path must record."""
    per_cart: list[tuple[int, Decision, SendOutcome]] = []
    sent: list[tuple[InFlight, SendOutcome]] = []
    for sending, outcome in zip(in_flight, outcomes, strict=True):
        if outcome.kind == OutcomeKind.SENT:
            sent.append((sending, outcome))
        else:
            per_cart.append(_for_the_cart(sending, outcome))
    if not sent:
        return per_cart
    now = runtime.now()
    with runtime.database.locked_session() as session:
        cart_ids = sorted({sending.cart_id for sending, _ in sent})
        locked = lock_carts_with_contacts(session, cart_ids)
        carts = locked.carts
        cart_steps = grouped(
            session.scalars(select(RecoveryStep).where(col(RecoveryStep.cart_id).in_(cart_ids))),
            lambda step: step.cart_id,
        )
        messages = {
            message.id: message
            for message in session.scalars(
                select(Message).where(col(Message.id).in_([s.outbound.message_id for s, _ in sent]))
            )
        }
        stores = {
            store.id: store
            for store in session.scalars(
                select(Store).where(col(Store.id).in_({c.store_id for c in carts.values()}))
            )
        }
        step_rows, message_rows, cart_rows, events = [], [], [], []
        for sending, outcome in sent:
            cart = carts.get(sending.cart_id)
            message = messages.get(sending.outbound.message_id)
            step = next((s for s in cart_steps.get(sending.cart_id, []) if s.id == sending.step_id), None)
            if (
                cart is None
                or message is None
                or step is None
                or cart.status not in (CartStatus.ABANDONED, CartStatus.RECOVERING)
                or step.status != StepStatus.SENDING
                or message.status != MessageStatus.QUEUED
            ):
                # Meta's webhook or a purchase got there first: the per-cart path knows what stands.
                per_cart.append(_for_the_cart(sending, outcome))
                continue
            step_rows.append({"id": step.id, "status": StepStatus.SENT, "sent_at": now})
            message_before = rollups.counted_values(message)
            message_rows.append(
                {
                    "id": message.id,
                    "status": MessageStatus.SENT,
                    "sent_at": message.sent_at or now,
                    "provider_message_id": outcome.provider_message_id or message.provider_message_id,
                    "error_code": None,
                    "error_detail": None,
                }
            )
            rollups.count_change(
                session,
                Message,
                message_before,
                message_before | {"status": MessageStatus.SENT, "sent_at": message.sent_at or now},
            )
            cart_before = rollups.counted_values(cart)
            cart_after = {"first_message_at": cart.first_message_at or now} | cart_states.recovering_values(
                cart
            )
            rollups.count_change(session, Cart, cart_before, cart_before | cart_after)
            experiment_figures.touch(session, [cart.id])
            settings = runtime.store_settings(stores[cart.store_id])
            cart_rows.append(
                cart_after
                | {
                    "id": cart.id,
                    "next_wake_at": _next_moment(
                        runtime, cart, settings, cart_steps.get(cart.id or 0, []), step, now
                    ),
                }
            )
            events.append(
                timeline.row(cart, "message_sent", now, step=step.step_number, message_id=message.id)
            )
        update_rows(session, STEP, ["status", "sent_at"], step_rows)
        update_rows(
            session,
            MESSAGE,
            ["status", "sent_at", "provider_message_id", "error_code", "error_detail"],
            message_rows,
        )
        update_rows(session, CART, ["first_message_at", "status", "next_wake_at"], cart_rows)
        if events:
            session.execute(insert(EVENT), events)
    return per_cart


def _for_the_cart(sending: InFlight, outcome: SendOutcome) -> tuple[int, Decision, SendOutcome]:
    """A send the per-cart path records (sending.finish_send), as it would have decided it."""
    return sending.cart_id, Decision(step_id=sending.step_id, outbound=sending.outbound), outcome


def _next_moment(
    runtime: Runtime,
    cart: Cart,
    settings: StoreSettings,
    cart_steps: list[RecoveryStep],
    sent: RecoveryStep,
    now: datetime,
) -> datetime:
    """When to look at the cart again after this send: its next step, or the end of its window
    (an earlier moment set meanwhile, say by the shopper coming back, stands)."""
    remaining = [step for step in cart_steps if step.id != sent.id]
    following = steps.next_due(remaining)
    moment = following.due_at if following is not None and following.due_at is not None else None
    if moment is None:
        moment = policy.sequence_window_end(cart.last_activity_at, runtime.time_scale)
    placeholder = sent.attempted_at + SENDING_GRACE if sent.attempted_at is not None else None
    if cart.next_wake_at is not None and cart.next_wake_at != placeholder:
        moment = min(moment, cart.next_wake_at)
    return max(moment, now)
