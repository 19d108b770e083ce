"""Connecting a WooCommerce store: WooCommerce's own app authorization (``/wc-auth/v1``).

1. ``GET /woocommerce/connect?store_url=…`` checks the address and sends the merchant to their
   store's ``/wc-auth/v1/authorize`` with a one-time connection id as ``user_id``; this browser
   gets a cookie naming the connection.
2. The merchant approves there; the store POSTs REST keys to ``/woocommerce/callback`` naming
   that id. The callback is unsigned (anyone who saw the id could post keys), so the keys are
   only held, encrypted, on the connection, and it answers exactly 200 (the store treats
   anything else as a failure).
3. The keys are proven on the store itself (a worker job, or the merchant's return, whichever
   comes first): WordPress's REST index names the site's own address (what its webhooks carry
   as their source), and a REST call with the keys must succeed there. Only then do they become
   the store's, and our webhooks are registered.
4. The store sends the merchant back to ``/woocommerce/return?success=1&user_id=…``: the
   browser that started the connection, and only it, is signed in to the admin, once.
"""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, jsonify, make_response, redirect, render_template, request
from redis.exceptions import RedisError
from sqlmodel import select

from app.admin.session import issue_login_link
from app.current import get_runtime
from app.request_bodies import read_raw_body
from connectors.base import MalformedPayload
from connectors.untrusted_json import load_untrusted_json
from connectors.woocommerce import PLATFORM
from connectors.woocommerce.rest import join_key_pair
from connectors.woocommerce.site import validate_store_url
from sequences import queue
from sequences.models import PlatformConnection, Store
from sequences.rate_limits import Budget, spend
from sequences.runtime import Runtime
from sequences.stores.connections import (
    CONNECTION_LIFETIME,
    KeysRefused,
    complete_connection,
    digest,
    hold_keys,
    mark_returned,
    start_connection,
)
from sequences.stores.sync import set_up_store

bp = Blueprint("woocommerce_connect", __name__)
log = logging.getLogger("cartback.woocommerce.connect")

APP_NAME = "cartback"
# The key delivery is a small JSON object; anything bigger is not WooCommerce's.
MAX_CALLBACK_BYTES = 16_384
# WooCommerce's key format: "ck_"/"cs_" and 40 hex digits (wc_rand_hash()).
CONSUMER_KEY = re.compile(r"^ck_[0-9a-f]{40}$")
CONSUMER_SECRET = re.compile(r"^cs_[0-9a-f]{40}$")
# The browser that started a connection (only it is signed in at the return).
BROWSER_COOKIE = "cartback_wc_connect"
# Connection starts per client address: a merchant retrying a typo stays well inside it.
CONNECT_BUDGET = Budget("woocommerce-connect", limit=10, window_seconds=600)
# At the return, how long to wait for a worker already registering the webhooks.
RETURN_WEBHOOK_WAIT_SECONDS = 10
# Why a key delivery is refused, in the words WooCommerce shows the merchant.
KEYS_REFUSED = {
    KeysRefused.UNKNOWN: (404, "no connection is waiting for this user_id; start again from cartback"),
    KeysRefused.ALREADY_RECEIVED: (
        409,
        "this connection has already received its keys; start again from cartback",
    ),
    KeysRefused.EXPIRED: (410, "this connection expired; start again from cartback"),
}


def _problem(title: str, detail: str, status: int, **context: Any) -> Any:
    return render_template("woocommerce/problem.html", title=title, detail=detail, **context), status


_proxy_warning_given = False


def _warn_if_proxied_unawares(runtime: Runtime) -> None:
    """Say so (once per process) when requests come through a proxy cartback does not count:
    every client then has the proxy's address, and one budget is shared by all merchants."""
    global _proxy_warning_given
    if _proxy_warning_given or runtime.settings.forwarded_proxies or "X-Forwarded-For" not in request.headers:
        return
    _proxy_warning_given = True
    log.warning(
        "requests arrive through a proxy (X-Forwarded-For) but FORWARDED_PROXIES is 0: every client "
        "shares the proxy's connect budget; set FORWARDED_PROXIES to the number of proxies in front"
    )


@bp.get("/woocommerce/connect")
def connect() -> Any:
    runtime = get_runtime()
    raw = (request.args.get("store_url") or "").strip()
    if not raw:
        return render_template("woocommerce/connect.html", store_url="", error=None)
    # Each start writes a pending connection (and may resolve the host): a budget per address.
    _warn_if_proxied_unawares(runtime)
    budget = spend(runtime.redis, CONNECT_BUDGET, request.remote_addr or "unknown")
    if not budget.allowed:
        minutes = max(1, round(budget.retry_after_seconds / 60))
        response = make_response(
            _problem(
                "Too many connection attempts",
                f"This address started {CONNECT_BUDGET.limit} connections in the last "
                f"{CONNECT_BUDGET.window_seconds // 60} minutes. Try again in about {minutes} minute(s); "
                "a connection already started stays valid for an hour.",
                429,
            )
        )
        response.headers["Retry-After"] = str(budget.retry_after_seconds)
        return response
    try:
        site = validate_store_url(raw, public_only=runtime.settings.is_production)
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
    started = start_connection(runtime, PLATFORM, site)
    query = urlencode(
        {
            "app_name": APP_NAME,
            "scope": "read_write",
            "user_id": started.connection_id,
            "return_url": f"{app_url}/woocommerce/return",
            "callback_url": f"{app_url}/woocommerce/callback",
        }
    )
    log.info("woocommerce connect started", extra={"site": site})
    response = make_response(redirect(f"{site}/wc-auth/v1/authorize?{query}", code=302))
    # Lax: sent on the store's redirect back (a top-level GET), not on cross-site posts.
    response.set_cookie(
        BROWSER_COOKIE,
        started.browser,
        max_age=int(CONNECTION_LIFETIME.total_seconds()),
        path="/woocommerce",
        secure=app_url.startswith("https://"),
        httponly=True,
        samesite="Lax",
    )
    return response


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
        body = load_untrusted_json(raw)
    except MalformedPayload as exc:
        return _refuse(400, str(exc))
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
    # Held, not yet the store's: they are proven on the store first (complete_connection).
    connection_pk = hold_keys(runtime, PLATFORM, str(connection_id), join_key_pair(key, secret))
    if isinstance(connection_pk, KeysRefused):
        return _refuse(*KEYS_REFUSED[connection_pk])
    log.info("woocommerce keys received", extra={"connection": connection_pk})
    try:
        queue.enqueue(
            runtime.queue,
            queue.COMPLETE_WOOCOMMERCE_CONNECTION,
            connection_pk,
            # Not unique, rq's own timeout, no retry: the merchant's return completes it anyway.
            options=queue.JobOptions(
                f"connect-woocommerce-{connection_pk}",
                None,
                unique=False,
                failure_ttl=None,
                job_timeout=None,
                retry_intervals=(),
            ),
        )
    except RedisError:
        log.warning("connection not queued: Redis unreachable (the merchant's return completes it)")
    return jsonify(status="received"), 200


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
    browser = request.cookies.get(BROWSER_COOKIE, "")
    with runtime.database.session() as session:
        connection = session.exec(
            select(PlatformConnection).where(PlatformConnection.connection_sha256 == digest(connection_id))
        ).first()
        if connection is None:
            return _problem(
                "This connection is not known", "Start again from the connect page.", 404, retry=True
            )
        if not browser or connection.browser_sha256 != digest(browser):
            # Only who started the connection is signed in: the id in this address is not proof.
            return _problem(
                "Open this from the browser you connected with",
                "This connection was started in another browser (or its cookie was cleared). Your store "
                "is connected all the same; start a new connection from this browser to sign in.",
                403,
                retry=True,
            )
        if connection.keys_received_at is None:
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
        connection_pk = connection.id
        assert connection_pk is not None
    completion = complete_connection(runtime, connection_pk)
    store_id = completion.store_id
    if store_id is None:
        return _problem(
            "The store's keys could not be checked",
            f"WooCommerce sent keys, but cartback could not use them on the store: {completion.problem}. "
            "Reload this page to try again, or connect again.",
            502,
        )
    back = mark_returned(runtime, connection_pk, store_id, now)
    # Signed in before anything slow, so a timeout below cannot lose the merchant their link.
    login_link = issue_login_link(runtime, store_id, "woocommerce connect") if back.first_return else None
    webhooks, problem = set_up_store(runtime, store_id, PLATFORM, wait_seconds=RETURN_WEBHOOK_WAIT_SECONDS)
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
        plugin_secret=back.webhook_secret if back.first_return else None,
    )
