"""Who is asking: the merchant's session for the admin pages and the ``/api/`` endpoints.

Two ways in, one result (``MerchantSession``: a store id and who it is, for the audit trail):

- Shopify, embedded: App Bridge's session token, in ``Authorization: Bearer`` on API calls and
  as ``id_token`` in the query of a page load, verified by ``shopifyapp`` for the shop it names.
- Standalone (WooCommerce, and any store without an embedding admin): a one-time sign-in link
  (``cartback admin-link STORE``, redeemed by ``app.admin.login``) opens a cookie session.
  Cookies travel by themselves, so every state-changing call must also carry the session's
  CSRF token in ``X-CSRF-Token``.

A request with neither gets 401 under ``/api/`` and the sign-in explanation on pages; nothing
of any store is shown. Every query below a session is scoped by its store id (invariant 9).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import wraps
from typing import Any, Concatenate, ParamSpec, TypeVar

from flask import Response, g, jsonify, render_template, request, session
from flask.sessions import SecureCookieSessionInterface

from app.current import get_runtime
from app.shopify.home import verified_store
from app.shopify.session_token import shopify_connector

# Re-exported: callers that issue a sign-in link (the CLI, the WooCommerce connection, tests)
# import them from here; the service is ``sequences.merchant.sign_in``.
from sequences.merchant.sign_in import LOGIN_LINK_LIFETIME as LOGIN_LINK_LIFETIME
from sequences.merchant.sign_in import find_store as find_store
from sequences.merchant.sign_in import issue_login_link as issue_login_link
from sequences.merchant.sign_in import still_signed_in

# A signed-in browser stays signed in for a working day.
SESSION_LIFETIME = timedelta(hours=12)
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SIGN_IN_HELP = (
    "Sign in first: open cartback from your Shopify admin (Apps → cartback), or run "
    "`cartback admin-link STORE` on the server and open the link it prints."
)


@dataclass(frozen=True)
class MerchantSession:
    store_id: int
    # For the audit trail: an id, never a name or email.
    actor: str
    # "shopify" (session token) or "cookie" (sign-in link).
    via: str
    csrf_token: str | None = None


class NotSignedIn(Exception):
    def __init__(self, response: Response) -> None:
        super().__init__("not signed in")
        self.response = response


# --- resolving the session -----------------------------------------------------------------


def _json_401(reason: str, headers: dict[str, str] | None = None) -> Response:
    response = jsonify(error=reason)
    response.status_code = 401
    response.headers.update(headers or {})
    return response


def _shopify_session(*, document: bool) -> MerchantSession:
    connector = shopify_connector()
    if connector is None:
        if document:
            page = render_template("admin/sign_in.html", help=SIGN_IN_HELP)
            raise NotSignedIn(Response(page, status=401, mimetype="text/html"))
        raise NotSignedIn(_json_401("this server is not set up for Shopify"))
    result, store_id, failure = verified_store(connector, check_token=False)
    if failure is not None:
        if document or failure.status_code != 401:
            raise NotSignedIn(failure)
        # Keep Shopify's retry header: App Bridge fetches a fresh token and tries again.
        retry = {
            name: value for name, value in failure.headers.items() if name.lower().startswith("x-shopify-")
        }
        raise NotSignedIn(
            _json_401("the Shopify session token is missing, expired or not for this app", retry)
        )
    assert store_id is not None
    g.shopify_headers = dict(result.response.headers)
    return MerchantSession(
        store_id=store_id, actor=f"Shopify user {result.user_id or 'unknown'}", via="shopify"
    )


def _cookie_session() -> MerchantSession | None:
    store_id, actor, csrf = session.get("store_id"), session.get("actor"), session.get("csrf")
    login_id = session.get("login_id")
    if not isinstance(store_id, int) or not isinstance(csrf, str) or not isinstance(login_id, int):
        return None
    if not still_signed_in(get_runtime(), store_id, login_id):
        session.clear()
        return None
    return MerchantSession(store_id=store_id, actor=str(actor or "admin link"), via="cookie", csrf_token=csrf)


def current_session(*, document: bool) -> MerchantSession:
    """The request's merchant session, or NotSignedIn carrying the response to send."""
    # Only a Bearer token is Shopify's: a proxy's Basic auth in front of a standalone install
    # must not send every request down the Shopify path.
    bearer = request.headers.get("Authorization", "").startswith("Bearer ")
    if bearer or (document and "id_token" in request.args):
        return _shopify_session(document=document)
    if document and "shop" in request.args and "host" in request.args:
        # An embedded page load without its token: shopifyapp's bounce fetches one.
        return _shopify_session(document=True)
    found = _cookie_session()
    if found is None:
        if document:
            page = render_template("admin/sign_in.html", help=SIGN_IN_HELP)
            raise NotSignedIn(Response(page, status=401, mimetype="text/html"))
        raise NotSignedIn(_json_401(SIGN_IN_HELP))
    if request.method not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER, "")
        if not sent or not hmac.compare_digest(sent.encode(), (found.csrf_token or "").encode()):
            response = jsonify(error=f"missing or wrong {CSRF_HEADER}: reload the page and try again")
            response.status_code = 403
            raise NotSignedIn(response)
    return found


P = ParamSpec("P")
R = TypeVar("R")


def _guarded(document: bool) -> Callable[[Callable[Concatenate[MerchantSession, P], R]], Callable[P, Any]]:
    def decorate(view: Callable[Concatenate[MerchantSession, P], R]) -> Callable[P, Any]:
        @wraps(view)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
            try:
                merchant = current_session(document=document)
            except NotSignedIn as refused:
                return refused.response
            return view(merchant, *args, **kwargs)

        return wrapper

    return decorate


# ``@api_view``: JSON endpoints (401 JSON); ``@page_view``: HTML pages (sign-in page).
api_view = _guarded(document=False)
page_view = _guarded(document=True)


class AdminOnlySessions(SecureCookieSessionInterface):
    """The admin's signed cookie session, not opened for machine callers (platform and Meta
    webhooks, the recovery link): they carry no cookie of ours, and building the cookie's
    signer on each of them was ~7% of a webhook's time (bench (a))."""

    def open_session(self, app: Any, request: Any) -> Any:
        if request.path.startswith(SESSIONLESS_PATHS):
            return self.make_null_session(app)
        return super().open_session(app, request)


# Paths whose requests never use the admin session.
SESSIONLESS_PATHS = ("/webhooks/",)


def configure_sessions(app: Any, app_url: str) -> None:
    """Cookie settings for the standalone admin's session."""
    app.session_interface = AdminOnlySessions()
    app.config.update(
        PERMANENT_SESSION_LIFETIME=SESSION_LIFETIME,
        SESSION_COOKIE_NAME="cartback_admin",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=app_url.startswith("https://"),
        # Twelve hours from signing in, as the sign-in page says; not sliding with each request.
        SESSION_REFRESH_EACH_REQUEST=False,
    )
