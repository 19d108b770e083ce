"""A reconciliation run's report in words (the command, the admin page, the notification) and
as the API's JSON. The figures are the run's own (``runs.execute``); nothing is recounted here."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sequences.models import ReconciliationRun, RunStatus
from sequences.money import format_money


def _money(value: str | None, currency: str) -> str:
    return format_money(Decimal(value), currency) if value is not None else "—"


def summary_lines(run: ReconciliationRun) -> list[str]:
    """What the run found, a line per finding, each difference with its explanation."""
    if run.status in (RunStatus.QUEUED, RunStatus.RUNNING):
        return [f"{run.status}: {run.orders_done} of {run.orders_total} recovered orders read again"]
    report = run.report or {}
    currency = str(report.get("currency") or "INR")
    lines: list[str] = []
    orders = report.get("orders")
    if orders:
        lines.append(
            f"{orders['checked']} recovered orders re-read: {orders['confirmed']} confirmed for "
            f"{_money(orders['confirmed_amount'], currency)}, {orders['pending']} pending "
            f"({_money(orders['pending_amount'], currency)}); placed for {_money(orders['placed_amount'], currency)}"
        )
    for difference in report.get("differences") or []:
        change = f" ({_money(difference['amount'], currency)})" if difference.get("amount") else ""
        lines.append(f"order {difference['order_id']}{change}: {difference['explanation']}")
    discounts = report.get("discounts")
    if discounts:
        lines.append(
            f"discount codes: {discounts['created']} created, {discounts['redeemed']} redeemed, "
            f"{discounts['expired_unused']} expired unused ({discounts['deleted_now']} deleted now, "
            f"{discounts['still_on_platform']} still on the platform)"
        )
    messaging = report.get("messaging")
    if messaging and messaging.get("available"):
        money = str(messaging.get("currency") or currency)
        gst = (
            f" + GST {messaging['gst_percent']} % {_money(messaging['gst'], money)} = "
            f"{_money(messaging['meta_cost_with_gst'], money)}"
            if messaging.get("gst_percent")
            else ""
        )
        lines.append(
            f"messaging: Meta billed {messaging['meta_messages']} messages for {_money(messaging['meta_cost'], money)}"
            f"{gst}; cartback recorded {messaging['recorded_messages']} for {_money(messaging['recorded_cost'], money)}"
        )
        for day in messaging.get("days") or []:
            if day.get("explanation"):
                lines.append(f"{day['day']}: {day['explanation']}")
    elif messaging:
        lines.append(f"messaging cost not compared: {messaging.get('note')}")
    if run.problem:
        lines.append(f"problem: {run.problem}")
    return lines


def as_json(run: ReconciliationRun) -> dict[str, Any]:
    return {
        "id": run.id,
        "status": run.status,
        "trigger": run.trigger,
        "created_at": run.created_at.isoformat(),
        "started_at": run.started_at.isoformat() if run.started_at else None,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "period": {"from": run.period_start.isoformat(), "to": run.period_end.isoformat()},
        "progress": {"orders_done": run.orders_done, "orders_total": run.orders_total},
        "report": run.report or None,
        "problem": run.problem,
        "summary": summary_lines(run),
    }
