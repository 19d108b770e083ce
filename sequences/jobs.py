"""RQ entry points. Each receives ids only, loads fresh state and calls a plain function."""

from __future__ import annotations

from contextlib import suppress

from rq.exceptions import DuplicateJobError

from sequences import queue
from sequences import runtime as runtime_module
from sequences.alerts.incidents import evaluate_alerts
from sequences.alerts.notify import notify
from sequences.engine.sending import advance_cart
from sequences.engine.sweep import run_sweep
from sequences.engine.tracking import process_delivery
from sequences.merchant.settings_changes import replan_store
from sequences.models import Store
from sequences.reconciliation import orders as reconciled_orders
from sequences.reconciliation import runs as reconciliation_runs
from sequences.stores.connections import complete_connection
from sequences.stores.discount_cleanup import delete_expired_discounts
from sequences.stores.opt_out_sync import sync_opt_out
from sequences.stores.sync import SYNC_LOCK_SECONDS, active_store_ids, set_up_store, sync_store
from sequences.whatsapp.confirmations import send_confirmation


def process_delivery_job(delivery_id: int) -> str:
    return process_delivery(runtime_module.current(), delivery_id)


def advance_cart_job(cart_id: int) -> list[str]:
    return advance_cart(runtime_module.current(), cart_id)


def sweep_job() -> str:
    return str(run_sweep(runtime_module.current()))


def sync_opt_out_job(consent_event_id: int) -> str:
    return sync_opt_out(runtime_module.current(), consent_event_id)


def send_confirmation_job(inbound_id: int) -> str:
    return send_confirmation(runtime_module.current(), inbound_id)


def set_up_store_job(store_id: int, platform: str) -> str:
    webhooks, problem = set_up_store(runtime_module.current(), store_id, platform)
    return problem or str(webhooks)


def complete_connection_job(connection_pk: int) -> str:
    """A connection whose keys arrived (WooCommerce's): prove them, then register the webhooks."""
    runtime = runtime_module.current()
    completion = complete_connection(runtime, connection_pk)
    if completion.store_id is None:
        return f"not connected: {completion.problem}"
    webhooks, problem = set_up_store(runtime, completion.store_id, completion.platform)
    return problem or str(webhooks)


def sync_platform_job(platform: str) -> str:
    """One job per store, so a slow store delays nobody else's sync."""
    runtime = runtime_module.current()
    store_ids = active_store_ids(runtime, platform)
    for store_id in store_ids:
        # Still queued or running from the last round: not twice.
        with suppress(DuplicateJobError):
            queue.enqueue(
                runtime.queue,
                queue.SYNC_STORE,
                store_id,
                options=queue.JobOptions(
                    f"sync-store-{store_id}",
                    None,
                    failure_ttl=None,
                    job_timeout=SYNC_LOCK_SECONDS,
                    retry_intervals=(),
                ),
            )
    return f"{len(store_ids)} {platform} store syncs queued"


def sync_store_job(store_id: int) -> str:
    runtime = runtime_module.current()
    report = sync_store(runtime, store_id)
    with runtime.database.session() as session:
        if session.get(Store, store_id) is None:
            return "store gone"
    # Recovered revenue checked against refunds and cancellations on the same round: WooCommerce
    # sends no refund webhook of its own.
    return f"{report}; {reconciled_orders.recheck_store(runtime, store_id)}"


def replan_store_job(store_id: int) -> int:
    return replan_store(runtime_module.current(), store_id)


def reconcile_store_job(run_id: int) -> str:
    run = reconciliation_runs.execute(runtime_module.current(), run_id)
    return "already run" if run is None else f"{run.status}: {run.problem or 'done'}"


def recheck_order_job(store_id: int, order_id: str) -> str:
    return reconciled_orders.recheck_order(runtime_module.current(), store_id, order_id)


def delete_expired_discounts_job() -> str:
    report = delete_expired_discounts(runtime_module.current())
    return f"{report.deleted} expired codes deleted, {report.failed} not"


def evaluate_alerts_job() -> str:
    return str(evaluate_alerts(runtime_module.current()))


def notify_incident_job(incident_id: int, event: str, channel: str) -> str:
    return notify(runtime_module.current(), incident_id, event, channel)
