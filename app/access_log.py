"""gunicorn's access log, structured and without secrets or personal data.

gunicorn's default line writes the raw request line and the Referer: every recovery link
(``GET /r/<token>``), App Bridge ``id_token``, CartFlows key and WooCommerce order key would
sit in the log for anyone who reads it. Here each request becomes one JSON line (like the app's
own logs) whose path, query and referer went through ``app.logs.redact`` (URL secrets per
``app.url_secrets``, phones, emails). Request headers are not logged at all, and gunicorn's
error log goes through the same redaction.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from gunicorn.glogging import Logger

from app.logs import RedactingFilter, redact

# Enough to tell a browser from a platform's client; the rest of a user agent is noise.
MAX_USER_AGENT_CHARS = 200


def access_entry(
    environ: dict[str, Any], status: str, sent: int | None, duration_ms: float
) -> dict[str, Any]:
    """The logged fields of one request; every URL-bearing field is redacted."""
    # Percent-decoded before redaction: /%72/<token> opens /r/<token>, id%5Ftoken is id_token.
    path = unquote(environ.get("RAW_URI") or environ.get("PATH_INFO") or "")
    referer = unquote(environ.get("HTTP_REFERER") or "") or None
    return {
        "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "level": "info",
        "logger": "gunicorn.access",
        "event": "request",
        "remote": environ.get("REMOTE_ADDR", "-"),
        "method": environ.get("REQUEST_METHOD", "-"),
        "path": redact(path),
        "status": int(status.split(None, 1)[0]) if status[:3].isdigit() else status,
        "bytes": sent,
        "duration_ms": round(duration_ms, 1),
        "referer": redact(referer) if referer else None,
        "user_agent": (environ.get("HTTP_USER_AGENT") or "")[:MAX_USER_AGENT_CHARS] or None,
    }


class RedactingAccessLogger(Logger):  # type: ignore[misc]  # gunicorn has no type hints
    """``logger_class`` for gunicorn (see ``app.gunicorn_config``)."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        # gunicorn's error log names the request URI when a request fails ("Error handling
        # request /r/<token>"): the same redaction as the app's own logs.
        for handler in self.error_log.handlers:
            handler.addFilter(RedactingFilter())

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> None:
        if not self.access_log_enabled:
            return
        status = resp.status if isinstance(resp.status, str) else str(resp.status)
        duration_ms = request_time.total_seconds() * 1000
        entry = access_entry(environ, status, getattr(resp, "sent", None), duration_ms)
        self.access_log.info(json.dumps(entry, ensure_ascii=False))
