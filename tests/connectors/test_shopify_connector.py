"""The Shopify connector against the fake Shopify: shapes sent, answers understood."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from connectors.base import CartLine as SnapshotLine
from connectors.base import (
    CheckoutRef,
    DiscountKind,
    DiscountRequest,
    HeaderMap,
    PlatformError,
    PlatformUnauthorized,
    StoreAccess,
    WebhookRejected,
)
from connectors.shopify import ShopifyConnector
from tests.fakes.shopify import FakeShopify
from tests.support.shopify import SHOP


@pytest.fixture
def fake(fake_shopify: FakeShopify) -> FakeShopify:
    """The fake Shopify with one shop (tests/conftest.py), under a shorter name."""
    return fake_shopify


@pytest.fixture
def connector(fake: FakeShopify) -> ShopifyConnector:
    return ShopifyConnector(
        fake.client_id, fake.client_secret, admin_url_template=fake.admin_url_template(), sleep=lambda _: None
    )


@pytest.fixture
def access(fake: FakeShopify) -> StoreAccess:
    token, _ = fake.issue_token(SHOP)
    return StoreAccess(SHOP, "", token, fake.storefront_url(SHOP))


def request(code: str = "CB-TEST2345") -> DiscountRequest:
    return DiscountRequest(
        code, DiscountKind.FIXED, Decimal("100"), "INR", datetime.now(UTC) + timedelta(days=2), Decimal("999")
    )


def test_a_code_already_made_by_an_earlier_attempt_is_taken_over_not_refused(connector, access, fake):
    first = connector.create_discount(access, request())
    again = connector.create_discount(access, request())  # its answer was lost; the shopper taps again
    assert again.platform_discount_id == first.platform_discount_id
    assert len(fake.calls("CartbackDiscountByCode")) == 1


def test_other_user_errors_are_raised_with_the_field_and_message(connector, access, fake):
    fake.fail_next(
        "CartbackDiscountCreate",
        [{"field": ["basicCodeDiscount", "code"], "code": "INVALID", "message": "bad"}],
    )
    with pytest.raises(PlatformError, match=r"basicCodeDiscount\.code: bad") as raised:
        connector.create_discount(access, request())
    assert not raised.value.retryable


def test_a_throttled_call_that_stays_throttled_is_retryable(connector, access, fake):
    fake.throttle_next(10)
    with pytest.raises(PlatformError) as raised:
        connector.create_discount(access, request())
    assert raised.value.retryable


def test_a_revoked_token_is_unauthorized(connector, access, fake):
    fake.revoke_all(SHOP)
    with pytest.raises(PlatformUnauthorized):
        connector.create_discount(access, request())


def test_deleting_a_code_the_merchant_already_deleted_is_fine(connector, access, fake):
    created = connector.create_discount(access, request())
    connector.delete_discount(access, created.platform_discount_id)
    connector.delete_discount(access, created.platform_discount_id)


def test_images_come_from_the_variant_else_its_product_in_one_call(connector, access, fake):
    fake.add_variant(1, image_url="https://cdn.shopify.com/v1.jpg")
    fake.add_variant(2, product_image_url="https://cdn.shopify.com/p2.jpg")
    images = connector.fetch_variant_images(access, ["1", "2", "3"])
    assert images == {"1": "https://cdn.shopify.com/v1.jpg", "2": "https://cdn.shopify.com/p2.jpg", "3": None}
    assert len(fake.calls("CartbackVariantImages")) == 1


def test_the_rebuilt_checkout_keeps_its_key_and_adds_the_code(connector, access, fake):
    url = fake.checkout_url(SHOP, "tok1")
    rebuilt = connector.rebuild_checkout(access, CheckoutRef("tok1", None, url, []), "CB-ABC").url
    assert rebuilt.startswith(url) and rebuilt.endswith("&discount=CB-ABC")
    permalink = connector.rebuild_checkout(
        access,
        CheckoutRef("tok1", None, None, [SnapshotLine("Kurta", 2, Decimal("1"), variant_id="11")]),
        "CB-ABC",
    ).url
    assert permalink == f"{fake.storefront_url(SHOP)}/cart/11:2?discount=CB-ABC"


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"X-Shopify-Topic": "checkouts/update", "X-Shopify-Webhook-Id": "1"}, "X-Shopify-Shop-Domain"),
        (
            {
                "X-Shopify-Shop-Domain": "evil.example.com",
                "X-Shopify-Topic": "t",
                "X-Shopify-Webhook-Id": "1",
            },
            "myshopify",
        ),
    ],
)
def test_webhook_headers_that_name_no_shop_are_refused(connector, headers, reason):
    with pytest.raises(WebhookRejected, match=reason):
        connector.webhook_identity(HeaderMap(headers))
