"""The demo platform's webhooks: signature, parsing into the common model, refusals."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import pytest

from connectors.base import (
    CartDeleted,
    CartSnapshot,
    Ignored,
    MalformedPayload,
    OrderEvent,
    PayloadError,
    WebhookIdentity,
    WebhookRejected,
)
from demo.connector import DemoConnector, sign
from tests.support.factories import checkout_payload, order_payload

SECRET = "whsec-test"


@pytest.fixture
def connector() -> DemoConnector:
    return DemoConnector(httpx.Client())


def identity(topic: str = "checkouts/update") -> WebhookIdentity:
    return WebhookIdentity("demo-bazaar", topic, "delivery-1")


def test_a_body_signed_with_the_store_secret_verifies(connector):
    body = json.dumps(checkout_payload()).encode()
    assert connector.verify_webhook(body, {"X-Demo-Hmac-Sha256": sign(body, SECRET)}, SECRET)


@pytest.mark.parametrize(
    "signature", ["", "not-base64", sign(b"other body", SECRET), sign(b"{}", "other-secret")]
)
def test_a_wrong_signature_does_not_verify(connector, signature):
    body = b"{}"
    assert not connector.verify_webhook(body, {"X-Demo-Hmac-Sha256": signature}, SECRET)


def test_missing_headers_are_named(connector):
    with pytest.raises(WebhookRejected) as rejected:
        connector.webhook_identity({"X-Demo-Shop": "demo-bazaar"})
    assert rejected.value.status == 400
    assert "X-Demo-Topic" in rejected.value.reason and "X-Demo-Webhook-Id" in rejected.value.reason


def test_a_checkout_becomes_a_snapshot_with_decimal_money_and_an_e164_phone(connector):
    payload = checkout_payload(phone="098765 43210", prices=("1499.00", "699.50"))
    snapshot = connector.parse_webhook(identity(), json.dumps(payload).encode(), default_region="IN")
    assert isinstance(snapshot, CartSnapshot)
    assert snapshot.buyer.phone_e164 == "+919876543210"
    assert snapshot.subtotal == Decimal("2198.50") and isinstance(snapshot.subtotal, Decimal)
    assert [line.unit_price for line in snapshot.lines] == [Decimal("1499.00"), Decimal("699.50")]
    assert snapshot.updated_at.tzinfo is not None and snapshot.updated_at.utcoffset().total_seconds() == 0


def test_a_float_price_is_refused_rather_than_rounded(connector):
    payload = checkout_payload()
    payload["line_items"][0]["price"] = 1499.99
    with pytest.raises(PayloadError, match=r"line_items\[0\]\.price"):
        connector.parse_webhook(identity(), json.dumps(payload).encode(), default_region="IN")


@pytest.mark.parametrize("price", ["1e400", "-1", "NaN", "Infinity", "abc"])
def test_implausible_prices_are_refused(connector, price):
    payload = checkout_payload()
    payload["line_items"][0]["price"] = price
    with pytest.raises(PayloadError, match="price"):
        connector.parse_webhook(identity(), json.dumps(payload).encode(), default_region="IN")


def test_an_invalid_phone_is_refused_without_echoing_it(connector):
    payload = checkout_payload(phone="12345")
    with pytest.raises(PayloadError) as refused:
        connector.parse_webhook(identity(), json.dumps(payload).encode(), default_region="IN")
    assert "12345" not in str(refused.value)


def test_a_timestamp_without_a_zone_is_refused(connector):
    payload = checkout_payload()
    payload["updated_at"] = "2026-11-28T10:00:00"
    with pytest.raises(PayloadError, match="updated_at"):
        connector.parse_webhook(identity(), json.dumps(payload).encode(), default_region="IN")


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b"\xff\xfe"])
def test_malformed_bodies_are_told_apart_from_invalid_ones(connector, body):
    with pytest.raises(MalformedPayload):
        connector.parse_webhook(identity(), body, default_region="IN")


def test_an_order_carries_everything_that_points_back_at_the_cart(connector):
    payload = order_payload(
        checkout_id="chk_1",
        token="tok_1",
        codes=["CB-ABCDEFGH"],
        total="2098.00",
        created_at=datetime.now(UTC),
    )
    order = connector.parse_webhook(
        identity("orders/create"), json.dumps(payload).encode(), default_region="IN"
    )
    assert isinstance(order, OrderEvent)
    assert (order.cart_id, order.cart_token, order.discount_codes) == ("chk_1", "tok_1", ("CB-ABCDEFGH",))
    assert order.total == Decimal("2098.00")


def test_a_deleted_checkout_is_keyed_by_id(connector):
    body = json.dumps({"id": "chk_9", "deleted_at": "2026-11-28T10:00:00Z"}).encode()
    event = connector.parse_webhook(identity("checkouts/delete"), body, default_region="IN")
    assert event == CartDeleted(cart_id="chk_9", occurred_at=event.occurred_at)


def test_an_unknown_topic_is_acknowledged_not_parsed(connector):
    event = connector.parse_webhook(identity("products/update"), b"not even json", default_region="IN")
    assert isinstance(event, Ignored)
