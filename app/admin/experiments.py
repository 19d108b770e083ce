"""The Experiments page and API: a store's experiments, live results, plan, start, stop,
promote and CSV.

Every route is scoped to the signed-in store: another store's experiment is a 404, the same
answer as one that does not exist. The writes are in sequences.experiments.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

from flask import Blueprint, Response, jsonify, request
from markupsafe import Markup
from sqlalchemy import func
from sqlmodel import Session, col, select

from app.admin import charts
from app.admin.pages import render_admin
from app.admin.session import MerchantSession, api_view, page_view
from app.admin.settings import json_request_body, rejection
from app.current import get_runtime
from sequences.experiments.calibration import Calibration, Level, calibrate
from sequences.experiments.manage import (
    DEFAULT_HOLDOUT_SHARE,
    ArmSpec,
    ExperimentError,
    ExperimentNotFound,
    promote_arm,
    start_experiment,
    stop_experiment,
    with_holdout,
)
from sequences.experiments.results import (
    CUSTOMER_VALUE,
    NET_REVENUE,
    OPT_OUT_RATE,
    RECOVERY_RATE,
    ArmResult,
    Results,
    experiment_results,
)
from sequences.experiments.stats import plan_rates
from sequences.merchant.settings_changes import SettingsRejected, enqueue_replan
from sequences.merchant.store_settings import Problem
from sequences.models import Cart, CartStatus, Experiment, Store
from sequences.money import format_money

bp = Blueprint("admin_experiments", __name__)

NOT_FOUND = "no such experiment for this shop"


def _money(amount: Decimal) -> str:
    return str(amount.quantize(Decimal("0.01")))


def _interval(results: Results, arm: ArmResult, against: str, metric: str) -> dict[str, Any] | None:
    comparison = results.comparison(arm.arm_id, against, metric)
    if comparison is None:
        return None
    interval = comparison.interval
    if interval is None:
        return {
            "estimate": None,
            "low": None,
            "high": None,
            "reason": "fewer than 100 carts in an arm so far",
        }
    return {
        "estimate": round(interval.estimate, 6),
        "low": round(interval.low, 6),
        "high": round(interval.high, 6),
        "excludes_zero": interval.above_zero or interval.below_zero,
    }


def results_json(results: Results) -> dict[str, Any]:
    experiment = results.experiment
    arms = []
    for arm in results.arms:
        arms.append(
            {
                "id": arm.arm_id,
                "name": arm.name,
                "weight": arm.weight,
                "control": arm.control,
                "holdout": arm.holdout,
                "eligible": arm.eligible,
                "messaged": arm.messaged,
                "read": arm.read,
                "clicked": arm.clicked,
                "recovered": arm.recovered,
                "opted_out": arm.opted_out,
                "recovery_rate": round(arm.recovery_rate, 6),
                "opt_out_rate": round(arm.opt_out_rate, 6),
                "revenue": _money(arm.revenue),
                "discounts": _money(arm.discounts),
                "messaging_cost": _money(arm.messaging_cost),
                "net_revenue": _money(arm.net_revenue),
                "net_revenue_per_cart": _money(arm.net_revenue_per_cart),
                "shoppers": arm.shoppers,
                "customer_value_90d": _money(arm.customer_value),
                "customer_value_per_shopper": _money(arm.customer_value_per_shopper),
                "abandoned_again": arm.abandoned_again,
                "abandon_again_rate": round(arm.abandon_again_rate, 6),
                "better_than_control": arm.arm_id in results.better,
                "lift_vs_control": {
                    "net_revenue_per_cart": _interval(results, arm, "control", NET_REVENUE),
                    "recovery_rate": _interval(results, arm, "control", RECOVERY_RATE),
                    "opt_out_rate": _interval(results, arm, "control", OPT_OUT_RATE),
                    "customer_value_per_shopper": _interval(results, arm, "control", CUSTOMER_VALUE),
                },
                "lift_vs_holdout": {
                    "net_revenue_per_cart": _interval(results, arm, "holdout", NET_REVENUE),
                    "recovery_rate": _interval(results, arm, "holdout", RECOVERY_RATE),
                    "customer_value_per_shopper": _interval(results, arm, "holdout", CUSTOMER_VALUE),
                },
            }
        )
    return {
        "id": experiment.id,
        "name": experiment.name,
        "status": experiment.status,
        "metric": experiment.metric,
        "planned_per_arm": experiment.planned_per_arm,
        "promoted_arm_id": experiment.promoted_arm_id,
        "auto_promote": experiment.auto_promote,
        "started_at": experiment.started_at.isoformat(),
        "stopped_at": experiment.stopped_at.isoformat() if experiment.stopped_at else None,
        "gross_margin_percent": str(results.gross_margin_percent),
        "sample_ratio": {
            "p_value": results.sample_ratio.p_value,
            "mismatch": results.sample_ratio.mismatch,
        },
        "arms": arms,
    }


def _owned(session: Session, merchant: MerchantSession, experiment_id: int) -> Experiment | None:
    return session.exec(
        select(Experiment).where(Experiment.id == experiment_id, Experiment.store_id == merchant.store_id)
    ).first()


def _store_experiments(session: Session, store_id: int) -> list[Experiment]:
    """The store's experiments, newest first."""
    return list(
        session.exec(
            select(Experiment)
            .where(Experiment.store_id == store_id)
            .order_by(col(Experiment.started_at).desc(), col(Experiment.id).desc())
        ).all()
    )


def _results(merchant: MerchantSession, experiment_id: int) -> Results | None:
    runtime = get_runtime()
    with runtime.database.session() as session:
        experiment = _owned(session, merchant, experiment_id)
        store = session.get(Store, merchant.store_id)
        if experiment is None or store is None:
            return None
        return experiment_results(session, experiment, runtime.store_settings(store))


@bp.get("/api/experiments")
@api_view
def experiments_list(merchant: MerchantSession) -> Any:
    with get_runtime().database.session() as session:
        found = _store_experiments(session, merchant.store_id)
        return jsonify(
            experiments=[
                {
                    "id": experiment.id,
                    "name": experiment.name,
                    "status": experiment.status,
                    "metric": experiment.metric,
                    "started_at": experiment.started_at.isoformat(),
                    "stopped_at": experiment.stopped_at.isoformat() if experiment.stopped_at else None,
                }
                for experiment in found
            ]
        )


def _arm_specs(body: Any) -> tuple[str, str, int, list[ArmSpec]]:
    """The request's experiment, read field by field; SettingsRejected names what is wrong."""
    if not isinstance(body, dict):
        raise SettingsRejected([Problem("body", "send a JSON object")])
    problems: list[Problem] = []
    name = body.get("name")
    metric = body.get("metric", NET_REVENUE)
    planned = body.get("planned_per_arm", 5_000)
    if not isinstance(name, str):
        problems.append(Problem("name", "name the experiment"))
    if not isinstance(metric, str):
        problems.append(Problem("metric", f"choose {NET_REVENUE} or {RECOVERY_RATE}"))
    if not isinstance(planned, int) or isinstance(planned, bool):
        problems.append(Problem("planned_per_arm", "a whole number of carts"))
    raw_arms = body.get("arms")
    arms: list[ArmSpec] = []
    if not isinstance(raw_arms, list) or not raw_arms:
        problems.append(Problem("arms", "give the arms as a list"))
        raw_arms = []
    for index, raw in enumerate(raw_arms):
        if not isinstance(raw, dict):
            problems.append(Problem(f"arms.{index}", "each arm is an object"))
            continue
        arm_name, weight = raw.get("name", ""), raw.get("weight", 1)
        overrides, control = raw.get("overrides", {}), raw.get("control", False)
        if not isinstance(arm_name, str):
            problems.append(Problem(f"arms.{index}.name", "name the arm"))
        elif not isinstance(weight, int) or isinstance(weight, bool):
            problems.append(Problem(f"arms.{index}.weight", "a whole number from 1"))
        elif not isinstance(overrides, dict):
            problems.append(Problem(f"arms.{index}.overrides", "the settings this arm changes, as an object"))
        elif not isinstance(control, bool):
            problems.append(Problem(f"arms.{index}.control", "true or false"))
        else:
            arms.append(ArmSpec(arm_name, weight, overrides, control))
    # A holdout when asked for: its share as given, or DEFAULT_HOLDOUT_SHARE.
    holdout = body.get("holdout_share", DEFAULT_HOLDOUT_SHARE if body.get("holdout") is True else None)
    if problems:
        raise SettingsRejected(problems)
    if holdout is not None:
        if not isinstance(holdout, int | float | Decimal) or isinstance(holdout, bool):
            raise SettingsRejected([Problem("holdout_share", "a fraction such as 0.1, or null for none")])
        try:
            arms = with_holdout(arms, float(holdout))
        except ExperimentError as exc:
            raise SettingsRejected(exc.problems) from None
    assert isinstance(name, str) and isinstance(metric, str) and isinstance(planned, int)
    return name, metric, planned, arms


@bp.post("/api/experiments")
@api_view
def experiments_start(merchant: MerchantSession) -> Any:
    try:
        body = json_request_body()
        name, metric, planned, arms = _arm_specs(body)
        auto_promote = body.get("auto_promote", False)
        if not isinstance(auto_promote, bool):
            raise SettingsRejected([Problem("auto_promote", "true or false")])
        experiment = start_experiment(
            get_runtime(),
            merchant.store_id,
            name,
            arms,
            metric=metric,
            planned_per_arm=planned,
            auto_promote=auto_promote,
        )
    except SettingsRejected as rejected:
        status = 400 if rejected.problems and rejected.problems[0].field == "body" else 422
        return rejection(rejected.problems, status)
    except ExperimentError as refused:
        return rejection(refused.problems)
    assert experiment.id is not None
    results = _results(merchant, experiment.id)
    assert results is not None
    return jsonify(results_json(results)), 201


@bp.get("/api/experiments/<int(max=2147483647):experiment_id>")
@api_view
def experiment_detail(merchant: MerchantSession, experiment_id: int) -> Any:
    results = _results(merchant, experiment_id)
    if results is None:
        return jsonify(error=NOT_FOUND), 404
    return jsonify(results_json(results))


@bp.post("/api/experiments/<int(max=2147483647):experiment_id>/stop")
@api_view
def experiment_stop(merchant: MerchantSession, experiment_id: int) -> Any:
    if stop_experiment(get_runtime(), merchant.store_id, experiment_id) is None:
        return jsonify(error=NOT_FOUND), 404
    results = _results(merchant, experiment_id)
    assert results is not None
    return jsonify(results_json(results))


@bp.post("/api/experiments/<int(max=2147483647):experiment_id>/arms/<int(max=2147483647):arm_id>/promote")
@api_view
def experiment_promote(merchant: MerchantSession, experiment_id: int, arm_id: int) -> Any:
    """One click: the store's settings become the arm's (in the settings audit trail), and the
    experiment stops."""
    runtime = get_runtime()
    try:
        saved = promote_arm(runtime, merchant.store_id, experiment_id, arm_id, merchant.actor)
    except ExperimentNotFound:
        return jsonify(error="no such experiment or arm for this shop"), 404
    except ExperimentError as refused:
        return rejection(refused.problems)
    except SettingsRejected as rejected:
        # The store's settings changed since the experiment started, and the arm no longer
        # fits them: nothing was saved.
        return rejection(rejected.problems)
    if saved.replan_needed:
        enqueue_replan(runtime, merchant.store_id)
    results = _results(merchant, experiment_id)
    assert results is not None
    return jsonify(results_json(results) | {"settings_changes": saved.changes})


CSV_COLUMNS = (
    "arm",
    "control",
    "holdout",
    "eligible",
    "messaged",
    "read",
    "clicked",
    "recovered",
    "recovery_rate",
    "opted_out",
    "revenue",
    "discounts",
    "messaging_cost",
    "net_revenue",
    "net_revenue_per_cart",
    "shoppers",
    "customer_value_90d",
    "customer_value_per_shopper",
    "abandoned_again",
)


@bp.get("/api/experiments/<int(max=2147483647):experiment_id>.csv")
@api_view
def experiment_csv(merchant: MerchantSession, experiment_id: int) -> Any:
    results = _results(merchant, experiment_id)
    if results is None:
        return jsonify(error=NOT_FOUND), 404
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for arm in results.arms:
        writer.writerow(
            [
                # A leading =, +, - or @ would make a spreadsheet run the name as a formula.
                ("'" + arm.name) if arm.name[:1] in "=+-@" else arm.name,
                arm.control,
                arm.holdout,
                arm.eligible,
                arm.messaged,
                arm.read,
                arm.clicked,
                arm.recovered,
                f"{arm.recovery_rate:.6f}",
                arm.opted_out,
                _money(arm.revenue),
                _money(arm.discounts),
                _money(arm.messaging_cost),
                _money(arm.net_revenue),
                _money(arm.net_revenue_per_cart),
                arm.shoppers,
                _money(arm.customer_value),
                _money(arm.customer_value_per_shopper),
                arm.abandoned_again,
            ]
        )
    response = Response(out.getvalue(), mimetype="text/csv")
    response.headers["Content-Disposition"] = (
        f'attachment; filename="cartback-experiment-{experiment_id}.csv"'
    )
    response.headers["Cache-Control"] = "no-store"
    return response


def _level_json(level: Level) -> dict[str, Any]:
    interval = level.interval
    return {
        "offer": level.label,
        "source": level.source,
        "carts": level.carts,
        "recovered": level.recovered,
        "net_revenue": _money(level.net_revenue),
        "net_revenue_per_cart": _money(level.net_per_cart),
        "interval": None
        if interval is None
        else {
            "low": round(interval.low, 2),
            "high": round(interval.high, 2),
            "estimate": round(interval.estimate, 2),
        },
    }


def _calibration(merchant: MerchantSession) -> Calibration:
    runtime = get_runtime()
    with runtime.database.session() as session:
        store = session.get(Store, merchant.store_id)
        assert store is not None
        return calibrate(session, store, runtime.store_settings(store), runtime.now())


@bp.get("/api/experiments/calibration")
@api_view
def experiments_calibration(merchant: MerchantSession) -> Any:
    """Net revenue per cart at each offer level: the store's history, and its offer experiments."""
    found = _calibration(merchant)
    return jsonify(
        since=found.since.isoformat(),
        history=[_level_json(level) for level in found.history],
        experiments=[_level_json(level) for level in found.experiments],
        best=None if found.best is None else {"offer": found.best.label, "clearly_best": found.clear},
    )


# The store's volume is read over this many days to turn a plan into days.
VOLUME_DAYS = 28


def eligible_per_day(session: Session, store_id: int, now: Any) -> float:
    """Carts a day that became abandoned and reachable, over the last VOLUME_DAYS days."""
    count = session.exec(
        select(func.count())
        .select_from(Cart)
        .where(
            Cart.store_id == store_id,
            col(Cart.abandoned_at) >= now - timedelta(days=VOLUME_DAYS),
            col(Cart.status) != CartStatus.UNREACHABLE,
        )
    ).one()
    return int(count) / VOLUME_DAYS


def _number(name: str, default: float | None = None) -> float:
    raw = request.args.get(name)
    if raw is None or raw == "":
        if default is None:
            raise SettingsRejected([Problem(name, "required")])
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsRejected([Problem(name, "a number, as a fraction (0.08 for 8 %)")]) from None
    if value != value or value in (float("inf"), float("-inf")):
        raise SettingsRejected([Problem(name, "a finite number")])
    return value


@bp.get("/api/experiments/plan")
@api_view
def experiments_plan(merchant: MerchantSession) -> Any:
    """The carts each arm needs, and the days that takes at the store's own volume."""
    try:
        baseline, mde = _number("baseline_rate"), _number("mde")
        power, arms = _number("power", 0.8), _number("arms", 2)
        if arms != int(arms) or not 2 <= arms <= 6:
            raise SettingsRejected([Problem("arms", "2 to 6 arms, the control included")])
        try:
            planned = plan_rates(baseline, mde, power=power, arms=int(arms))
        except ValueError as exc:
            field = "mde" if "effect" in str(exc) else "power" if "power" in str(exc) else "baseline_rate"
            raise SettingsRejected([Problem(field, str(exc))]) from None
    except SettingsRejected as rejected:
        return rejection(rejected.problems)
    runtime = get_runtime()
    with runtime.database.session() as session:
        per_day = eligible_per_day(session, merchant.store_id, runtime.now())
    total = planned.carts_per_arm * int(arms)
    return jsonify(
        carts_per_arm=planned.carts_per_arm,
        carts_in_all=total,
        eligible_per_day=round(per_day, 1),
        days=None if per_day <= 0 else int(-(-total // per_day)),
    )


def _percent(value: float) -> str:
    return f"{value * 100:.1f}%"


def _page_charts(results: Results, money: Callable[[Decimal], str]) -> dict[str, Markup]:
    """The lifts against the control and against the holdout, as interval charts."""

    def lifts(against: str, metric: str) -> list[charts.Lift]:
        found = []
        for arm in results.arms:
            comparison = results.comparison(arm.arm_id, against, metric)
            if comparison is None:
                continue
            interval = comparison.interval
            found.append(
                charts.Lift(
                    arm.name,
                    interval.estimate if interval else None,
                    interval.low if interval else None,
                    interval.high if interval else None,
                )
            )
        return found

    def signed_money(value: float) -> str:
        return ("+" if value >= 0 else "-") + money(Decimal(str(round(abs(value), 2))))

    def points(value: float) -> str:
        return f"{value * 100:+.1f} pts"

    drawn: dict[str, Markup] = {}
    for key, against, metric, fmt, title in (
        ("net-control", "control", NET_REVENUE, signed_money, "Net revenue per cart, against the control"),
        ("rate-control", "control", RECOVERY_RATE, points, "Recovery rate, against the control"),
        ("net-holdout", "holdout", NET_REVENUE, signed_money, "Net revenue per cart, against the holdout"),
        ("rate-holdout", "holdout", RECOVERY_RATE, points, "Recovery rate, against the holdout (true lift)"),
        (
            "value-control",
            "control",
            CUSTOMER_VALUE,
            signed_money,
            "90-day value per shopper, against the control",
        ),
        (
            "value-holdout",
            "holdout",
            CUSTOMER_VALUE,
            signed_money,
            "90-day value per shopper, against the holdout",
        ),
    ):
        rows = lifts(against, metric)
        if rows:
            drawn[key] = charts.interval_chart(
                f"lift-{key}",
                rows,
                title=title,
                description=(
                    "Each arm's difference, with the range it lies in at 95 % confidence at every look. "
                    "Green: better, red: worse, grey: not told apart yet."
                ),
                value_format=fmt,
            )
    return drawn


@bp.get("/admin/experiments")
@page_view
def experiments_page(merchant: MerchantSession) -> Any:
    runtime = get_runtime()
    chosen = request.args.get("id", "")
    with runtime.database.session() as session:
        store = session.get(Store, merchant.store_id)
        assert store is not None
        found = _store_experiments(session, merchant.store_id)
        shown = next((e for e in found if str(e.id) == chosen), found[0] if found else None)
        results = experiment_results(session, shown, runtime.store_settings(store)) if shown else None
        per_day = eligible_per_day(session, merchant.store_id, runtime.now())
        currency, locale = store.currency, store.locale
        experiments = [(e.id, e.name, e.status) for e in found]
        calibration = calibrate(session, store, runtime.store_settings(store), runtime.now())

    def money(amount: Decimal) -> str:
        return str(format_money(amount, currency, locale))

    return render_admin(
        "admin/experiments.html",
        merchant,
        "experiments",
        experiments=experiments,
        results=results,
        drawn=_page_charts(results, money) if results else {},
        percent=_percent,
        eligible_per_day=per_day,
        calibration=calibration,
    )
