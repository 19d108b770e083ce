"""Connecting a WooCommerce store: WooCommerce's own app authorization (``/wc-auth/v1``).

1. ``GET /woocommerce/connect?store_url=…`` checks the address and sends the merchant to their
   store's ``/wc-auth/v1/authorize`` with a one-time connection id as ``user_id``.
2. The merchant approves there; the store POSTs REST keys to ``/woocommerce/callback`` naming
   that id. We keep them encrypted and answer exactly 200 (the store treats anything else as a
   failure), then register our webhooks on a worker.
3. The store sends the merchant back to ``/woocommerce/return?success=1&user_id=…``: the
   webhooks are checked (registered now if the worker has not yet), and the merchant is signed
   in to the admin, once.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import re
import secrets
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit

from flask import Blueprint, jsonify, redirect, render_template, request
from redis.exceptions import RedisError
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from app import get_runtime
from app.admin_auth import issue_login_link
from app.webhooks import read_raw_body
from connectors.woocommerce import PLATFORM, canonical_site_url
from connectors.woocommerce.rest import join_key_pair
from sequences.models import PlatformConnection, Store, StoreStatus
from sequences.platform_sync import set_up_store
from sequences.runtime import Runtime

bp = Blueprint("woocommerce_connect", __name__)
log = logging.getLogger("cartback.woocommerce.connect")

APP_NAME = "cartback"
# How long a merchant has to approve at their store before the connection id lapses.
CONNECTION_LIFETIME = timedelta(hours=1)
# The key delivery is a small JSON object; anything bigger is not WooCommerce's.
MAX_CALLBACK_BYTES = 16_384
# WooCommerce's key format: "ck_"/"cs_" and 40 hex digits (wc_rand_hash()).
CONSUMER_KEY = re.compile(r"^ck_[0-9a-f]{40}$")
CONSUMER_SECRET = re.compile(r"^cs_[0-9a-f]{40}$")


def _hash(connection_id: str) -> str:
    return hashlib.sha256(connection_id.encode()).hexdigest()


def _problem(title: str, detail: str, status: int, **context: Any) -> Any:
    return render_template("woocommerce/problem.html", title=title, detail=detail, **context), status


def _private_host(host: str) -> bool:
    if host == "localhost" or host.endswith((".localhost", ".local", ".internal")):
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return not address.is_global


def validate_store_url(runtime: Runtime, raw: str) -> str:
    """The store's canonical address; ValueError with what to fix."""
    if len(raw) > 2000:
        raise ValueError("that address is too long to be a store's")
    site = canonical_site_url(raw if "://" in raw else f"https://{raw}")
    parts = urlsplit(site)
    if parts.scheme != "https":
        raise ValueError(
            "the store must be served over https: WooCommerce hands out REST keys only to secure sites, "
            "and cartback sends them nowhere else"
        )
    # cartback calls this address from its servers: an internal one would reach them instead.
    if _private_host(parts.hostname or "") and runtime.settings.is_production:
        raise ValueError("that address is not on the public internet")
    return site


@bp.get("/woocommerce/connect")
def connect() -> Any:
    runtime = get_runtime()
    raw = (request.args.get("store_url") or "").strip()
    if not raw:
        return render_template("woocommerce/connect.html", store_url="", error=None)
    try:
        site = validate_store_url(runtime, raw)
    except ValueError as exc:
        return render_template("woocommerce/connect.html", store_url=raw, error=str(exc)), 400
    app_url = runtime.settings.app_url
    if not app_url.startswith("https://"):
        return _problem(
            "cartback is not reachable over https",
            f"WooCommerce only sends keys to an https address, and APP_URL is {app_url}. Set APP_URL "
            "to cartback's public https address and try again.",
            503,
        )
    connection_id = secrets.token_urlsafe(24)
    now = runtime.now()
    with runtime.database.session() as session:
        session.add(
            PlatformConnection(
                connection_sha256=_hash(connection_id),
                platform=PLATFORM,
                store_url=site,
                created_at=now,
                expires_at=now + CONNECTION_LIFETIME,
            )
        )
        session.commit()
    query = urlencode(
        {
            "app_name": APP_NAME,
            "scope": "read_write",
            "user_id": connection_id,
            "return_url": f"{app_url}/woocommerce/return",
            "callback_url": f"{app_url}/woocommerce/callback",
        }
    )
    log.info("woocommerce connect started", extra={"site": site})
    return redirect(f"{site}/wc-auth/v1/authorize?{query}", code=302)


def _refuse(status: int, reason: str) -> Any:
    log.warning("woocommerce key delivery refused", extra={"reason": reason})
    return jsonify(error=reason), status


@bp.post("/woocommerce/callback")
def callback() -> Any:
    """The store's key delivery. Anything but 200 makes WooCommerce tell the merchant it failed."""
    runtime = get_runtime()
    raw = read_raw_body(MAX_CALLBACK_BYTES)
    if raw is None:
        return _refuse(413, f"body larger than {MAX_CALLBACK_BYTES} bytes")
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return _refuse(400, "body is not JSON")
    if not isinstance(body, dict):
        return _refuse(400, "body must be a JSON object")
    connection_id, key, secret = body.get("user_id"), body.get("consumer_key"), body.get("consumer_secret")
    if not isinstance(connection_id, str | int) or not str(connection_id):
        return _refuse(400, "user_id is required")
    if body.get("key_permissions") != "read_write":
        return _refuse(400, "key_permissions must be read_write: cartback creates coupons and webhooks")
    if not isinstance(key, str) or not CONSUMER_KEY.match(key):
        return _refuse(400, "consumer_key must be a WooCommerce consumer key (ck_…)")
    if not isinstance(secret, str) or not CONSUMER_SECRET.match(secret):
        return _refuse(400, "consumer_secret must be a WooCommerce consumer secret (cs_…)")
    now = runtime.now()
    try:
        with runtime.database.locked_session() as session:
            connection = session.exec(
                select(PlatformConnection)
                .where(PlatformConnection.connection_sha256 == _hash(str(connection_id)))
                .with_for_update()
            ).first()
            if connection is None or connection.platform != PLATFORM:
                return _refuse(404, "no connection is waiting for this user_id; start again from cartback")
            if connection.keys_received_at is not None:
                return _refuse(
                    409, "this connection has already received its keys; start again from cartback"
                )
            if connection.expires_at < now:
                return _refuse(410, "this connection expired; start again from cartback")
            store = session.exec(
                select(Store).where(
                    Store.platform == PLATFORM, Store.platform_store_id == connection.store_url
                )
            ).first()
            if store is None:
                store = Store(
                    platform=PLATFORM, platform_store_id=connection.store_url, name=connection.store_url
                )
                session.add(store)
            store.status, store.installed_at = StoreStatus.ACTIVE, now
            store.api_base_url = store.storefront_url = connection.store_url
            store.access_token_ciphertext = runtime.secrets.encrypt(join_key_pair(key, secret))
            if not store.webhook_secret_ciphertext:
                # Signs our webhooks and the companion plugin's captures; kept across reconnects
                # so an installed plugin keeps working.
                store.webhook_secret_ciphertext = runtime.secrets.encrypt(secrets.token_urlsafe(32))
            store.updated_at = now
            session.flush()
            connection.keys_received_at, connection.store_id = now, store.id
            store_id = store.id
    except IntegrityError:
        return _refuse(409, "another connection for this store finished at the same moment; try again")
    assert store_id is not None
    log.info("woocommerce keys received", extra={"store_id": store_id})
    _enqueue_setup(runtime, store_id)
    return jsonify(status="connected"), 200


def _enqueue_setup(runtime: Runtime, store_id: int) -> None:
    from sequences.jobs import set_up_store_job

    try:
        runtime.queue.enqueue(
            set_up_store_job, store_id, PLATFORM, job_id=f"set-up-store-{store_id}", result_ttl=0
        )
    except RedisError:
        log.warning("store setup not queued: Redis unreachable (the merchant's return does it)")


@bp.get("/woocommerce/return")
def returned() -> Any:
    runtime = get_runtime()
    connection_id = request.args.get("user_id") or ""
    if request.args.get("success") != "1":
        return _problem(
            "The store was not connected",
            "Access was not approved in WooCommerce, so cartback holds no keys for the store. Connect "
            "again and choose Approve when WooCommerce asks.",
            200,
            retry=True,
        )
    now = runtime.now()
    with runtime.database.locked_session() as session:
        connection = session.exec(
            select(PlatformConnection)
            .where(PlatformConnection.connection_sha256 == _hash(connection_id))
            .with_for_update()
        ).first()
        if connection is None:
            return _problem(
                "This connection is not known", "Start again from the connect page.", 404, retry=True
            )
        if connection.keys_received_at is None or connection.store_id is None:
            if connection.expires_at < now:
                return _problem(
                    "This connection expired", "Start again from the connect page.", 410, retry=True
                )
            # WooCommerce sends the merchant back only after our callback answered 200; a
            # missing delivery means it never reached us.
            return _problem(
                "WooCommerce has not sent the keys",
                "The store approved access but its key delivery did not reach cartback. Check that "
                f"{runtime.settings.app_url}/woocommerce/callback is reachable from the store over https, "
                "then connect again.",
                502,
                retry=True,
            )
        first_return = connection.returned_at is None
        connection.returned_at = connection.returned_at or now
        store_id = connection.store_id
        store = session.get(Store, store_id)
        assert store is not None
        secret = runtime.secrets.decrypt(store.webhook_secret_ciphertext or "")
    webhooks, problem = set_up_store(runtime, store_id, PLATFORM)
    login_link = issue_login_link(runtime, store_id, "woocommerce connect") if first_return else None
    with runtime.database.session() as session:
        store = session.get(Store, store_id)
        assert store is not None
        name = store.name
    return render_template(
        "woocommerce/connected.html",
        store_name=name,
        webhooks=webhooks,
        problem=problem,
        login_link=login_link,
        plugin_endpoint=f"{runtime.settings.app_url}/webhooks/woocommerce",
        plugin_secret=secret if first_return else None,
    )
