"""The Shopify fake refuses what Shopify refuses, so connector tests against it mean something."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from shopify_app.types import AppConfig, RequestInput
from shopify_app.verify.webhook import verify_webhook_req

from tests.fakes.shopify import FakeShopify
from tests.fakes.shopify_admin_graphql import INVALID_TOKEN
from tests.fakes.shopify_oauth import ID_TOKEN_TYPE, OFFLINE_TOKEN_TYPE, TOKEN_EXCHANGE_GRANT

SHOP = "bazaar.myshopify.com"

DISCOUNT_CREATE = """
mutation CartbackDiscountCreate($basicCodeDiscount: DiscountCodeBasicInput!) {
  discountCodeBasicCreate(basicCodeDiscount: $basicCodeDiscount) {
    codeDiscountNode { id }
    userErrors { field code message }
  }
}
"""
SHOP_QUERY = "query CartbackShop { shop { name } }"
VARIANT_IMAGES = "query CartbackVariantImages($ids: [ID!]!) { nodes(ids: $ids) { id } }"
ORDER_STATUSES = "query CartbackOrderStatuses($ids: [ID!]!) { nodes(ids: $ids) { id } }"
WHATSAPP_OPT_OUT = """
mutation CartbackWhatsAppOptOut($input: CustomerWhatsAppMarketingConsentUpdateInput!) {
  customerWhatsAppMarketingConsentUpdate(input: $input) { userErrors { field code message } }
}
"""


@pytest.fixture
def fake(fake_shopify: FakeShopify) -> FakeShopify:
    """The fake Shopify with one shop (tests/conftest.py), under a shorter name."""
    return fake_shopify


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5, trust_env=False) as client:
        yield client


def exchange(fake: FakeShopify, http: httpx.Client, session_token: str, **overrides: Any) -> httpx.Response:
    body = {
        "client_id": fake.client_id,
        "client_secret": fake.client_secret,
        "grant_type": TOKEN_EXCHANGE_GRANT,
        "subject_token": session_token,
        "subject_token_type": ID_TOKEN_TYPE,
        "requested_token_type": OFFLINE_TOKEN_TYPE,
        "expiring": 1,
    } | overrides
    return http.post(f"{fake.storefront_url(SHOP)}/admin/oauth/access_token", json=body)


def refresh(fake: FakeShopify, http: httpx.Client, refresh_token: str) -> httpx.Response:
    body = {
        "client_id": fake.client_id,
        "client_secret": fake.client_secret,
        "grant_type": "refresh_token",
        "refresh_token": refresh_token,
    }
    return http.post(f"{fake.storefront_url(SHOP)}/admin/oauth/access_token", json=body)


def graphql(
    fake: FakeShopify,
    http: httpx.Client,
    query: str,
    variables: dict[str, Any] | None = None,
    *,
    token: str = "",
) -> httpx.Response:
    url = fake.admin_url_template().format(shop=SHOP, version=fake.api_version) + "/graphql.json"
    headers = {"X-Shopify-Access-Token": token} if token else {}
    return http.post(url, json={"query": query, "variables": variables or {}}, headers=headers)


def discount_input(code: str = "CB-7QX2", **overrides: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "title": "Cart recovery 10%",
        "code": code,
        "context": {"all": "ALL"},
        "startsAt": (now - timedelta(minutes=1)).isoformat(),
        "endsAt": (now + timedelta(days=2)).isoformat(),
        "usageLimit": 1,
        "appliesOncePerCustomer": True,
        "customerGets": {"value": {"percentage": 0.1}, "items": {"all": True}},
        "combinesWith": {"orderDiscounts": False, "productDiscounts": False, "shippingDiscounts": True},
    } | overrides


def create_discount(fake: FakeShopify, http: httpx.Client, given: dict[str, Any]) -> dict[str, Any]:
    access, _ = fake.issue_token(SHOP)
    answer = graphql(fake, http, DISCOUNT_CREATE, {"basicCodeDiscount": given}, token=access)
    assert answer.status_code == 200
    result: dict[str, Any] = answer.json()
    return result


# --- tokens ---------------------------------------------------------------------------------


def test_a_valid_session_token_is_exchanged_for_an_expiring_offline_token(fake, http):
    answer = exchange(fake, http, fake.session_token(SHOP))

    assert answer.status_code == 200
    token = answer.json()
    assert token["access_token"].startswith("shpat_") and token["refresh_token"].startswith("shprt_")
    assert token["expires_in"] == 3600 and token["refresh_token_expires_in"] == 7776000
    assert "write_discounts" in token["scope"].split(",")
    assert graphql(fake, http, SHOP_QUERY, token=token["access_token"]).status_code == 200


def test_a_form_encoded_exchange_without_expiring_gets_a_non_expiring_token(fake, http):
    body = {
        "client_id": fake.client_id,
        "client_secret": fake.client_secret,
        "grant_type": TOKEN_EXCHANGE_GRANT,
        "subject_token": fake.session_token(SHOP),
        "subject_token_type": ID_TOKEN_TYPE,
        "requested_token_type": OFFLINE_TOKEN_TYPE,
    }
    answer = http.post(f"{fake.storefront_url(SHOP)}/admin/oauth/access_token", data=body)

    assert answer.status_code == 200
    assert set(answer.json()) == {"access_token", "scope"}


@pytest.mark.parametrize(
    "forge",
    [
        {"secret": "another-apps-secret-0123456789abcdef"},
        {"aud": "another-client-id"},
        {"expires_in": -60},
        {"shop": "other.myshopify.com"},
    ],
    ids=["wrong-secret", "wrong-audience", "expired", "other-shop"],
)
def test_a_forged_session_token_is_refused(fake, http, forge):
    shop = forge.pop("shop", SHOP)
    answer = exchange(fake, http, fake.session_token(shop, **forge))

    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_subject_token"


def test_a_wrong_client_secret_is_an_invalid_client(fake, http):
    answer = exchange(fake, http, fake.session_token(SHOP), client_secret="guess")

    assert answer.status_code == 401
    assert answer.json()["error"] == "invalid_client"


def test_a_refresh_rotates_the_pair_and_the_old_refresh_token_is_refused(fake, http):
    _, first_refresh = fake.issue_token(SHOP)

    rotated = refresh(fake, http, first_refresh)
    replayed = refresh(fake, http, first_refresh)

    assert rotated.status_code == 200
    assert rotated.json()["refresh_token"] not in ("", first_refresh)
    assert (replayed.status_code, replayed.json()["error"]) == (400, "invalid_grant")
    assert refresh(fake, http, rotated.json()["refresh_token"]).status_code == 200


def test_an_uninstall_revokes_access_and_refresh_tokens(fake, http):
    access, refresh_token = fake.issue_token(SHOP)

    fake.revoke_all(SHOP)

    assert graphql(fake, http, SHOP_QUERY, token=access).status_code == 401
    assert refresh(fake, http, refresh_token).json()["error"] == "invalid_grant"


# --- GraphQL --------------------------------------------------------------------------------


def test_graphql_without_an_access_token_is_401(fake, http):
    answer = graphql(fake, http, SHOP_QUERY)

    assert answer.status_code == 401
    assert answer.json() == {"errors": INVALID_TOKEN}


def test_an_expired_access_token_is_401(fake, http):
    access, _ = fake.issue_token(SHOP)

    fake.expire_access_tokens(SHOP)

    assert graphql(fake, http, SHOP_QUERY, token=access).status_code == 401


def test_the_shop_query_answers_with_cost(fake, http):
    access, _ = fake.issue_token(SHOP)

    answer = graphql(fake, http, SHOP_QUERY, token=access).json()

    assert answer["data"]["shop"]["myshopifyDomain"] == SHOP
    assert answer["data"]["shop"]["primaryDomain"]["url"] == fake.storefront_url(SHOP)
    assert answer["extensions"]["cost"]["throttleStatus"]["maximumAvailable"] == 2000.0
    assert [request.operation for request in fake.requests] == ["CartbackShop"]


def test_throttle_next_answers_throttled_with_http_200(fake, http):
    access, _ = fake.issue_token(SHOP)
    fake.throttle_next()

    throttled = graphql(fake, http, SHOP_QUERY, token=access)
    after = graphql(fake, http, SHOP_QUERY, token=access)

    assert throttled.status_code == 200
    assert throttled.json()["errors"][0]["extensions"]["code"] == "THROTTLED"
    assert throttled.json()["extensions"]["cost"]["actualQueryCost"] is None
    assert "data" in after.json()


def test_an_anonymous_operation_is_refused(fake, http):
    access, _ = fake.issue_token(SHOP)

    answer = graphql(fake, http, "{ shop { name } }", token=access)

    assert answer.json()["errors"] == [{"message": "cartback fake: operations must be named"}]


def test_variant_images_fall_back_to_the_product_image_and_keep_order(fake, http):
    access, _ = fake.issue_token(SHOP)
    fake.add_variant(1, image_url="https://cdn.example/v1.jpg")
    fake.add_variant(2, product_image_url="https://cdn.example/p2.jpg")
    ids = [f"gid://shopify/ProductVariant/{n}" for n in (2, 9, 1)]

    nodes = graphql(fake, http, VARIANT_IMAGES, {"ids": ids}, token=access).json()["data"]["nodes"]

    assert nodes[0]["media"]["nodes"] == []
    assert nodes[0]["product"]["featuredMedia"]["preview"]["image"]["url"] == "https://cdn.example/p2.jpg"
    assert nodes[1] is None
    assert nodes[2]["media"]["nodes"][0]["preview"]["image"]["url"] == "https://cdn.example/v1.jpg"


def test_more_than_250_ids_are_refused(fake, http):
    access, _ = fake.issue_token(SHOP)
    ids = [f"gid://shopify/ProductVariant/{n}" for n in range(251)]

    answer = graphql(fake, http, VARIANT_IMAGES, {"ids": ids}, token=access).json()

    assert "ids: too many" in answer["errors"][0]["message"]


def test_a_refunded_order_reports_its_status_and_amounts(fake, http):
    access, _ = fake.issue_token(SHOP)
    fake.add_order(7, total="2098.00")
    fake.refund_order(7, "500.00")

    node = graphql(fake, http, ORDER_STATUSES, {"ids": ["gid://shopify/Order/7"]}, token=access).json()[
        "data"
    ]["nodes"][0]

    assert node["displayFinancialStatus"] == "PARTIALLY_REFUNDED"
    assert node["totalRefundedSet"]["presentmentMoney"] == {"amount": "500.0", "currencyCode": "INR"}


def test_a_whatsapp_opt_out_is_recorded(fake, http):
    access, _ = fake.issue_token(SHOP)
    fake.add_customer(5, phone="+919876543210")
    given = {"customerId": "gid://shopify/Customer/5", "whatsAppMarketingConsent": {"state": "UNSUBSCRIBED"}}

    answer = graphql(fake, http, WHATSAPP_OPT_OUT, {"input": given}, token=access).json()

    assert answer["data"]["customerWhatsAppMarketingConsentUpdate"]["userErrors"] == []
    assert fake.whatsapp_consent[(SHOP, "gid://shopify/Customer/5")] == "UNSUBSCRIBED"


# --- discounts ------------------------------------------------------------------------------


def test_a_discount_is_created(fake, http):
    answer = create_discount(fake, http, discount_input())

    created = answer["data"]["discountCodeBasicCreate"]
    assert created["userErrors"] == []
    assert created["codeDiscountNode"]["id"] == fake.discounts[SHOP]["CB-7QX2"].id


def test_a_duplicate_code_is_taken(fake, http):
    create_discount(fake, http, discount_input("CB-7QX2"))

    answer = create_discount(fake, http, discount_input("cb-7qx2"))

    assert answer["data"]["discountCodeBasicCreate"] == {
        "codeDiscountNode": None,
        "userErrors": [
            {
                "field": ["basicCodeDiscount", "code"],
                "code": "TAKEN",
                "message": "Code must be unique. Please try a different code.",
            }
        ],
    }


def test_a_wrongly_typed_input_is_an_invalid_variable(fake, http):
    answer = create_discount(fake, http, discount_input(customerGets={"value": {"percentage": "10%"}}))

    error = answer["errors"][0]
    assert error["extensions"]["code"] == "INVALID_VARIABLE"
    assert error["message"].startswith(
        "Variable $basicCodeDiscount of type DiscountCodeBasicInput! was provided invalid value"
    )


def test_an_end_before_the_start_is_a_user_error(fake, http):
    starts = datetime.now(UTC)
    given = discount_input(startsAt=starts.isoformat(), endsAt=(starts - timedelta(hours=1)).isoformat())

    errors = create_discount(fake, http, given)["data"]["discountCodeBasicCreate"]["userErrors"]

    assert [(error["field"], error["code"]) for error in errors] == [
        (["basicCodeDiscount", "endsAt"], "INVALID")
    ]


def test_fail_next_makes_the_next_mutation_fail_once(fake, http):
    problem = {"field": ["basicCodeDiscount"], "code": "INTERNAL_ERROR", "message": "try again"}
    fake.fail_next("CartbackDiscountCreate", [problem])

    first = create_discount(fake, http, discount_input())
    second = create_discount(fake, http, discount_input())

    assert first["data"]["discountCodeBasicCreate"] == {"codeDiscountNode": None, "userErrors": [problem]}
    assert second["data"]["discountCodeBasicCreate"]["userErrors"] == []


def test_a_discount_applies_on_the_recover_page_only_while_unused_and_unexpired(fake, http):
    now = datetime.now(UTC)
    create_discount(fake, http, discount_input("CB-FRESH"))
    create_discount(
        fake,
        http,
        discount_input(
            "CB-OLD",
            startsAt=(now - timedelta(days=3)).isoformat(),
            endsAt=(now - timedelta(days=1)).isoformat(),
        ),
    )

    def outcome(code: str) -> dict[str, Any]:
        answer = http.get(fake.checkout_url(SHOP, "c1a2b3", discount=code))
        assert answer.status_code == 200
        discount: dict[str, Any] = answer.json()["discount"]
        return discount

    assert outcome("CB-FRESH") == {"code": "CB-FRESH", "applied": True, "reason": None}
    assert outcome("CB-OLD")["reason"] == "expired"
    fake.redeem_discount(SHOP, "CB-FRESH")
    assert outcome("CB-FRESH") == {"code": "CB-FRESH", "applied": False, "reason": "usage_limit_reached"}


def test_a_recover_url_with_a_wrong_key_is_404(fake, http):
    fake.register_checkout(SHOP, "c1a2b3", "right-key")

    answer = http.get(f"{fake.storefront_url(SHOP)}/548380009/checkouts/c1a2b3/recover", params={"key": "x"})

    assert answer.status_code == 404


def test_a_cart_permalink_reports_the_discount(fake, http):
    create_discount(fake, http, discount_input("CB-CART"))

    answer = http.get(f"{fake.storefront_url(SHOP)}/cart/111:2,222:1", params={"discount": "CB-CART"})

    assert answer.json()["page"] == "cart"
    assert answer.json()["discount"]["applied"] is True


# --- webhooks -------------------------------------------------------------------------------


def test_a_signed_webhook_carries_an_hmac_of_the_exact_body(fake):
    body, headers = fake.signed_webhook(SHOP, "checkouts/update", {"id": 1, "note": "नमस्ते"})

    expected = hmac.new(fake.client_secret.encode(), body, hashlib.sha256).digest()
    assert base64.b64decode(headers["X-Shopify-Hmac-Sha256"]) == expected
    assert json.loads(body) == {"id": 1, "note": "नमस्ते"} and "नमस्ते".encode() in body
    assert headers["X-Shopify-Shop-Domain"] == SHOP and headers["X-Shopify-Topic"] == "checkouts/update"


def test_shopifys_own_library_accepts_the_signed_webhook(fake):
    body, headers = fake.signed_webhook(SHOP, "app/uninstalled", {"id": 1})
    config = AppConfig(client_id=fake.client_id, client_secret=fake.client_secret, old_client_secret=None)
    request = RequestInput(
        method="POST", headers=headers, url="https://app.example/hooks", body=body.decode()
    )

    assert verify_webhook_req(request, config).ok
