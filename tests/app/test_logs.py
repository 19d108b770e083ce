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
        ("reply from 9876543210", "reply from [phone]"),
        ("reply from 098765 43210", "reply from [phone]"),
        ("wa id 919876543210", "wa id [phone]"),
        ("US shopper (415) 555-2671", "US shopper [phone]"),
        ('{"wa_id": "14155552671"}', '{"wa_id": "[phone]"}'),
        (
            "GET /?shop=a.myshopify.com&id_token=eyJ.x.y&host=YQ HTTP/1.1",
            "GET /?shop=a.myshopify.com&id_token=[redacted]&host=YQ HTTP/1.1",
        ),
        (
            "POST /webhooks/woocommerce/cartflows/k3y-1_x HTTP/1.1",
            "POST /webhooks/woocommerce/cartflows/[redacted] HTTP/1.1",
        ),
        ("GET /demo-store/checkout/8aW27lgE-f6D/order", "GET /demo-store/checkout/[redacted]/order"),
    ],
)
def test_personal_data_and_tokens_are_masked(text, expected):
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "wake-12-1795870800",
        "demo-webhook-e1234567890b2e-4f1a",
        "cart 12345",
        # Ids and timestamps are long digit runs, not phones: logs must stay searchable by them.
        "checkout 7891234567890",
        "gid://shopify/ProductVariant/44123456789012",
        "triggered at 1733456789 (1733456789123 ms)",
        "2026-12-06 04:55:52.123456+00:00",
        "order 123e4567-e89b-12d3-a456-426614174000",
    ],
)
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


def test_contact_fields_are_masked_whatever_their_type():
    record = logging.makeLogRecord({"msg": "inbound", "wa_id": 919876543210, "to": "+919876543210"})

    RedactingFilter().filter(record)

    assert record.wa_id == "[phone]" and record.to == "[phone]"


def test_the_access_log_redacts_percent_encoded_secrets_too():
    from app.access_log import access_entry

    entry = access_entry(
        {
            "RAW_URI": "/%72/WzEyM10.awoeUg.OuEFxRAh8pIrjgGYI5?x=1&id%5Ftoken=eyJhbGc.e30.sig",
            "REQUEST_METHOD": "GET",
            "HTTP_REFERER": "https://admin.shopify.com/?id_token=eyJhbGc.e30.sig&phone=%2B919876543210",
        },
        "303 See Other",
        481,
        3.2,
    )

    assert entry["path"] == "/r/[redacted]?x=1&id_token=[redacted]"
    assert entry["referer"] == "https://admin.shopify.com/?id_token=[redacted]&phone=[phone]"
    assert entry["status"] == 303


def test_http_clients_log_no_line_per_request():
    """A worker sends a message per Graph call: httpx's own INFO line for each was noise (and
    ~6% of a sending worker's CPU); cartback logs each outcome itself."""
    import httpx

    from app.logs import configure_logging

    stream = io.StringIO()
    root = logging.getLogger()
    configure_logging("INFO", stream)
    try:
        with httpx.Client(transport=httpx.MockTransport(lambda request: httpx.Response(200))) as client:
            client.post("https://graph.facebook.com/v21.0/106540352242922/messages", json={})
        logging.getLogger("httpx").warning("graph refused the connection")
    finally:
        root.handlers = [h for h in root.handlers if not getattr(h, "_cartback", False)]
    lines = stream.getvalue().splitlines()
    assert not any("HTTP Request" in line for line in lines)
    assert any("graph refused the connection" in line for line in lines)
