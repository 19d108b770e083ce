"""Signing in to the standalone admin with a one-time link, and signing out.

``GET /admin/login`` shows the sign-in page: its script hands the link's token (kept in the
URL's fragment, so no log or proxy sees it) over in a POST body. ``POST /admin/login`` redeems
the token once (``sequences.merchant.sign_in``) and opens the cookie session that
``app.admin.session`` reads; ``POST /admin/logout`` ends it, for every copy of the cookie.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, redirect, render_template, request, session

from app.admin.session import SIGN_IN_HELP
from app.current import get_runtime
from sequences.merchant.sign_in import Refused, redeem, sign_out

# Named as before the split from ``app.admin.session``: endpoint names stay ``admin_auth.*``.
bp = Blueprint("admin_auth", __name__)
log = logging.getLogger("cartback.admin.auth")


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
    signed_in = redeem(get_runtime(), request.form.get("token", ""))
    if isinstance(signed_in, Refused):
        return render_template("admin/login.html", help=SIGN_IN_HELP, problem=signed_in.problem), 400
    session.clear()
    session.permanent = True
    session["store_id"] = signed_in.store_id
    session["login_id"] = signed_in.login_id
    session["actor"] = f"admin link {signed_in.login_id} ({signed_in.issued_by})"
    session["csrf"] = secrets.token_urlsafe(24)
    log.info("admin signed in", extra={"store_id": signed_in.store_id, "login_id": signed_in.login_id})
    return redirect("/admin", code=303)


@bp.post("/admin/logout")
def logout() -> Any:
    # Bytes: compare_digest refuses str with non-ASCII characters (a TypeError, a 500).
    if session.get("csrf") and hmac.compare_digest(
        str(session.get("csrf")).encode(), request.form.get("csrf_token", "").encode()
    ):
        login_id = session.get("login_id")
        if isinstance(login_id, int):
            sign_out(get_runtime(), login_id)
        session.clear()
    return redirect("/admin", code=303)
