"""Shopify's embedded app home (``GET /``) and the JSON it reads under ``/api/``.

Managed install: Shopify installs the app with the scopes from ``shopify.app.toml`` and opens
``/`` inside the admin with an App Bridge session token. We verify that token with
``shopifyapp``, exchange it for an expiring offline token the first time (or after a
reinstall, or when the stored one is refused), and from then on keep it fresh. The merchant
never sees a setup page. Every verify failure is answered with the response ``shopifyapp``
builds (it carries the headers App Bridge needs to retry).
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, abort, g, jsonify, render_template, request
from shopify_app import RequestInput
from sqlmodel import select

from app.admin.session import MerchantSession, api_view
from app.current import get_runtime
from connectors.base import IssuedToken, PlatformError, PlatformUnauthorized
from connectors.shopify import PLATFORM, ShopifyConnector
from connectors.shopify.connector import issued_token
from sequences.models import (
    DataExport,
    Store,
    StoreStatus,
)
from sequences.runtime import Runtime
from sequences.stores.access import fresh_access, refresh_store_details
from sequences.stores.installs import TokenInstall, record_token_install

bp = Blueprint("shopify_home", __name__)
log = logging.getLogger("cartback.shopify.home")

PATCH_ID_TOKEN_PATH = "/auth/patch-id-token"  # noqa: S105 - a route, not a secret
BOUNCE_FALLBACK = (
    "<style>@keyframes cartback-late{to{opacity:1}}"
    "p.cartback-late{opacity:0;animation:cartback-late 0s 4s forwards;"
    "font-family:system-ui,sans-serif;margin:2rem;color:#303030}</style>"
    '<p class="cartback-late">Opening cartback… If this page stays like this, Shopify\'s admin '
    "scripts could not load: reload cartback from your Shopify admin (Apps → cartback).</p>"
)


def shopify_connector() -> ShopifyConnector | None:
    connector = get_runtime().connectors.get(PLATFORM)
    return connector if isinstance(connector, ShopifyConnector) else None


def _shopify_request() -> RequestInput:
    # The raw request, unchanged: verification depends on the exact URL and headers.
    return {
        "method": request.method,
        "headers": dict(request.headers.items()),
        "url": request.url,
        "body": request.get_data(as_text=True),
    }


def _respond(result: Any) -> Response:
    log.info("shopify request not verified", extra={"code": result.log.code})
    return Response(result.response.body, status=result.response.status, headers=result.response.headers)


def _domain(shop: str) -> str:
    return f"{shop}.myshopify.com"


def install(runtime: Runtime, connector: ShopifyConnector, shop_domain: str, issued: IssuedToken) -> int:
    """Create or reactivate the shop's store row with a new token, then fill in its details."""
    # Two app pages loaded at once both install: the service finds the row the other created.
    store_id = record_token_install(
        runtime, TokenInstall(PLATFORM, shop_domain, connector.api_base_url(shop_domain), issued)
    )
    log.info("shop installed", extra={"shop": shop_domain})
    try:
        refresh_store_details(runtime, store_id)
    except PlatformError as exc:
        # The store works without these (defaults: INR, Asia/Kolkata); the next load retries.
        log.warning("shop details not read", extra={"shop": shop_domain, "reason": exc.reason})
    return store_id


def verified_store(
    connector: ShopifyConnector, *, check_token: bool
) -> tuple[Any, int | None, Response | None]:
    """Verify the session token; make sure we hold a working token for the shop.

    ``check_token`` (the app page): ask Shopify, which also catches a token revoked by an
    uninstall we never heard of; else a token within its lifetime is trusted.
    """
    runtime = get_runtime()
    result = connector.app.verify_app_home_req(
        _shopify_request(), app_home_patch_id_token_path=PATCH_ID_TOKEN_PATH
    )
    if not result.ok:
        return result, None, _respond(result)
    shop_domain = _domain(result.shop or "")
    with runtime.database.session() as session:
        store = session.exec(
            select(Store).where(Store.platform == PLATFORM, Store.platform_store_id == shop_domain)
        ).first()
        store_id = (
            store.id
            if store and store.status == StoreStatus.ACTIVE and store.access_token_ciphertext
            else None
        )
    if store_id is not None:
        try:
            if check_token:
                refresh_store_details(runtime, store_id)
            else:
                fresh_access(runtime, store_id)
            return result, store_id, None
        except PlatformUnauthorized as exc:
            # Revoked, or a refresh token that lapsed: a new exchange fixes it, unseen.
            log.info(
                "stored token unusable; exchanging again", extra={"shop": shop_domain, "reason": exc.reason}
            )
        except PlatformError as exc:
            # Shopify unreachable for now: show what we hold rather than an error page.
            log.warning("shop not reachable", extra={"shop": shop_domain, "reason": exc.reason})
            return result, store_id, None
    exchange = connector.app.exchange_using_token_exchange(
        access_mode="offline",
        id_token=result.id_token,
        invalid_token_response=result.invalid_token_response,
        http_client=connector.http,
    )
    if not exchange.ok or exchange.access_token is None:
        return result, None, _respond(exchange)
    return result, install(runtime, connector, shop_domain, issued_token(exchange.access_token)), None


@bp.get("/")
def app_home() -> Any:
    connector = shopify_connector()
    if connector is None or ("shop" not in request.args and "Authorization" not in request.headers):
        # Not opened from a Shopify admin: nothing of any merchant's is shown here.
        return render_template("shopify/landing.html", shopify_configured=connector is not None)
    result, store_id, failure = verified_store(connector, check_token=True)
    if failure is not None:
        return failure
    assert store_id is not None
    from app.admin.pages import shopify_app_home
    from app.admin.session import MerchantSession

    # frame-ancestors and App Bridge preload headers, exactly as shopifyapp built them.
    g.shopify_headers = dict(result.response.headers)
    merchant = MerchantSession(store_id, f"Shopify user {result.user_id or 'unknown'}", "shopify")
    return shopify_app_home(merchant)


@bp.get(PATCH_ID_TOKEN_PATH)
def patch_id_token() -> Any:
    connector = shopify_connector()
    if connector is None:
        abort(404)
    result = connector.app.app_home_patch_id_token(_shopify_request())
    body = result.response.body
    if result.ok:
        # App Bridge fetches a fresh session token and reloads the page at once; if Shopify's
        # CDN cannot be reached the page would stay blank, so after a few seconds it says so.
        body += BOUNCE_FALLBACK
    return Response(body, status=result.response.status, headers=result.response.headers)


@bp.get("/api/data-exports/<int(max=2147483647):export_id>")
@api_view
def data_export(merchant: MerchantSession, export_id: int) -> Any:
    """A privacy export, for the merchant's own shop only."""
    store_id = merchant.store_id
    with get_runtime().database.session() as session:
        export = session.exec(
            select(DataExport).where(DataExport.id == export_id, DataExport.store_id == store_id)
        ).first()
        if export is None:
            return jsonify(error="no such export for this shop"), 404
        return jsonify(id=export.id, created_at=export.created_at.isoformat(), content=export.content)
