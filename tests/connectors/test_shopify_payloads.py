"""Shopify webhook bodies (fixtures shaped like Shopify's documented samples) -> common model."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from connectors.base import (
    CartDeleted,
    CartSnapshot,
    ConsentSource,
    CustomerDataRequest,
    CustomerRedact,
    Ignored,
    OrderEvent,
    PayloadError,
    StoreRedact,
)
from connectors.shopify import payloads

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "shopify"


def fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return data


def snapshot(name: str, **changes: Any) -> CartSnapshot:
    event = payloads.parse(
        "checkouts/update", fixture(name) | changes, default_region="IN", triggered_at=None
    )
    assert isinstance(event, CartSnapshot)
    return event


def test_an_indian_checkout_becomes_a_snapshot_keyed_by_its_token():
    cart = snapshot("checkouts_create")
    assert cart.cart_id == fixture("checkouts_create")["token"]
    assert cart.cart_token == fixture("checkouts_create")["cart_token"]
    assert cart.currency == "INR"
    assert cart.subtotal == Decimal("3297.00") and isinstance(cart.total, Decimal)
    assert [line.unit_price for line in cart.lines] == [
        Decimal(line["price"]) for line in fixture("checkouts_create")["line_items"]
    ]
    assert all(line.image_url is None for line in cart.lines)  # Shopify sends none: fetched later
    assert cart.buyer.phone_e164 == "+919876543210"
    assert cart.buyer.marketing_consent and cart.buyer.consent_source == ConsentSource.CHECKOUT_CHECKBOX
    assert cart.checkout_url and "/recover?key=" in cart.checkout_url
    assert not cart.completed


def test_a_checkout_without_any_phone_is_still_tracked_but_unreachable():
    cart = snapshot("checkouts_update_no_phone")
    assert cart.buyer.phone_e164 is None
    assert cart.lines


def test_an_invalid_test_number_falls_through_to_the_next_valid_one_read_in_its_country():
    cart = snapshot("checkouts_update_us_test_number")
    assert cart.buyer.phone_e164 == "+14155550132"
    assert cart.currency == "USD"


def test_prices_are_in_the_shoppers_presentment_currency():
    cart = snapshot("checkouts_update_presentment_currency")
    assert cart.currency == "USD"
    assert cart.total == Decimal("54.96")


def test_money_bags_win_over_shop_currency_amounts_when_present():
    cart = snapshot(
        "checkouts_create",
        total_price_set={
            "shop_money": {"amount": "3297.00", "currency_code": "INR"},
            "presentment_money": {"amount": "39.50", "currency_code": "USD"},
        },
        presentment_currency="USD",
    )
    assert (cart.total, cart.currency) == (Decimal("39.50"), "USD")


def test_fifty_lines_with_unicode_names_survive_intact():
    raw = fixture("checkouts_update_50_lines")
    cart = snapshot("checkouts_update_50_lines")
    assert len(cart.lines) == 50
    titles = [line.title for line in cart.lines]
    assert titles[0] == "हथकरघा सूती कुर्ता"
    assert any("🪔" in title for title in titles)
    assert sum((line.line_total for line in cart.lines), Decimal(0)) == Decimal(raw["subtotal_price"])


def test_a_completed_checkout_says_so():
    assert snapshot("checkouts_update_completed").completed


def test_checkouts_delete_has_no_token_so_it_carries_id_and_cart_token():
    event = payloads.parse(
        "checkouts/delete", fixture("checkouts_delete"), default_region="IN", triggered_at=None
    )
    assert isinstance(event, CartDeleted)
    assert event.cart_id == "38264917503291"
    assert event.cart_token == fixture("checkouts_create")["cart_token"]


def test_an_order_points_back_by_checkout_token_cart_token_and_our_code():
    event = payloads.parse("orders/create", fixture("orders_create"), default_region="IN", triggered_at=None)
    assert isinstance(event, OrderEvent)
    assert event.cart_id == fixture("checkouts_create")["token"]
    assert event.cart_token == fixture("checkouts_create")["cart_token"]
    assert event.discount_codes == ("CB-K7M2Q9XA",)
    assert event.total == Decimal("4696.00") and event.currency == "INR"


def test_privacy_requests_name_the_customer_by_id_email_and_phone():
    data_request = payloads.parse(
        "customers/data_request", fixture("customers_data_request"), default_region="IN", triggered_at=None
    )
    redact = payloads.parse(
        "customers/redact", fixture("customers_redact"), default_region="IN", triggered_at=None
    )
    shop = payloads.parse("shop/redact", fixture("shop_redact"), default_region="IN", triggered_at=None)
    assert isinstance(data_request, CustomerDataRequest) and data_request.request_id
    assert data_request.customer.phone_e164 == "+919876543210"
    assert isinstance(redact, CustomerRedact) and redact.customer.customer_id
    assert isinstance(shop, StoreRedact)


def test_an_older_api_version_with_an_id_but_no_token_still_has_an_identity():
    raw = fixture("checkouts_create")
    del raw["token"]
    raw["id"] = 450789469
    event = payloads.parse("checkouts/update", raw, default_region="IN", triggered_at=None)
    assert isinstance(event, CartSnapshot) and event.cart_id == "450789469"


def test_an_explicit_whatsapp_unsubscribe_outranks_the_sms_checkbox():
    raw = fixture("checkouts_create")
    raw["customer"]["whats_app_marketing_consent"] = {"state": "unsubscribed"}
    cart = payloads.parse("checkouts/update", raw, default_region="IN", triggered_at=None)
    assert isinstance(cart, CartSnapshot) and not cart.buyer.marketing_consent


def test_a_customer_subscribed_to_sms_marketing_consents_without_the_checkbox():
    raw = fixture("checkouts_create") | {"buyer_accepts_sms_marketing": False}
    raw["customer"]["sms_marketing_consent"] = {"state": "subscribed", "opt_in_level": "single_opt_in"}
    cart = payloads.parse("checkouts/update", raw, default_region="IN", triggered_at=None)
    assert isinstance(cart, CartSnapshot)
    assert cart.buyer.marketing_consent and cart.buyer.consent_source == ConsentSource.CUSTOMER_RECORD


def test_an_empty_array_for_a_missing_address_is_read_as_no_address():
    cart = snapshot("checkouts_update_no_phone", shipping_address=[], billing_address=[])
    assert cart.buyer.phone_e164 is None


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"line_items": "lots"}, "line_items"),
        ({"subtotal_price": 3297.0}, "subtotal_price"),
        ({"updated_at": "yesterday"}, "updated_at"),
        ({"presentment_currency": "rupees", "currency": None}, "presentment_currency"),
        ({"buyer_accepts_sms_marketing": "yes"}, "buyer_accepts_sms_marketing"),
        ({"customer": "Priya"}, "customer"),
    ],
)
def test_malformed_fields_are_refused_naming_the_field(changes: dict[str, Any], field: str):
    with pytest.raises(PayloadError, match=field):
        snapshot("checkouts_create", **changes)


def test_a_line_with_a_bad_quantity_is_refused_naming_the_line():
    raw = fixture("checkouts_create")
    raw["line_items"][1]["quantity"] = 0
    with pytest.raises(PayloadError, match=r"line_items\[1\]\.quantity"):
        payloads.parse("checkouts/update", raw, default_region="IN", triggered_at=None)


def test_topics_cartback_does_not_use_are_ignored():
    event = payloads.parse("products/update", {}, default_region="IN", triggered_at=None)
    assert isinstance(event, Ignored)


@pytest.mark.parametrize("moment", ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+01:00"])
def test_timestamps_out_of_range_are_refused_not_crashed_on(moment: str):
    with pytest.raises(PayloadError, match="updated_at"):
        snapshot("checkouts_create", updated_at=moment)


def test_a_privacy_request_naming_another_shop_is_refused():
    with pytest.raises(PayloadError, match="shop_domain"):
        payloads.parse(
            "customers/redact",
            fixture("customers_redact"),
            default_region="IN",
            triggered_at=None,
            shop="someone-else.myshopify.com",
        )
