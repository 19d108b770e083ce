"""The log safety net: personal data and tokens are masked, ids stay readable."""

from __future__ import annotations

import io
import json
import logging

import pytest

from app.logs import JsonFormatter, RedactingFilter, redact


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("call +91 98765 43210 now", "call [phone] now"),
        ("phone=+919876543210", "phone=[phone]"),
        ("mail asha@example.in", "mail [email]"),
        ("Authorization: Bearer abcdefghijklmnop123", "Authorization: Bearer [redacted]"),
        ("GET /r/WzEyM10.awoeUg.OuEFxRAh8pIrjgGYI5", "GET /r/[redacted]"),
    ],
)
def test_personal_data_and_tokens_are_masked(text, expected):
    assert redact(text) == expected


@pytest.mark.parametrize("text", ["wake-12-1795870800", "demo-webhook-e1234567890b2e-4f1a", "cart 12345"])
def test_ids_are_left_readable(text):
    assert redact(text) == text


def test_log_lines_are_json_with_their_fields_redacted():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("cartback.test-logs")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("reply from %s", "+919876543210", extra={"cart_id": 7, "note": "asha@example.in"})
    finally:
        logger.removeHandler(handler)
    entry = json.loads(stream.getvalue())
    assert entry["event"] == "reply from [phone]"
    assert entry["cart_id"] == 7 and entry["note"] == "[email]"
    assert entry["level"] == "warning"
