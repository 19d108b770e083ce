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

from app.url_secrets import redact_url_secrets

# Phones, by pattern and by context, so ids and timestamps stay readable:
# - international form: "+" then 8-15 digits, separators allowed ("+91 98765 43210");
_PHONE_INTERNATIONAL = re.compile(r"(?<![\w+])\+\d(?:[\s\-().]{0,2}\d){7,14}(?![\w\-])")
# - an Indian mobile written nationally: 10 digits starting 6-9, maybe after 0 or 91
#   ("9876543210", "09876 543210", "919876543210"); a 13-digit id does not fit;
_PHONE_INDIAN = re.compile(r"(?<![\w.\-+])(?:0|91)?[6-9]\d{4}[\s\-]?\d{5}(?![\w\-])")
# - digit groups with separators, 10-15 digits in all ("(415) 555-2671"); dates and times have
#   fewer digits per run, and ids have no separators;
_PHONE_GROUPED = re.compile(r"(?<![\w.\-+:])\(?\d{2,6}\)?(?:[\s\-]\(?\d{2,6}\)?){1,4}(?![\w\-:])")
# - any digits right after a name that says they are a phone (Meta's wa_id, from, to).
_PHONE_CONTEXT = re.compile(
    r"""(?i)((?:phone|mobile|msisdn|wa_id|whatsapp|recipient|"to"|"from"|\bto|\bfrom)["']?\s*[:=]\s*["']?)\+?\d[\d\s\-()]{5,}\d"""
)
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+")
# Credentials outside URLs (URLs go through app.url_secrets).
_TOKEN = re.compile(r"(?i)(bearer\s+|token[=:]\s*|secret[=:]\s*|key[=:]\s*)[\w.\-~]{12,}")
# Extra fields whose value is a person's contact, whatever its type.
_CONTACT_FIELDS = frozenset({"phone", "to", "from", "wa_id", "email", "recipient", "mobile", "to_phone"})

_STANDARD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def _grouped_phone(match: re.Match[str]) -> str:
    text = match.group()
    return "[phone]" if 10 <= sum(ch.isdigit() for ch in text) <= 15 else text


def redact(text: str) -> str:
    text = _EMAIL.sub("[email]", text)
    text = redact_url_secrets(text)
    text = _TOKEN.sub(lambda match: match.group(1) + "[redacted]", text)
    text = _PHONE_CONTEXT.sub(lambda match: match.group(1) + "[phone]", text)
    text = _PHONE_INTERNATIONAL.sub("[phone]", text)
    text = _PHONE_INDIAN.sub("[phone]", text)
    return _PHONE_GROUPED.sub(_grouped_phone, text)


def redact_value(value: Any) -> Any:
    """``redact`` through dicts and lists (log extras, error-tracking events); other values as
    their redacted text, numbers, booleans and None as they are."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: redact_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_value(item) for item in value]
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    return redact(str(value))


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        for key, value in list(vars(record).items()):
            if key in _CONTACT_FIELDS and value is not None:
                setattr(record, key, "[phone]" if key != "email" else "[email]")
            elif key not in _STANDARD_ATTRS:
                setattr(record, key, redact_value(value))
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
    # httpx logs every request at INFO: a line per message a worker sends to the Graph API,
    # noise beside cartback's own outcome logs and ~6% of a sending worker's CPU (bench (f)).
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLevelName(level)))
