"""RQ entry points. Each receives ids only, loads fresh state and calls a plain function."""

from __future__ import annotations

from sequences import runtime as runtime_module
from sequences.opt_out_sync import sync_opt_out
from sequences.platform_sync import set_up_store, sync_platform
from sequences.reconcile import reconcile_orders
from sequences.sending import advance_cart
from sequences.settings_update import replan_store
from sequences.sweep import run_sweep
from sequences.tracking import process_delivery
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


def sync_platform_job(platform: str) -> str:
    runtime = runtime_module.current()
    report = sync_platform(runtime, platform)
    # Recovered revenue checked against refunds and cancellations on the same round.
    return f"{report}; {reconcile_orders(runtime, platform)}"


def replan_store_job(store_id: int) -> int:
    return replan_store(runtime_module.current(), store_id)
