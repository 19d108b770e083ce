"""The Reconciliation page and API: the store's runs, their reports, and "Reconcile now" with
its progress. Every route is scoped to the signed-in store; the work is in
sequences.reconciliation (the same runs the weekly schedule and `cartback reconcile` make)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify

from app.admin.pages import render_admin
from app.admin.session import MerchantSession, api_view, page_view
from app.current import get_runtime
from sequences.models import ReconciliationRun, RunTrigger
from sequences.reconciliation import report, runs

bp = Blueprint("admin_reconciliation", __name__)


@bp.get("/api/reconciliation")
@api_view
def reconciliation_list(merchant: MerchantSession) -> Any:
    return jsonify(runs=[report.as_json(run) for run in runs.latest_runs(get_runtime(), merchant.store_id)])


@bp.post("/api/reconciliation/runs")
@api_view
def reconciliation_start(merchant: MerchantSession) -> Any:
    """Queue a run now; a run already under way is the answer (202 either way)."""
    run = runs.open_run(get_runtime(), merchant.store_id, RunTrigger.MERCHANT)
    return jsonify(report.as_json(run)), 202


@bp.get("/api/reconciliation/runs/<int(max=2147483647):run_id>")
@api_view
def reconciliation_run(merchant: MerchantSession, run_id: int) -> Any:
    with get_runtime().database.session() as session:
        run = session.get(ReconciliationRun, run_id)
    if run is None or run.store_id != merchant.store_id:
        return jsonify(error="no such reconciliation run for this shop"), 404
    return jsonify(report.as_json(run))


@bp.get("/admin/reconciliation")
@page_view
def reconciliation_page(merchant: MerchantSession) -> Any:
    found = runs.latest_runs(get_runtime(), merchant.store_id)
    return render_admin(
        "admin/reconciliation.html",
        merchant,
        "reconciliation",
        runs=found,
        latest=next((run for run in found if run.report), None),
        summary=report.summary_lines,
        every_days=runs.RUN_EVERY.days,
    )
