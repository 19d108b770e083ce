"""Sign-in links to the standalone admin: issue one, redeem it once, sign out.

A link (``cartback admin-link STORE``, the end of a WooCommerce connection, the demo) carries a
signed ``[login id, nonce]``; only the nonce's SHA-256 is stored, on an ``AdminLogin`` row. A
link signs in once (a conditional update: two tabs opening it race, one wins), within
``LOGIN_LINK_LIFETIME``, and only to a store still connected. Signing out stamps the row, and
a cookie naming a signed-out row no longer counts (``still_signed_in``).

The web face (``app.admin.login``) keeps the cookie; everything written is written here.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from datetime import timedelta

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy import update
from sqlmodel import col, select

from sequences.models import AdminLogin, Store, StoreStatus
from sequences.runtime import Runtime

log = logging.getLogger("cartback.admin.auth")

LOGIN_SALT = "cartback.admin-login.v1"
# A sign-in link is for now, not for later: long enough to copy from a terminal and open.
LOGIN_LINK_LIFETIME = timedelta(minutes=30)

EXPIRED = "This sign-in link has expired. Ask for a new one with `cartback admin-link STORE`."
NOT_VALID = "This sign-in link is not valid. Ask for a new one with `cartback admin-link STORE`."
# The token did not even parse: most often half a link was copied.
MANGLED = "This sign-in link is not valid. Copy the whole link, or ask for a new one."
ALREADY_USED = "This sign-in link was already used. Each link signs in once: ask for a new one."
STORE_GONE = "This store is no longer connected to cartback."


@dataclass(frozen=True)
class SignedIn:
    """A link redeemed: who signed in, to which store."""

    login_id: int
    store_id: int
    # Who asked for the link ("cli", "woocommerce connect", "demo"), for the audit trail.
    issued_by: str


@dataclass(frozen=True)
class Refused:
    """A link that signs no one in, and why, in words for the sign-in page."""

    problem: str


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


def redeem(runtime: Runtime, token: str) -> SignedIn | Refused:
    """Use a sign-in token once."""
    try:
        login_id, nonce = _serializer(runtime).loads(token, max_age=int(LOGIN_LINK_LIFETIME.total_seconds()))
    except SignatureExpired:
        return Refused(EXPIRED)
    except (BadSignature, ValueError, TypeError):
        return Refused(MANGLED)
    now = runtime.now()
    # Locked from the start: it reads the link, then marks it used. On SQLite a transaction
    # that read before another connection's commit cannot write ("database is locked" at
    # once), so the write lock is taken before the read.
    with runtime.database.locked_session() as db:
        login = db.get(AdminLogin, login_id) if isinstance(login_id, int) else None
        if (
            login is None
            or not isinstance(nonce, str)
            or not hmac.compare_digest(login.nonce_sha256, _nonce_hash(nonce))
        ):
            return Refused(NOT_VALID)
        # Conditional: two tabs opening the same link race, and only one may win.
        used = db.exec(
            update(AdminLogin)
            .where(col(AdminLogin.id) == login.id, col(AdminLogin.used_at).is_(None))
            .values(used_at=now)
        ).rowcount
        db.commit()
        if not used:
            return Refused(ALREADY_USED)
        if login.expires_at <= now:
            return Refused(EXPIRED)
        store = db.get(Store, login.store_id)
        if store is None or store.status != StoreStatus.ACTIVE:
            return Refused(STORE_GONE)
        assert login.id is not None
        return SignedIn(login_id=login.id, store_id=login.store_id, issued_by=login.issued_by)


def sign_out(runtime: Runtime, login_id: int) -> None:
    """The browser signed in by this link signs out; its cookie no longer counts."""
    with runtime.database.session() as db:
        db.exec(update(AdminLogin).where(col(AdminLogin.id) == login_id).values(signed_out_at=runtime.now()))
        db.commit()


def still_signed_in(runtime: Runtime, store_id: int, login_id: int) -> bool:
    """A cookie's sign-in still counts: not signed out, and its store still connected."""
    with runtime.database.session() as db:
        store = db.get(Store, store_id)
        login = db.get(AdminLogin, login_id)
        signed_out = login is None or login.store_id != store_id or login.signed_out_at is not None
        return not (store is None or store.status != StoreStatus.ACTIVE or signed_out)
