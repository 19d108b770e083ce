"""Structured (JSON) logs that never carry a phone number, email or token in clear.

Code logs ids, not people; this filter is the safety net for anything that slips through
(an exception message quoting a payload, a third-party library's debug line).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

# Phone-like runs of 8+ digits (optionally +, spaces, dashes), emails, bearer/long tokens.
# A phone is 10-15 digits, maybe with separators, standing alone (not inside an id or a uuid).
_PHONE = re.compile(r"(?<![\w.\-])\+?\d(?:[\s\-()]{0,2}\d){9,14}(?![\w\-])")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+")
# "key=": WooCommerce's consumer_key (and an order's key) in a query string.
_TOKEN = re.compile(r"(?i)(bearer\s+|token[=:]\s*|secret[=:]\s*|key[=:]\s*|/r/)[\w.\-~]{12,}")

_STANDARD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def redact(text: str) -> str:
    text = _EMAIL.sub("[email]", text)
    text = _TOKEN.sub(lambda match: match.group(1) + "[redacted]", text)
    return _PHONE.sub("[phone]", text)


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: _clean(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(item) for item in value]
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    return redact(str(value))


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        for key, value in list(vars(record).items()):
            if key not in _STANDARD_ATTRS:
                setattr(record, key, _clean(value))
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_logging(level: str = "INFO", stream: Any = None) -> None:
    """Called by entry points (web, worker, CLI), never at import."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        if getattr(existing, "_cartback", False):
            root.removeHandler(existing)
    handler._cartback = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    # urllib3 (under the woocommerce client) logs each request line at DEBUG, query string and
    # all: a host that needs WooCommerce's keys in the query would have them printed.
    logging.getLogger("urllib3").setLevel(max(logging.INFO, logging.getLevelName(level)))
