"""``POST /webhooks/woocommerce/cartflows/<key>``: CartFlows' abandonment webhook as a capture
source (see ``connectors.woocommerce.cartflows``). Unsigned: the key in the URL, derived from
the store's secret, is the proof; the settings page shows the URL to paste into CartFlows."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qsl

from flask import Blueprint, jsonify
from sqlalchemy import select
from sqlmodel import col

from app.current import get_runtime
from app.request_bodies import read_raw_body
from app.webhooks.platforms import accept
from connectors.base import WebhookIdentity
from connectors.woocommerce import PLATFORM, cartflows
from sequences.models import Store

bp = Blueprint("cartflows_webhook", __name__)
log = logging.getLogger("cartback.cartflows")


def cartflows_url(app_url: str, secret: str, store_id: int) -> str:
    return f"{app_url}/webhooks/woocommerce/cartflows/{cartflows.url_key(secret, store_id)}"


@bp.post("/webhooks/woocommerce/cartflows/<key>")
def ingest(key: str) -> Any:
    runtime = get_runtime()
    connector = runtime.connectors[PLATFORM]
    limit = runtime.settings.max_webhook_bytes
    raw = read_raw_body(limit)
    if raw is None:
        return jsonify(error=f"body larger than {limit} bytes"), 413
    store_id = cartflows.store_id_of(key)
    with runtime.database.engine.connect() as connection:
        row = (
            connection.execute(
                select(
                    col(Store.platform_store_id),
                    col(Store.status),
                    col(Store.default_region),
                    col(Store.currency),
                    col(Store.webhook_secret_ciphertext),
                ).where(col(Store.id) == store_id, col(Store.platform) == PLATFORM)
            ).first()
            if store_id is not None
            else None
        )
    secret = runtime.secrets.decrypt(row[4]) if row is not None and row[4] else ""
    if row is None or store_id is None or not secret or not cartflows.key_matches(secret, store_id, key):
        log.warning("cartflows delivery refused: unknown key")
        return jsonify(
            error="this address is not a cartback CartFlows webhook; copy it again from cartback's settings"
        ), 404
    try:
        form = dict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True, max_num_fields=100))
    except (UnicodeDecodeError, ValueError):
        return jsonify(error="body must be a form (application/x-www-form-urlencoded)"), 400
    if not form.get("order_status"):
        return jsonify(error="order_status is required (abandoned or completed)"), 422
    site, status, region, currency, _ = row
    topic, body = cartflows.delivery_body(form, currency)
    identity = WebhookIdentity(store_ref=site, topic=topic, delivery_id="cartflows")
    answer = accept(runtime, connector, store_id, status, region, identity, body)
    return jsonify(answer.body), answer.status
