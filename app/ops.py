"""Operator endpoints: liveness, readiness, Prometheus metrics."""

from __future__ import annotations

import hmac
from datetime import datetime, timedelta
from typing import Any

from flask import Blueprint, Response, jsonify, request
from redis.exceptions import RedisError
from rq import Worker
from rq.registry import ScheduledJobRegistry
from sqlalchemy import func, text
from sqlalchemy import select as sql_select
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import col, select

from app.current import get_runtime
from sequences.models import (
    Cart,
    DashboardCartBucket,
    DashboardMessageBucket,
    DeliveryStatus,
    Store,
    StoreStatus,
    WebhookDelivery,
)
from sequences.runtime import Runtime
from sequences.stores.spool import pending_count

bp = Blueprint("ops", __name__)

# The business gauges cover the carts abandoned in this window (the dashboard's buckets).
BUSINESS_WINDOW = timedelta(hours=24)


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
    """The processes' histograms and counters (``sequences.telemetry``), then gauges read at the
    scrape: the intake's backlog, the oldest due step, the queue, and per store the last 24
    hours' business figures from the dashboard's kept buckets (never a scan of carts or
    messages: bench (g) times it at 1,000,000 carts).

    They name stores and their revenue: only a scraper holding METRICS_TOKEN sees them.
    """
    runtime = get_runtime()
    refusal = _metrics_refusal(runtime.settings.metrics_token)
    if refusal is not None:
        return refusal
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    body = b"".join(generate_latest(collector) for collector in runtime.telemetry.collectors())
    lines = database_gauges(runtime, runtime.now())
    return Response(
        body + ("\n".join(lines) + "\n").encode(),
        mimetype=CONTENT_TYPE_LATEST.split(";")[0],
        headers={"Content-Type": CONTENT_TYPE_LATEST},
    )


def _gauge(lines: list[str], name: str, help_text: str, samples: list[tuple[str, float]]) -> None:
    lines.append(f"# HELP {name} {help_text}")
    lines.append(f"# TYPE {name} gauge")
    lines.extend(f"{name}{labels} {value}" for labels, value in samples)


def database_gauges(runtime: Runtime, now: datetime) -> list[str]:
    lines: list[str] = []
    since = now - BUSINESS_WINDOW
    with runtime.database.session() as session:
        pending = session.exec(
            select(func.count())
            .select_from(WebhookDelivery)
            .where(col(WebhookDelivery.status) == DeliveryStatus.PENDING)
        ).one()
        oldest_due = session.exec(
            select(func.min(Cart.next_wake_at)).where(col(Cart.next_wake_at) <= now)
        ).one()
        # Store first, then its buckets by primary key: an index range per store, however many
        # stores and however long their history.
        carts = session.execute(
            sql_select(
                col(DashboardCartBucket.store_id),
                col(Store.currency),
                func.sum(col(DashboardCartBucket.abandoned)),
                func.sum(col(DashboardCartBucket.recovered)),
                func.sum(col(DashboardCartBucket.revenue)),
                func.sum(col(DashboardCartBucket.revenue_verified)),
            )
            .join(DashboardCartBucket, col(DashboardCartBucket.store_id) == col(Store.id))
            .where(col(Store.status) == StoreStatus.ACTIVE, col(DashboardCartBucket.bucket_start) >= since)
            .group_by(col(DashboardCartBucket.store_id), col(Store.currency))
        ).all()
        messages = session.execute(
            sql_select(
                col(DashboardMessageBucket.store_id),
                func.sum(col(DashboardMessageBucket.sent)),
                func.sum(col(DashboardMessageBucket.delivered)),
                func.sum(col(DashboardMessageBucket.read)),
                func.sum(col(DashboardMessageBucket.clicked)),
                func.sum(col(DashboardMessageBucket.failed)),
            )
            .join(Store, col(DashboardMessageBucket.store_id) == col(Store.id))
            .where(col(Store.status) == StoreStatus.ACTIVE, col(DashboardMessageBucket.bucket_start) >= since)
            .group_by(col(DashboardMessageBucket.store_id))
        ).all()
    _gauge(
        lines,
        "cartback_webhook_deliveries_pending",
        "Deliveries not yet processed: stored, or waiting in a web process's spool (SQLite).",
        [("", pending + pending_count(runtime.database))],
    )
    _gauge(
        lines,
        "cartback_oldest_due_step_age_seconds",
        "How long the oldest cart due now has waited for a worker (0 when none is due).",
        [("", max((now - oldest_due).total_seconds(), 0.0) if oldest_due else 0.0)],
    )
    _gauge(
        lines,
        "cartback_store_carts_24h",
        "Carts abandoned in the last 24 hours, and those of them recovered, per store.",
        [(f'{{store="{s}",state="abandoned"}}', a) for s, _c, a, _r, _v, _w in carts]
        + [(f'{{store="{s}",state="recovered"}}', r) for s, _c, _a, r, _v, _w in carts],
    )
    _gauge(
        lines,
        "cartback_store_recovered_revenue_24h",
        "Recovered revenue of the last 24 hours' carts, in the store's currency: reconciled or pending.",
        [
            (f'{{store="{s}",currency="{c}",state="reconciled"}}', float(w or 0))
            for s, c, _a, _r, _v, w in carts
        ]
        + [
            (f'{{store="{s}",currency="{c}",state="pending"}}', float((v or 0) - (w or 0)))
            for s, c, _a, _r, v, w in carts
        ],
    )
    _gauge(
        lines,
        "cartback_store_messages_24h",
        "Reminders for the last 24 hours' carts, per store and what became of them.",
        [
            (f'{{store="{s}",status="{name}"}}', value)
            for s, *counts in messages
            for name, value in zip(("sent", "delivered", "read", "clicked", "failed"), counts, strict=True)
        ],
    )
    try:
        queued = runtime.queue.count
        scheduled = ScheduledJobRegistry(queue=runtime.queue).count  # type: ignore[no-untyped-call]
        _gauge(
            lines,
            "cartback_queue_jobs",
            "Jobs waiting in Redis.",
            [('{state="queued"}', queued), ('{state="scheduled"}', scheduled)],
        )
        _gauge(
            lines,
            "cartback_workers",
            "Workers registered in Redis (cartback worker processes).",
            [("", Worker.count(connection=runtime.redis))],
        )
        _gauge(lines, "cartback_redis_up", "Whether Redis answered.", [("", 1)])
    except RedisError:
        _gauge(lines, "cartback_redis_up", "Whether Redis answered.", [("", 0)])
    return lines
