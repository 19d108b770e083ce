"""The safety net under the database-held schedule (invariant 4), and the periodic chores.

Run once a minute across all workers (app.worker) and by `cartback sweep`: applies
deliveries nobody drained, resolves steps whose sender died mid-send (UNCERTAIN, never
resent; FAILED when Meta has reported the message failed meanwhile) where no cart moment did,
reports how many carts are overdue (the workers are not keeping up when that grows), and runs
the chores (old payloads, opt-out syncs, lapsing tokens, WhatsApp numbers, each store's weekly
reconciliation). Redis holds no
alarm to rebuild: the workers claim due carts from ``Cart.next_wake_at`` (engine.dispatch).
Safe to run at any time, any number of times.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func
from sqlmodel import col, select

from sequences.db import lock_cart_with_contact
from sequences.engine.intake import drain_deliveries
from sequences.engine.scheduling import enqueue_opt_out_syncs
from sequences.engine.sending import SENDING_GRACE, settle_abandoned_send
from sequences.experiments.manage import promote_winners
from sequences.models import Cart, RecoveryStep, StepStatus
from sequences.privacy.erasure import purge_processed_payloads
from sequences.reconciliation import runs as reconciliation_runs
from sequences.runtime import Runtime
from sequences.stores.access import renew_lapsing_tokens
from sequences.stores.sync import forget_lapsed_connections
from sequences.whatsapp.accounts import recheck_numbers

log = logging.getLogger("cartback.sweep")

# Deliveries one sweep applies at most (a worker's drain takes the rest as they come).
DRAIN_LIMIT = 5_000
# A cart this far past its moment means the workers are not keeping up (a healthy backlog
# clears within a second or two).
OVERDUE = timedelta(minutes=1)


@dataclass
class SweepReport:
    deliveries_applied: int = 0
    steps_uncertain: int = 0
    steps_failed: int = 0
    carts_overdue: int = 0
    payloads_purged: int = 0
    opt_out_syncs_queued: int = 0
    tokens_renewed: int = 0
    numbers_checked: int = 0
    winners_promoted: int = 0
    reconciliations_queued: int = 0

    def __str__(self) -> str:
        return (
            f"{self.carts_overdue} carts over a minute overdue, "
            f"{self.deliveries_applied} waiting deliveries applied, {self.steps_uncertain} steps marked uncertain, "
            f"{self.steps_failed} steps failed as Meta reported, "
            f"{self.payloads_purged} old payloads emptied, {self.opt_out_syncs_queued} opt-out syncs queued, "
            f"{self.tokens_renewed} lapsing platform tokens renewed, {self.numbers_checked} WhatsApp numbers checked, "
            f"{self.winners_promoted} experiment winners promoted, "
            f"{self.reconciliations_queued} weekly reconciliations queued"
        )


def run_sweep(runtime: Runtime) -> SweepReport:
    report = SweepReport()
    now = runtime.now()

    # The workers drain deliveries as they arrive; this catches what none did (no worker
    # running, `cartback sweep` from a shell).
    report.deliveries_applied = drain_deliveries(runtime, limit=DRAIN_LIMIT)

    with runtime.database.session() as session:
        stuck = session.exec(
            select(RecoveryStep.id, RecoveryStep.cart_id).where(
                RecoveryStep.status == StepStatus.SENDING,
                col(RecoveryStep.attempted_at) < now - SENDING_GRACE,
            )
        ).all()
    for step_id, cart_id in stuck:
        # Normally the cart's own next moment settles it (sending.settle_abandoned_send); this
        # is for a cart whose moment was lost, e.g. written by an older version.
        with runtime.database.locked_session() as session:
            cart, _contact = lock_cart_with_contact(session, cart_id)
            step = session.get(RecoveryStep, step_id)
            if cart is None or step is None or step.status != StepStatus.SENDING:
                continue
            cart.next_wake_at = now
            if settle_abandoned_send(session, cart, step) == StepStatus.FAILED:
                report.steps_failed += 1
            else:
                report.steps_uncertain += 1

    with runtime.database.session() as session:
        report.carts_overdue = session.exec(
            select(func.count()).select_from(Cart).where(col(Cart.next_wake_at) < now - OVERDUE)
        ).one()
    if report.carts_overdue:
        log.warning(
            "carts overdue: add workers or look for a stalled one", extra={"carts": report.carts_overdue}
        )
    report.payloads_purged = purge_processed_payloads(runtime, now)
    report.opt_out_syncs_queued = enqueue_opt_out_syncs(runtime)
    report.tokens_renewed = renew_lapsing_tokens(runtime)
    forget_lapsed_connections(runtime)
    report.winners_promoted = len(promote_winners(runtime))
    report.reconciliations_queued = reconciliation_runs.queue_due(runtime)
    if runtime.transport.needs_whatsapp_account:
        report.numbers_checked = recheck_numbers(runtime)
    log.info("sweep done", extra={"report": str(report)})
    return report
