"""Operator endpoints: liveness, readiness, Prometheus metrics."""

from __future__ import annotations

import hmac
from typing import Any

from flask import Blueprint, Response, jsonify, request
from redis.exceptions import RedisError
from rq.registry import ScheduledJobRegistry
from sqlalchemy import func, text
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import col, select

from app.current import get_runtime
from sequences.models import Cart, DeliveryStatus, Message, WebhookDelivery
from sequences.stores.spool import pending_count

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz() -> Any:
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> Any:
    runtime = get_runtime()
    checks: dict[str, str] = {}
    try:
        with runtime.database.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        checks["database"] = runtime.database.schema_problem() or "ok"
    except SQLAlchemyError as exc:
        checks["database"] = f"unreachable: {type(exc).__name__}"
    try:
        runtime.redis.ping()
        checks["redis"] = "ok"
    except RedisError as exc:
        checks["redis"] = f"unreachable: {type(exc).__name__}"
    ready = all(value == "ok" for value in checks.values())
    return jsonify(status="ready" if ready else "not ready", checks=checks), 200 if ready else 503


def _metric(lines: list[str], name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
    lines.append(f"# HELP {name} {help_text}")
    lines.append(f"# TYPE {name} {kind}")
    for labels, value in samples:
        lines.append(f"{name}{labels} {value}")


def _metrics_refusal(expected: str) -> Response | None:
    """None when the request carries the metrics bearer token; else the answer that says how."""
    if not expected:
        return Response(
            "metrics are off: set METRICS_TOKEN and scrape with 'Authorization: Bearer <token>'\n",
            status=403,
            mimetype="text/plain",
        )
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected.encode()):
        return Response(
            "send the metrics token as 'Authorization: Bearer <METRICS_TOKEN>'\n",
            status=401,
            mimetype="text/plain",
            headers={"WWW-Authenticate": 'Bearer realm="cartback metrics"'},
        )
    return None


@bp.get("/metrics")
def metrics() -> Response:
    """Counts from the database (the source of truth), so every web process agrees.

    They name stores and their recovered revenue: only a scraper holding METRICS_TOKEN sees them.
    """
    runtime = get_runtime()
    refusal = _metrics_refusal(runtime.settings.metrics_token)
    if refusal is not None:
        return refusal
    lines: list[str] = []
    with runtime.database.session() as session:
        carts = session.exec(
            select(Cart.store_id, Cart.status, func.count()).group_by(col(Cart.store_id), col(Cart.status))
        ).all()
        messages = session.exec(
            select(Message.store_id, Message.status, func.count()).group_by(
                col(Message.store_id), col(Message.status)
            )
        ).all()
        revenue = session.exec(
            select(Cart.store_id, Cart.order_currency, func.count(), func.sum(Cart.order_total))
            .where(Cart.status == "recovered")
            .group_by(col(Cart.store_id), col(Cart.order_currency))
        ).all()
        pending = session.exec(
            select(func.count())
            .select_from(WebhookDelivery)
            .where(col(WebhookDelivery.status) == DeliveryStatus.PENDING)
        ).one()
    _metric(
        lines,
        "cartback_carts",
        "gauge",
        "Carts by store and state.",
        [(f'{{store="{s}",status="{st}"}}', n) for s, st, n in carts],
    )
    _metric(
        lines,
        "cartback_messages",
        "gauge",
        "Recovery messages by store and delivery status.",
        [(f'{{store="{s}",status="{st}"}}', n) for s, st, n in messages],
    )
    _metric(
        lines,
        "cartback_recovered_revenue",
        "gauge",
        "Revenue of recovered carts, in the order currency.",
        [(f'{{store="{s}",currency="{c}"}}', float(total or 0)) for s, c, _n, total in revenue],
    )
    _metric(
        lines,
        "cartback_webhook_deliveries_pending",
        "gauge",
        "Deliveries not yet processed: stored, or waiting in a web process's spool (SQLite).",
        [("", pending + pending_count(runtime.database))],
    )
    try:
        queued = runtime.queue.count
        scheduled = ScheduledJobRegistry(queue=runtime.queue).count  # type: ignore[no-untyped-call]
        _metric(
            lines,
            "cartback_queue_jobs",
            "gauge",
            "Jobs waiting in Redis.",
            [('{state="queued"}', queued), ('{state="scheduled"}', scheduled)],
        )
    except RedisError:
        _metric(lines, "cartback_redis_up", "gauge", "Whether Redis answered.", [("", 0)])
    return Response("\n".join(lines) + "\n", mimetype="text/plain; version=0.0.4")
