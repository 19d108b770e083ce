"""GET /r/<token>: the one-click recovery link. Never a stack trace, never a login."""

from __future__ import annotations

import logging
import time
from typing import Any

from flask import Blueprint, redirect, render_template

from app.current import get_runtime
from sequences.clicks.rebuild import handle_click
from sequences.merchant.preview import TEST_MESSAGE_TOKEN

bp = Blueprint("links", __name__)
log = logging.getLogger("cartback.links")

# Tokens are ~45 characters; anything far longer is not ours.
MAX_TOKEN_LENGTH = 512


@bp.get("/r/<path:token>")
def follow(token: str) -> Any:
    if token == TEST_MESSAGE_TOKEN:
        return render_template("link_problem.html", notice="test_message")
    if len(token) > MAX_TOKEN_LENGTH:
        return render_template("link_problem.html", notice="link_invalid"), 400
    runtime = get_runtime()
    started = time.perf_counter()
    try:
        result = handle_click(runtime, token)
    except Exception:
        # The shopper gets a friendly page whatever broke; the operator gets the traceback.
        log.exception("recovery link failed")
        runtime.telemetry.click_redirect.labels("error").observe(time.perf_counter() - started)
        return render_template("link_problem.html", notice="unavailable"), 503
    log.info("recovery link followed", extra={"outcome": result.outcome})
    # The click's work (the discount made, the checkout rebuilt) until the answer is ready.
    runtime.telemetry.click_redirect.labels(
        "redirected" if result.redirect_url is not None else "refused"
    ).observe(time.perf_counter() - started)
    if result.redirect_url is None:
        return render_template("link_problem.html", notice=result.notice or "link_invalid"), 404
    # 303 so a browser never re-sends anything to the checkout; no caching of one-off links.
    response = redirect(result.redirect_url, code=303)
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response
