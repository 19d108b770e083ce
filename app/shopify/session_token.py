"""Shopify's session token (App Bridge's ``id_token``): is this request from a merchant in a shop?

The embedded admin proves who is asking with a short-lived JWT signed with the app's secret:
in ``Authorization: Bearer`` on API calls, and as ``id_token`` in the query of a page load.
``shopifyapp`` verifies it against the exact URL and headers of the request, so the request is
handed over unchanged. A request that fails gets the response ``shopifyapp`` builds: it carries
the headers App Bridge needs to fetch a fresh token and retry.

A leaf of ``app``: it reads the runtime and nothing else of the app, so the merchant's session
guards (``app.admin.session``) and the Shopify pages (``app.shopify.home``) can both import it.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Response, request
from shopify_app import RequestInput

from app.current import get_runtime
from connectors.shopify import PLATFORM, ShopifyConnector

log = logging.getLogger("cartback.shopify.home")

# Where App Bridge's bounce page fetches a fresh session token when a page load has none.
PATCH_ID_TOKEN_PATH = "/auth/patch-id-token"  # noqa: S105 - a route, not a secret


def shopify_connector() -> ShopifyConnector | None:
    """The Shopify connector, or None when this server is not set up for Shopify."""
    connector = get_runtime().connectors.get(PLATFORM)
    return connector if isinstance(connector, ShopifyConnector) else None


def shopify_request() -> RequestInput:
    # The raw request, unchanged: verification depends on the exact URL and headers.
    return {
        "method": request.method,
        "headers": dict(request.headers.items()),
        "url": request.url,
        "body": request.get_data(as_text=True),
    }


def refusal(result: Any) -> Response:
    """The response ``shopifyapp`` built for a request it did not verify."""
    log.info("shopify request not verified", extra={"code": result.log.code})
    return Response(result.response.body, status=result.response.status, headers=result.response.headers)


def myshopify_domain(shop: str) -> str:
    return f"{shop}.myshopify.com"


def verify_session_token(connector: ShopifyConnector) -> Any:
    """``shopifyapp``'s verdict on the request's session token (``.ok``, ``.shop``, ``.user_id``,
    ``.id_token``; when not ok, answer with ``refusal(result)``)."""
    return connector.app.verify_app_home_req(
        shopify_request(), app_home_patch_id_token_path=PATCH_ID_TOKEN_PATH
    )
