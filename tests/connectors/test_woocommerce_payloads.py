"""WooCommerce bodies -> the common model, and the connector's webhook checks (no network)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from connectors.base import (
    CartDeleted,
    CartSnapshot,
    ConsentSource,
    Ignored,
    OrderChanged,
    OrderEvent,
    PayloadError,
    WebhookIdentity,
    WebhookRejected,
)
from connectors.woocommerce import WooCommerceConnector, canonical_site_url
from connectors.woocommerce.connector import sign
from tests.support.woocommerce import SITE, fixture, signed_headers

connector = WooCommerceConnector()


def parse(topic: str, payload: dict) -> object:
    identity = WebhookIdentity(store_ref=SITE, topic=topic, delivery_id="1:abc")
    return connector.parse_webhook(identity, json.dumps(payload).encode(), default_region="IN")


def test_a_pending_razorpay_order_is_the_shoppers_abandoned_cart():
    snapshot = parse("order.created", fixture("order_pending_razorpay"))

    assert isinstance(snapshot, CartSnapshot)
    assert snapshot.cart_id == "order-727" and snapshot.cart_token == "order-727"
    # *_gmt carries no zone: UTC, counted to the end of its second.
    assert snapshot.updated_at == datetime(2026, 11, 28, 9, 0, 5, 999_999, tzinfo=UTC)
    assert (snapshot.currency, snapshot.subtotal, snapshot.total) == (
        "INR",
        Decimal("2098.00"),
        Decimal("2098.00"),
    )
    kurta, dupatta = snapshot.lines
    # Unit prices from the exact subtotal strings, never from the float "price".
    assert (kurta.unit_price, kurta.quantity, kurta.product_id, kurta.variant_id) == (
        Decimal("899.00"),
        2,
        "93",
        "94",
    )
    assert kurta.image_url == "https://shop.example/wp-content/uploads/2026/10/kurta.jpg"
    assert (dupatta.variant_id, dupatta.image_url) == ("22", None)
    assert snapshot.buyer.phone_e164 == "+919876543210"
    assert snapshot.buyer.email == "priya@example.com" and snapshot.buyer.first_name == "Priya"
    assert (
        snapshot.buyer.marketing_consent and snapshot.buyer.consent_source == ConsentSource.CHECKOUT_CHECKBOX
    )
    assert snapshot.checkout_url == fixture("order_pending_razorpay")["payment_url"]


def test_a_failed_payment_is_abandoned_too():
    assert isinstance(
        parse("order.updated", fixture("order_pending_razorpay") | {"status": "failed"}), CartSnapshot
    )


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"payment_method": "cod"}, "cash on delivery"),
        ({"created_via": "admin"}, "created via admin"),
        ({"created_via": "rest-api"}, "created via rest-api"),
        ({"status": "checkout-draft"}, "order checkout-draft"),
        ({"needs_payment": False}, "nothing left to pay"),
    ],
)
def test_orders_that_are_not_a_dropped_payment_are_acknowledged_and_left(change, reason):
    event = parse("order.updated", fixture("order_pending_razorpay") | change)
    assert isinstance(event, Ignored) and reason in event.reason


def test_a_cancelled_order_is_a_change_that_carries_what_the_order_says_now():
    """Cancelled is where an unpaid order ends (nothing for a cart still recovering) and where a
    cash-on-delivery parcel returned ends: the body says it all, no read again needed."""
    cod = fixture("order_processing_paid") | {
        "status": "cancelled",
        "payment_method": "cod",
        "date_paid_gmt": None,
        "date_modified_gmt": "2026-12-03T10:00:00",
    }
    event = parse("order.updated", cod)
    assert isinstance(event, OrderChanged) and event.status is not None
    assert event.status.cancelled_at == datetime(2026, 12, 3, 10, 0, tzinfo=UTC)
    assert event.status.cash_on_delivery and event.status.cancel_reason == "cancelled"


def test_a_placed_order_carries_its_refunds_and_whether_it_is_paid():
    refunded = fixture("order_processing_paid") | {
        "refunds": [{"id": 9, "reason": "size", "total": "-500.00"}]
    }
    event = parse("order.updated", refunded)
    assert isinstance(event, OrderEvent) and event.status is not None
    assert event.status.refunded == Decimal("500.00") and not event.status.awaiting_payment
    cod = parse("order.updated", fixture("order_processing_paid") | {"payment_method": "cod"})
    assert isinstance(cod, OrderEvent) and cod.status is not None and cod.status.awaiting_payment
    on_hold = parse("order.updated", fixture("order_processing_paid") | {"status": "on-hold"})
    assert isinstance(on_hold, OrderEvent) and on_hold.status is not None and on_hold.status.awaiting_payment


def test_a_bank_transfer_on_hold_is_a_placed_order_dated_when_the_shopper_placed_it():
    on_hold = fixture("order_pending_razorpay") | {
        "status": "on-hold",
        "payment_method": "bacs",
        "needs_payment": False,
    }
    order = parse("order.updated", on_hold)
    # Not when the merchant later confirms the money: the shopper bought at 09:00.
    assert isinstance(order, OrderEvent) and order.created_at == datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


def test_prices_include_tax_where_the_store_shows_them_with_it():
    order = fixture("order_pending_razorpay")
    order["prices_include_tax"] = True
    order["line_items"][1] = order["line_items"][1] | {"subtotal": "254.24", "subtotal_tax": "45.76"}
    snapshot = parse("order.created", order)
    assert isinstance(snapshot, CartSnapshot) and snapshot.lines[1].unit_price == Decimal("300.00")


def test_a_capture_pointing_off_the_store_keeps_no_link():
    capture = fixture("cart_updated_phone_only") | {"checkout_url": "https://evil.example/checkout/"}
    snapshot = parse("cart.updated", capture)
    assert isinstance(snapshot, CartSnapshot) and snapshot.checkout_url is None
    on_store = parse("cart.updated", fixture("cart_updated_phone_only"))
    assert isinstance(on_store, CartSnapshot) and on_store.checkout_url == "https://shop.example/checkout/"


def test_without_the_plugins_tick_there_is_no_consent():
    order = fixture("order_pending_razorpay")
    order["meta_data"] = [m for m in order["meta_data"] if not m["key"].startswith("cartback")]
    snapshot = parse("order.created", order)
    assert isinstance(snapshot, CartSnapshot) and not snapshot.buyer.marketing_consent


def test_the_block_checkouts_field_counts_as_the_tick():
    order = fixture("order_pending_razorpay")
    order["meta_data"] = [{"id": 1, "key": "_wc_other/cartback/whatsapp-optin", "value": "1"}]
    snapshot = parse("order.created", order)
    assert isinstance(snapshot, CartSnapshot) and snapshot.buyer.marketing_consent


def test_a_paid_order_is_the_conversion_with_our_code_and_the_shopper():
    order = parse("order.updated", fixture("order_processing_paid"))

    assert isinstance(order, OrderEvent)
    assert (order.order_id, order.cart_id, order.cart_token) == ("727", "order-727", "order-727")
    assert order.total == Decimal("1998.00") and order.currency == "INR"
    # Placed when paid (09:40), not when it was left pending (09:00).
    assert order.created_at == datetime(2026, 11, 28, 9, 40, tzinfo=UTC)
    # WooCommerce lower-cases coupon codes; ours are upper-case.
    assert order.discount_codes == ("CB-K7MQ3XZ9",)
    assert order.phone_e164 == "+919876543210" and order.email == "priya@example.com"


def test_an_order_from_a_captured_cart_is_that_cart():
    order = fixture("order_pending_razorpay")
    order["meta_data"].append(
        {"id": 9, "key": "cartback_cart_id", "value": "c3b1f0a2e4d54f7e9a0b1c2d3e4f5a6b"}
    )
    snapshot = parse("order.created", order)
    assert isinstance(snapshot, CartSnapshot)
    assert (snapshot.cart_id, snapshot.cart_token) == ("c3b1f0a2e4d54f7e9a0b1c2d3e4f5a6b", "order-727")


def test_a_bad_phone_makes_the_shopper_unreachable_not_the_delivery_refused():
    order = fixture("order_pending_razorpay")
    order["billing"] = order["billing"] | {"phone": "12345"}
    snapshot = parse("order.created", order)
    assert isinstance(snapshot, CartSnapshot) and snapshot.buyer.phone_e164 is None


def test_the_shipping_phone_stands_in_for_a_missing_billing_one():
    order = fixture("order_pending_razorpay")
    order["billing"] = order["billing"] | {"phone": ""}
    order["shipping"] = order["shipping"] | {"phone": "+91 91234 56789"}
    snapshot = parse("order.created", order)
    assert isinstance(snapshot, CartSnapshot) and snapshot.buyer.phone_e164 == "+919123456789"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"total": 2098.0}, "total"),
        ({"date_modified_gmt": "yesterday"}, "date_modified_gmt"),
        ({"currency": "rupees"}, "currency"),
        ({"line_items": [{"name": "Kurta", "quantity": 0, "subtotal": "1.00"}]}, "quantity"),
        ({"line_items": "none"}, "line_items"),
        ({"id": None}, "id"),
    ],
)
def test_a_malformed_order_is_refused_naming_the_field(change, field):
    with pytest.raises(PayloadError, match=field):
        parse("order.updated", fixture("order_pending_razorpay") | change)


def test_a_deleted_order_closes_its_cart_by_token():
    deleted = parse("order.deleted", {"id": 727})
    assert isinstance(deleted, CartDeleted) and deleted.cart_token == "order-727"


def test_a_phone_only_plugin_capture_is_a_reachable_cart():
    snapshot = parse("cart.updated", fixture("cart_updated_phone_only"))

    assert isinstance(snapshot, CartSnapshot)
    assert snapshot.cart_id == "c3b1f0a2e4d54f7e9a0b1c2d3e4f5a6b" and snapshot.cart_token is None
    assert snapshot.updated_at == datetime(2026, 11, 28, 9, 0, 0, 123456, tzinfo=UTC)
    assert snapshot.buyer.phone_e164 == "+919876543210" and snapshot.buyer.email is None
    assert snapshot.buyer.marketing_consent
    assert [(line.variant_id, line.unit_price) for line in snapshot.lines] == [
        ("94", Decimal("899.00")),
        ("22", Decimal("300.00")),
    ]
    assert snapshot.lines[0].variant_title == "Size: M"
    assert snapshot.billing["phone"] == "98765 43210" and snapshot.billing["country"] == "IN"


def test_an_emptied_cart_is_a_snapshot_without_lines():
    emptied = parse(
        "cart.emptied",
        {
            "cart_id": "c3b1f0a2e4d54f7e9a0b1c2d3e4f5a6b",
            "updated_at_gmt": "2026-11-28T09:10:00",
            "currency": "INR",
        },
    )
    assert isinstance(emptied, CartSnapshot) and emptied.lines == ()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"cart_id": "../../etc"}, "cart_id"),
        ({"whatsapp_optin": "yes"}, "whatsapp_optin"),
        ({"subtotal": 2098}, "subtotal"),
        ({"items": [{"product_id": 1, "name": "x", "quantity": 1, "price": 1.5}]}, "price"),
    ],
)
def test_a_malformed_capture_is_refused(change, field):
    with pytest.raises(PayloadError, match=field):
        parse("cart.updated", fixture("cart_updated_phone_only") | change)


def test_unknown_topics_are_acknowledged():
    assert isinstance(parse("product.updated", {"id": 1}), Ignored)


# -- the connector's webhook checks ---------------------------------------------------------


def test_the_signature_is_base64_hmac_sha256_of_the_raw_body():
    body = json.dumps(fixture("order_pending_razorpay")).encode()
    headers = signed_headers("order.created", body, "s3cret")
    assert connector.verify_webhook(body, headers, "s3cret")
    assert not connector.verify_webhook(body + b" ", headers, "s3cret")
    assert not connector.verify_webhook(body, headers, "other")
    assert not connector.verify_webhook(body, headers, "")


def test_the_identity_names_the_store_by_its_canonical_address():
    headers = signed_headers("order.updated", b"{}", "s") | {"X-WC-Webhook-Source": "HTTPS://Shop.Example/"}
    identity = connector.webhook_identity(headers)
    assert identity.store_ref == "https://shop.example" and identity.topic == "order.updated"
    with pytest.raises(WebhookRejected) as missing:
        connector.webhook_identity({"X-WC-Webhook-Topic": "order.updated"})
    assert missing.value.status == 400 and "X-WC-Webhook-Source" in missing.value.reason


def test_the_creation_ping_is_recognised_only_unsigned():
    assert connector.is_ping(b"webhook_id=15", {})
    assert not connector.is_ping(b"webhook_id=15", {"X-WC-Webhook-Signature": sign("s", b"webhook_id=15")})
    assert not connector.is_ping(b'{"id": 15}', {})


def test_deliveries_are_the_same_event_by_order_status_and_modification_not_delivery_id():
    body = json.dumps(fixture("order_pending_razorpay")).encode()
    first = WebhookIdentity(SITE, "order.created", "5:aaaa")
    again = WebhookIdentity(SITE, "order.updated", "6:bbbb")
    other_store = WebhookIdentity("https://other.example", "order.created", "5:aaaa")
    paid = json.dumps(fixture("order_processing_paid")).encode()

    assert connector.delivery_key(first, body) == connector.delivery_key(again, body)
    assert connector.delivery_key(first, body) != connector.delivery_key(first, paid)
    assert connector.delivery_key(first, body) != connector.delivery_key(other_store, body)


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("https://Shop.Example/", "https://shop.example"),
        ("https://shop.example:443/store/", "https://shop.example/store"),
        ("https://shop.example:8443", "https://shop.example:8443"),
        ("http://shop.example", "http://shop.example"),
    ],
)
def test_store_addresses_are_named_one_way(given, canonical):
    assert canonical_site_url(given) == canonical


@pytest.mark.parametrize("given", ["shop.example", "ftp://shop.example", "https://user:pw@shop.example", ""])
def test_what_is_not_a_store_address_is_refused(given):
    with pytest.raises(ValueError):
        canonical_site_url(given)
