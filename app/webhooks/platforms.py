"""POST /webhooks/<platform>: verify, de-duplicate, store, enqueue, answer fast.

Order, every time: raw bytes -> store lookup from the headers -> constant-time signature
check -> parse and validate -> insert under unique delivery keys -> commit -> enqueue -> 200.
Processing happens on the queue; if Redis is down the delivery is already safe in the
database and the sweep enqueues it later.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, jsonify, request
from sqlmodel import select

from app.current import get_runtime
from app.request_bodies import read_raw_body
from connectors.base import (
    AcknowledgesUnreadable,
    AnswersPings,
    AppUninstalled,
    Connector,
    HeaderMap,
    MalformedPayload,
    PayloadError,
    PrivacyRequest,
    WebhookIdentity,
    WebhookRejected,
)
from sequences.engine.scheduling import enqueue_delivery
from sequences.models import Store, StoreStatus
from sequences.runtime import Runtime
from sequences.stores.deliveries import delivery_values, record_delivery
from sequences.stores.installs import record_uninstall

bp = Blueprint("webhooks", __name__)
log = logging.getLogger("cartback.webhooks")


def _answer(http_status: int, **body: Any) -> Any:
    return jsonify(body), http_status


@bp.post("/webhooks/<platform>")
def ingest(platform: str) -> Any:
    runtime = get_runtime()
    connector = runtime.connectors.get(platform)
    if connector is None:
        known = ", ".join(runtime.connectors.platforms())
        return _answer(404, error=f"unknown or unconfigured platform {platform!r}; configured: {known}")

    limit = runtime.settings.max_webhook_bytes
    raw = read_raw_body(limit)
    if raw is None:
        return _answer(413, error=f"body larger than {limit} bytes")

    headers = HeaderMap(list(request.headers.items()))
    if isinstance(connector, AnswersPings) and connector.is_ping(raw, headers):
        # The platform checks a new webhook's URL with an unsigned ping: answer, store nothing.
        return _answer(200, status="pong")
    app_signed = connector.signs_with_app_secret
    if app_signed and not connector.verify_webhook(raw, headers, ""):
        # Checked before anything else: a forged delivery learns nothing, not even whether
        # the shop is installed (Shopify's app review expects 401 here).
        log.warning("webhook signature rejected", extra={"platform": platform})
        return _answer(401, error="signature does not match the body")
    if not raw:
        return _answer(400, error="empty body")
    try:
        identity = connector.webhook_identity(headers)
    except WebhookRejected as rejected:
        return _answer(rejected.status, error=rejected.reason)

    # Core statements, not ORM objects: this is the hottest path in the app (see bench/).
    with runtime.database.engine.connect() as connection:
        store = connection.execute(
            select(Store.id, Store.status, Store.default_region, Store.webhook_secret_ciphertext).where(
                Store.platform == platform, Store.platform_store_id == identity.store_ref
            )
        ).first()
    if store is None:
        # Nobody to act for; a 2xx stops the platform retrying for hours. Nothing is stored.
        return _answer(200, status="ignored", reason="store is not installed")
    store_id, status, region, ciphertext = store
    if not app_signed:
        secret = runtime.secrets.decrypt(ciphertext) if ciphertext else ""
        if not secret or not connector.verify_webhook(raw, headers, secret):
            log.warning("webhook signature rejected", extra={"platform": platform, "store_id": store_id})
            return _answer(401, error="signature does not match the body")

    return accept(runtime, connector, store_id, status, region, identity, raw)


def accept(
    runtime: Runtime,
    connector: Connector,
    store_id: int,
    status: str,
    region: str,
    identity: WebhookIdentity,
    raw: bytes,
) -> Any:
    """A delivery whose sender is proven: parse, store once, enqueue, answer."""
    platform = connector.platform
    try:
        event = connector.parse_webhook(identity, raw, default_region=region)
        # Also for a topic the connector ignores without parsing: the row keeps the body as text.
        values = delivery_values(
            runtime, connector, store_id=store_id, identity=identity, raw_body=raw, event=event
        )
    except PayloadError as exc:
        if isinstance(connector, AcknowledgesUnreadable) and connector.acknowledges_unreadable(identity):
            # Authentic but unreadable, from a platform that stops delivering after a few
            # refusals: acknowledged, dropped and logged, so one odd order stops nothing else.
            log.warning("signed delivery not readable", extra={"platform": platform, "reason": str(exc)})
            return _answer(200, status="ignored", reason=str(exc))
        return _answer(400 if isinstance(exc, MalformedPayload) else 422, error=str(exc))
    # Privacy requests outlive the install (shop/redact arrives 48 h after an uninstall).
    if status != StoreStatus.ACTIVE and not isinstance(event, PrivacyRequest):
        return _answer(200, status="ignored", reason="store uninstalled cartback")

    if isinstance(event, AppUninstalled):
        # The store stops with the delivery's commit; the queued job does the rest.
        delivery_id = record_uninstall(runtime, values, store_id=store_id, occurred_at=event.occurred_at)
    else:
        delivery_id = record_delivery(runtime, values)
    if delivery_id is None:
        return _answer(200, status="duplicate", reason="this delivery was already received")
    enqueue_delivery(runtime, delivery_id)
    return _answer(200, status="accepted", delivery=delivery_id)


@bp.post("/webhooks/shopify/compliance")
def ingest_shopify_compliance() -> Any:
    """The URI `shopify.app.toml` gives for the mandatory privacy topics; same checks."""
    return ingest("shopify")
