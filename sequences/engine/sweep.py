"""Rebuild everything Redis should hold from the database (invariant 4).

Run every minute by the worker (and by `cartback sweep`): re-enqueues deliveries nobody
processed, resolves steps whose sender died mid-send (UNCERTAIN, never resent; FAILED when Meta
has reported the message failed meanwhile), and re-sets every cart alarm that is missing from
Redis. Safe to run at any time, any number of times.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import and_
from sqlmodel import col, select

from sequences.db import lock_cart
from sequences.engine import timeline
from sequences.engine.scheduling import (
    enqueue_delivery,
    enqueue_opt_out_syncs,
    existing_job_ids,
    schedule_wake,
    wake_job_id,
)
from sequences.engine.sending import SENDING_GRACE
from sequences.models import (
    TERMINAL_CART_STATUSES,
    Cart,
    DeliveryStatus,
    Message,
    MessageStatus,
    RecoveryStep,
    StepStatus,
    WebhookDelivery,
)
from sequences.privacy.erasure import purge_processed_payloads
from sequences.runtime import Runtime
from sequences.stores.access import renew_lapsing_tokens
from sequences.stores.sync import forget_lapsed_connections
from sequences.whatsapp.accounts import recheck_numbers

log = logging.getLogger("cartback.sweep")

# A delivery younger than this is probably still on its way through the queue.
DELIVERY_GRACE = timedelta(seconds=30)
# Rows handled per round trip.
BATCH = 500


@dataclass
class SweepReport:
    deliveries_requeued: int = 0
    steps_uncertain: int = 0
    steps_failed: int = 0
    alarms_restored: int = 0
    carts_checked: int = 0
    payloads_purged: int = 0
    opt_out_syncs_queued: int = 0
    tokens_renewed: int = 0
    numbers_checked: int = 0

    def __str__(self) -> str:
        return (
            f"{self.carts_checked} open carts checked, {self.alarms_restored} alarms restored, "
            f"{self.deliveries_requeued} deliveries re-queued, {self.steps_uncertain} steps marked uncertain, "
            f"{self.steps_failed} steps failed as Meta reported, "
            f"{self.payloads_purged} old payloads emptied, {self.opt_out_syncs_queued} opt-out syncs queued, "
            f"{self.tokens_renewed} lapsing platform tokens renewed, {self.numbers_checked} WhatsApp numbers checked"
        )


def run_sweep(runtime: Runtime) -> SweepReport:
    report = SweepReport()
    now = runtime.now()

    with runtime.database.session() as session:
        pending = session.exec(
            select(WebhookDelivery.id).where(
                WebhookDelivery.status == DeliveryStatus.PENDING,
                col(WebhookDelivery.received_at) < now - DELIVERY_GRACE,
            )
        ).all()
    for delivery_id in pending:
        if delivery_id is not None and enqueue_delivery(runtime, delivery_id):
            report.deliveries_requeued += 1

    with runtime.database.session() as session:
        stuck = session.exec(
            select(RecoveryStep.id, RecoveryStep.cart_id).where(
                RecoveryStep.status == StepStatus.SENDING,
                col(RecoveryStep.attempted_at) < now - SENDING_GRACE,
            )
        ).all()
    for step_id, cart_id in stuck:
        with runtime.database.locked_session() as session:
            cart = lock_cart(session, cart_id)
            step = session.get(RecoveryStep, step_id)
            if cart is None or step is None or step.status != StepStatus.SENDING:
                continue
            message = session.exec(select(Message).where(Message.step_id == step.id)).first()
            cart.next_wake_at = now
            if message is not None and message.status == MessageStatus.FAILED:
                # Meta's failed status came while the sender was gone (the webhook applied what
                # it means, and put it on the timeline): the step failed, as the sender would
                # have recorded. Not uncertain: no message reached the shopper.
                step.status, step.reason = (
                    StepStatus.FAILED,
                    message.error_detail or "Meta reported it failed",
                )
                report.steps_failed += 1
                continue
            # The worker died between the ledger and the outcome: maybe sent. Never resend.
            step.status, step.reason = StepStatus.UNCERTAIN, "sender stopped before recording the outcome"
            if message is not None and message.status == MessageStatus.QUEUED:
                message.status = MessageStatus.UNCERTAIN
            cart.first_message_at = cart.first_message_at or step.attempted_at
            timeline.record(session, cart, "message_uncertain", step=step.step_number)
            report.steps_uncertain += 1

    last_id = 0
    while True:
        with runtime.database.session() as session:
            rows = session.exec(
                select(Cart.id, Cart.next_wake_at)
                .where(
                    col(Cart.id) > last_id,
                    col(Cart.status).not_in(list(TERMINAL_CART_STATUSES)),
                    and_(col(Cart.next_wake_at).is_not(None)),
                )
                .order_by(col(Cart.id))
                .limit(BATCH)
            ).all()
        if not rows:
            break
        last_id = rows[-1][0] or last_id
        report.carts_checked += len(rows)
        wanted = {wake_job_id(cart_id, at): (cart_id, at) for cart_id, at in rows if cart_id and at}
        present = existing_job_ids(runtime, list(wanted))
        for job_id, (cart_id, at) in wanted.items():
            if job_id not in present:
                schedule_wake(runtime, cart_id, at)
                report.alarms_restored += 1
    report.payloads_purged = purge_processed_payloads(runtime, now)
    report.opt_out_syncs_queued = enqueue_opt_out_syncs(runtime)
    report.tokens_renewed = renew_lapsing_tokens(runtime)
    forget_lapsed_connections(runtime)
    if runtime.transport.needs_whatsapp_account:
        report.numbers_checked = recheck_numbers(runtime)
    log.info("sweep done", extra={"report": str(report)})
    return report
