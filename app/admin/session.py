"""Who is asking: the merchant's session for the admin pages and the ``/api/`` endpoints.

Two ways in, one result (``MerchantSession``: a store id and who it is, for the audit trail):

- Shopify, embedded: App Bridge's session token, in ``Authorization: Bearer`` on API calls and
  as ``id_token`` in the query of a page load, verified by ``shopifyapp`` for the shop it names.
- Standalone (WooCommerce, and any store without an embedding admin): a one-time sign-in link
  (``cartback admin-link STORE``) opens a cookie session. Cookies travel by themselves, so
  every state-changing call must also carry the session's CSRF token in ``X-CSRF-Token``.

A request with neither gets 401 under ``/api/`` and the sign-in explanation on pages; nothing
of any store is shown. Every query below a session is scoped by its store id (invariant 9).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import wraps
from typing import Any, Concatenate, ParamSpec, TypeVar
from urllib.parse import urlsplit

from flask import Blueprint, Response, g, jsonify, redirect, render_template, request, session
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy import update
from sqlmodel import col, select

from app.current import get_runtime
from sequences.models import AdminLogin, Store, StoreStatus
from sequences.runtime import Runtime

bp = Blueprint("admin_auth", __name__)
log = logging.getLogger("cartback.admin.auth")

LOGIN_SALT = "cartback.admin-login.v1"
# A sign-in link is for now, not for later: long enough to copy from a terminal and open.
LOGIN_LINK_LIFETIME = timedelta(minutes=30)
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


# --- sign-in links ------------------------------------------------------------------------


def _serializer(runtime: Runtime) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(runtime.settings.link_keys, salt=LOGIN_SALT)


def _nonce_hash(nonce: str) -> str:
    return hashlib.sha256(nonce.encode()).hexdigest()


def find_store(runtime: Runtime, reference: str) -> Store | None:
    """A store by id, platform store id (shop domain, site URL) or demo slug."""
    with runtime.database.session() as db:
        query = select(Store).where(Store.platform_store_id == reference.strip())
        if reference.strip().isascii() and reference.strip().isdigit():
            query = select(Store).where(Store.id == int(reference))
        return db.exec(query).first()


def issue_login_link(runtime: Runtime, store_id: int, issued_by: str) -> str:
    """A one-time sign-in URL for the store's admin."""
    nonce = secrets.token_urlsafe(24)
    now = runtime.now()
    with runtime.database.session() as db:
        login = AdminLogin(
            store_id=store_id,
            nonce_sha256=_nonce_hash(nonce),
            issued_by=issued_by,
            created_at=now,
            expires_at=now + LOGIN_LINK_LIFETIME,
        )
        db.add(login)
        db.commit()
        assert login.id is not None
        login_id = login.id
    token = _serializer(runtime).dumps([login_id, nonce])
    log.info("admin sign-in link issued", extra={"store_id": store_id, "login_id": login_id})
    # In the fragment: browsers never send it, so the token stays out of every access log and
    # proxy; the sign-in page hands it over in a POST body.
    return f"{runtime.settings.app_url}/admin/login#token={token}"


def _redeem(runtime: Runtime, token: str) -> tuple[AdminLogin | None, str]:
    """Use a sign-in token once; the login row, or None and the reason in words."""
    try:
        login_id, nonce = _serializer(runtime).loads(token, max_age=int(LOGIN_LINK_LIFETIME.total_seconds()))
    except SignatureExpired:
        return None, "This sign-in link has expired. Ask for a new one with `cartback admin-link STORE`."
    except (BadSignature, ValueError, TypeError):
        return None, "This sign-in link is not valid. Copy the whole link, or ask for a new one."
    now = runtime.now()
    with runtime.database.session() as db:
        login = db.get(AdminLogin, login_id) if isinstance(login_id, int) else None
        if (
            login is None
            or not isinstance(nonce, str)
            or not hmac.compare_digest(login.nonce_sha256, _nonce_hash(nonce))
        ):
            return None, "This sign-in link is not valid. Ask for a new one with `cartback admin-link STORE`."
        # Conditional: two tabs opening the same link race, and only one may win.
        used = db.exec(
            update(AdminLogin)
            .where(col(AdminLogin.id) == login.id, col(AdminLogin.used_at).is_(None))
            .values(used_at=now)
        ).rowcount
        db.commit()
        if not used:
            return None, "This sign-in link was already used. Each link signs in once: ask for a new one."
        if login.expires_at <= now:
            return None, "This sign-in link has expired. Ask for a new one with `cartback admin-link STORE`."
        store = db.get(Store, login.store_id)
        if store is None or store.status != StoreStatus.ACTIVE:
            return None, "This store is no longer connected to cartback."
        db.expunge(login)
        return login, ""


@bp.get("/admin/login")
def login_page() -> Any:
    # Shown, not used: link previews in chat apps fetch URLs, and must not spend the link.
    return render_template("admin/login.html", help=SIGN_IN_HELP, problem=None)


def _origin_host(origin: str) -> str | None:
    """The host:port an Origin header names; None when it names none (``http://[`` included)."""
    try:
        return urlsplit(origin).netloc
    except ValueError:
        return None


@bp.post("/admin/login")
def login() -> Any:
    origin = request.headers.get("Origin")
    if origin and _origin_host(origin) != request.host:
        # Another site posting someone's sign-in link would sign this browser in to that store.
        return render_template(
            "admin/login.html", help=SIGN_IN_HELP, problem="Sign in from the link itself."
        ), 403
    runtime = get_runtime()
    login_row, problem = _redeem(runtime, request.form.get("token", ""))
    if login_row is None:
        return render_template("admin/login.html", help=SIGN_IN_HELP, problem=problem), 400
    session.clear()
    session.permanent = True
    session["store_id"] = login_row.store_id
    session["login_id"] = login_row.id
    session["actor"] = f"admin link {login_row.id} ({login_row.issued_by})"
    session["csrf"] = secrets.token_urlsafe(24)
    log.info("admin signed in", extra={"store_id": login_row.store_id, "login_id": login_row.id})
    return redirect("/admin", code=303)


@bp.post("/admin/logout")
def logout() -> Any:
    # Bytes: compare_digest refuses str with non-ASCII characters (a TypeError, a 500).
    if session.get("csrf") and hmac.compare_digest(
        str(session.get("csrf")).encode(), request.form.get("csrf_token", "").encode()
    ):
        login_id = session.get("login_id")
        if isinstance(login_id, int):
            runtime = get_runtime()
            with runtime.database.session() as db:
                db.exec(
                    update(AdminLogin)
                    .where(col(AdminLogin.id) == login_id)
                    .values(signed_out_at=runtime.now())
                )
                db.commit()
        session.clear()
    return redirect("/admin", code=303)


# --- resolving the session -----------------------------------------------------------------


def _json_401(reason: str, headers: dict[str, str] | None = None) -> Response:
    response = jsonify(error=reason)
    response.status_code = 401
    response.headers.update(headers or {})
    return response


def _shopify_session(*, document: bool) -> MerchantSession:
    from app.shopify.home import shopify_connector, verified_store

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
    with get_runtime().database.session() as db:
        store = db.get(Store, store_id)
        login = db.get(AdminLogin, login_id)
        signed_out = login is None or login.store_id != store_id or login.signed_out_at is not None
        if store is None or store.status != StoreStatus.ACTIVE or signed_out:
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


def configure_sessions(app: Any, app_url: str) -> None:
    """Cookie settings for the standalone admin's session."""
    app.config.update(
        PERMANENT_SESSION_LIFETIME=SESSION_LIFETIME,
        SESSION_COOKIE_NAME="cartback_admin",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=app_url.startswith("https://"),
        # Twelve hours from signing in, as the sign-in page says; not sliding with each request.
        SESSION_REFRESH_EACH_REQUEST=False,
    )
