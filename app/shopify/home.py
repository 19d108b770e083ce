"""Shopify's embedded app: installing on first load and keeping the shop's token working.

Managed install: Shopify installs the app with the scopes from ``shopify.app.toml`` and opens
``/`` inside the admin with an App Bridge session token. We verify that token
(``app.shopify.session_token``), exchange it for an expiring offline token the first time (or
after a reinstall, or when the stored one is refused), and from then on keep it fresh. The
merchant never sees a setup page. Every verify failure is answered with the response
``shopifyapp`` builds (it carries the headers App Bridge needs to retry).

The app home itself (``GET /``, the dashboard) is a page of the merchant's admin
(``app.admin.pages``); the admin's session guards call ``verified_store`` here, so nothing
here imports the admin.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, abort
from sqlmodel import select

from app.current import get_runtime
from app.shopify.session_token import (
    PATCH_ID_TOKEN_PATH,
    myshopify_domain,
    refusal,
    shopify_connector,
    shopify_request,
    verify_session_token,
)
from connectors.base import IssuedToken, PlatformError, PlatformUnauthorized
from connectors.shopify import PLATFORM, ShopifyConnector
from connectors.shopify.connector import issued_token
from sequences.models import (
    Store,
    StoreStatus,
)
from sequences.runtime import Runtime
from sequences.stores.access import fresh_access, refresh_store_details
from sequences.stores.installs import TokenInstall, record_token_install

bp = Blueprint("shopify_home", __name__)
log = logging.getLogger("cartback.shopify.home")

BOUNCE_FALLBACK = (
    "<style>@keyframes cartback-late{to{opacity:1}}"
    "p.cartback-late{opacity:0;animation:cartback-late 0s 4s forwards;"
    "font-family:system-ui,sans-serif;margin:2rem;color:#303030}</style>"
    '<p class="cartback-late">Opening cartback… If this page stays like this, Shopify\'s admin '
    "scripts could not load: reload cartback from your Shopify admin (Apps → cartback).</p>"
)


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
    result = verify_session_token(connector)
    if not result.ok:
        return result, None, refusal(result)
    shop_domain = myshopify_domain(result.shop or "")
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
        return result, None, refusal(exchange)
    return result, install(runtime, connector, shop_domain, issued_token(exchange.access_token)), None


@bp.get(PATCH_ID_TOKEN_PATH)
def patch_id_token() -> Any:
    connector = shopify_connector()
    if connector is None:
        abort(404)
    result = connector.app.app_home_patch_id_token(shopify_request())
    body = result.response.body
    if result.ok:
        # App Bridge fetches a fresh session token and reloads the page at once; if Shopify's
        # CDN cannot be reached the page would stay blank, so after a few seconds it says so.
        body += BOUNCE_FALLBACK
    return Response(body, status=result.response.status, headers=result.response.headers)
