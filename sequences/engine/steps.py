"""Planning, re-timing and cancelling a cart's recovery steps (the ledger rows)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import update
from sqlmodel import Session, col, select

from sequences.engine import policy
from sequences.experiments.assignment import HOLDOUT_REASON
from sequences.merchant.store_settings import Offer, StoreSettings
from sequences.models import Cart, RecoveryStep, StepStatus, Store

QUIET_HOURS_REASON_PREFIX = "quiet hours"


def steps_of(session: Session, cart_id: int) -> list[RecoveryStep]:
    return list(
        session.exec(
            select(RecoveryStep)
            .where(RecoveryStep.cart_id == cart_id)
            .order_by(col(RecoveryStep.step_number))
        ).all()
    )


def _replannable(step: RecoveryStep) -> bool:
    return step.status == StepStatus.SCHEDULED or (
        step.status == StepStatus.SKIPPED and (step.reason or "").startswith(QUIET_HOURS_REASON_PREFIX)
    )


def step_offer(step: RecoveryStep, cart: Cart, store: Store) -> Offer | None:
    """The step's offer, if it still applies: offers are set in the store's currency and
    platforms apply fixed codes in it, so a cart now in another currency (Shopify's
    presentment currency can change mid-checkout) gets no offer rather than a wrong one."""
    if not step.offer or cart.currency != store.currency:
        return None
    return Offer.model_validate(step.offer)


def plan(
    session: Session,
    cart: Cart,
    store: Store,
    settings: StoreSettings,
    time_scale: float,
    *,
    holdout: bool = False,
) -> list[RecoveryStep]:
    """Create missing step rows and (re)time the ones not yet attempted from last activity;
    a holdout cart's steps are all skipped (tracked, never messaged)."""
    assert cart.id is not None
    existing = {step.step_number: step for step in steps_of(session, cart.id)}
    # Offers are set in the store's currency and platforms apply fixed codes in it; a cart in
    # another currency (Shopify's presentment currency) gets its messages without an offer
    # rather than one whose amount and threshold mean something else.
    offers_apply = cart.currency == store.currency
    for planned in policy.plan_steps(cart.last_activity_at, settings, store.timezone, time_scale):
        offer = planned.offer.model_dump(mode="json") if planned.offer and offers_apply else None
        step = existing.get(planned.step_number)
        if step is None:
            step = RecoveryStep(store_id=cart.store_id, cart_id=cart.id, step_number=planned.step_number)
            session.add(step)
            existing[planned.step_number] = step
        elif not _replannable(step):
            continue
        step.offer = offer
        if holdout:
            step.status, step.due_at, step.reason = StepStatus.SKIPPED, None, HOLDOUT_REASON
        elif planned.due_at is not None:
            step.status, step.due_at, step.reason = StepStatus.SCHEDULED, planned.due_at, None
        else:
            step.status, step.due_at, step.reason = StepStatus.SKIPPED, None, planned.skip_reason
    configured = len(settings.steps)
    for number, step in existing.items():
        if number > configured and step.status == StepStatus.SCHEDULED:
            step.status, step.reason = StepStatus.CANCELLED, "step no longer configured"
    session.flush()
    return sorted(existing.values(), key=lambda step: step.step_number)


def cancel_open(session: Session, cart_id: int, reason: str) -> int:
    """Cancel every step not yet attempted; a conditional UPDATE, safe against a racing sender."""
    result = session.exec(
        update(RecoveryStep)
        .where(col(RecoveryStep.cart_id) == cart_id, col(RecoveryStep.status) == StepStatus.SCHEDULED)
        .values(status=StepStatus.CANCELLED, reason=reason)
    )
    return int(result.rowcount or 0)


def next_due(steps: list[RecoveryStep]) -> RecoveryStep | None:
    open_steps = [s for s in steps if s.status == StepStatus.SCHEDULED and s.due_at is not None]
    return min(open_steps, key=lambda s: (s.due_at, s.step_number)) if open_steps else None


def any_attempted(steps: list[RecoveryStep]) -> bool:
    return any(s.status in (StepStatus.SENDING, StepStatus.SENT, StepStatus.UNCERTAIN) for s in steps)


def earliest(*moments: datetime | None) -> datetime | None:
    present = [m for m in moments if m is not None]
    return min(present) if present else None
