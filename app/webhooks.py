"""POST /webhooks/<platform>: verify, de-duplicate, store, enqueue, answer fast.

Order, every time: raw bytes -> store lookup from the headers -> constant-time signature
check -> parse and validate -> insert under unique delivery keys -> commit -> enqueue -> 200.
Processing happens on the queue; if Redis is down the delivery is already safe in the
database and the sweep enqueues it later.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from flask import Blueprint, jsonify, request
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from app import get_runtime
from connectors.base import HeaderMap, MalformedPayload, PayloadError, WebhookRejected
from sequences.models import Store, StoreStatus, WebhookDelivery
from sequences.scheduling import enqueue_delivery

bp = Blueprint("webhooks", __name__)
log = logging.getLogger("cartback.webhooks")


def _answer(http_status: int, **body: Any) -> Any:
    return jsonify(body), http_status


def content_digest(topic: str, raw_body: bytes) -> str:
    return hashlib.sha256(topic.encode() + b"\n" + raw_body).hexdigest()


@bp.post("/webhooks/<platform>")
def ingest(platform: str) -> Any:
    runtime = get_runtime()
    connector = runtime.connectors.get(platform)
    if connector is None:
        return _answer(
            404, error=f"unknown platform {platform!r}; known: {', '.join(runtime.connectors.platforms())}"
        )

    limit = runtime.settings.max_webhook_bytes
    if request.content_length is not None and request.content_length > limit:
        return _answer(413, error=f"body larger than {limit} bytes")
    raw = request.stream.read(limit + 1)
    if len(raw) > limit:
        return _answer(413, error=f"body larger than {limit} bytes")
    if not raw:
        return _answer(400, error="empty body")

    headers = HeaderMap(list(request.headers.items()))
    try:
        identity = connector.webhook_identity(headers)
    except WebhookRejected as rejected:
        return _answer(rejected.status, error=rejected.reason)

    with runtime.database.session() as session:
        store = session.exec(
            select(Store).where(Store.platform == platform, Store.platform_store_id == identity.store_ref)
        ).first()
    if store is None or store.id is None:
        # Nobody to act for; a 2xx stops the platform retrying for hours. Nothing is stored.
        return _answer(200, status="ignored", reason="store is not installed")
    secret = (
        runtime.secrets.decrypt(store.webhook_secret_ciphertext) if store.webhook_secret_ciphertext else ""
    )
    if not secret or not connector.verify_webhook(raw, headers, secret):
        log.warning("webhook signature rejected", extra={"platform": platform, "store_id": store.id})
        return _answer(401, error="signature does not match the body")
    if store.status != StoreStatus.ACTIVE:
        return _answer(200, status="ignored", reason="store uninstalled cartback")

    try:
        connector.parse_webhook(identity, raw, default_region=store.default_region)
    except MalformedPayload as exc:
        return _answer(400, error=str(exc))
    except PayloadError as exc:
        return _answer(422, error=str(exc))

    delivery = WebhookDelivery(
        platform=platform,
        store_id=store.id,
        delivery_id=identity.delivery_id[:255],
        topic=identity.topic[:64],
        content_sha256=content_digest(identity.topic, raw),
        payload=raw.decode("utf-8"),
    )
    try:
        with runtime.database.session() as session:
            session.add(delivery)
    except IntegrityError:
        return _answer(200, status="duplicate", reason="this delivery was already received")
    assert delivery.id is not None
    enqueue_delivery(runtime, delivery.id)
    return _answer(200, status="accepted", delivery=delivery.id)
