"""The WooCommerce fake answers as WooCommerce does, so connector tests against it mean something."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import ssl
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import certifi
import httpx
import pytest
import requests
import time_machine
from werkzeug.wrappers import Request, Response
from woocommerce import API

from tests.fakes.woocommerce import FakeWooCommerce
from tests.fakes.woocommerce_storefront import cartback_pay_signature
from tests.support.http_server import ThreadedServer

NOON_IST = datetime(2026, 11, 28, 6, 30, tzinfo=UTC)  # 12:00 in Asia/Kolkata
ASHA = {"first_name": "Asha", "last_name": "Rao", "email": "asha@example.com", "phone": "+919800000001"}


@pytest.fixture
def fake() -> Iterator[FakeWooCommerce]:
    with FakeWooCommerce() as site:
        site.add_product(101, "Kurta", "1299.00", image="https://cdn.example/kurta.jpg", sku="KUR-1")
        site.add_product(102, "Saree", "2499.00", variations={201: ("Red", "2599.00")})
        yield site


@pytest.fixture
def api(fake: FakeWooCommerce) -> API:
    key, secret = fake.add_keys()
    return API(fake.url, key, secret, version="wc/v3", timeout=5, verify_ssl=fake.ca_bundle_path)


@pytest.fixture
def http(fake: FakeWooCommerce) -> Iterator[httpx.Client]:
    with httpx.Client(verify=fake.ssl_context(), timeout=5, trust_env=False) as client:
        yield client


class Receiver:
    """An HTTPS endpoint standing in for the app: records what it is sent, answers ``status``."""

    def __init__(self, fake: FakeWooCommerce, status: int = 200) -> None:
        certfile, keyfile = fake.issue_server_cert(["127.0.0.1"])
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certfile, keyfile)
        self.status = status
        self.received: list[tuple[str, dict[str, str], bytes]] = []
        self._server = ThreadedServer(self._app, name="app-receiver", ssl_context=context).start()
        self.url = f"{self._server.origin}/webhooks/woocommerce"

    def _app(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        self.received.append((request.path, dict(request.headers), request.get_data()))
        return Response("ok", status=self.status)(environ, start_response)

    def close(self) -> None:
        self._server.stop()


@pytest.fixture
def receiver(fake: FakeWooCommerce) -> Iterator[Receiver]:
    app = Receiver(fake)
    yield app
    app.close()


class Posts:
    """A ``fake.deliver`` hook: records what the fake sends and answers ``status``."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.posted: list[tuple[str, bytes, dict[str, str]]] = []

    def __call__(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        self.posted.append((url, body, headers))
        return self.status


def place(fake: FakeWooCommerce, **overrides: Any) -> dict[str, Any]:
    return fake.place_order(
        billing=overrides.pop("billing", ASHA), line_items=[(101, 0, 2), (102, 201, 1)], **overrides
    )


def signature(secret: str, body: bytes) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


# --- TLS and the REST index ------------------------------------------------------------------


def test_serves_https_that_httpx_and_requests_trust_through_the_fakes_ca(
    fake: FakeWooCommerce, http: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert fake.url.startswith("https://127.0.0.1:") and fake.home_url == fake.url + "/"
    index = http.get(f"{fake.url}/wp-json/").json()
    assert index["name"] == "Bazaar" and index["home"] == fake.url
    assert index["timezone_string"] == "Asia/Kolkata" and index["gmt_offset"] == 5.5
    assert "wc/v3" in index["namespaces"]

    assert requests.get(f"{fake.url}/wp-json/", verify=fake.ca_bundle_path, timeout=5).status_code == 200
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", fake.ca_bundle_path)
    assert requests.get(f"{fake.url}/wp-json/", timeout=5).json()["name"] == "Bazaar"
    with pytest.raises(requests.exceptions.SSLError):  # public CAs do not vouch for it
        requests.get(f"{fake.url}/wp-json/", verify=certifi.where(), timeout=5)


def test_general_settings_carry_currency_and_country(api: API) -> None:
    settings = {s["id"]: s for s in api.get("settings/general").json()}
    assert settings["woocommerce_currency"]["value"] == "INR"
    assert settings["woocommerce_default_country"]["value"] == "IN:KA"
    assert {"id", "label", "description", "type", "default", "tip", "value"} <= set(
        settings["woocommerce_currency"]
    )


# --- authentication --------------------------------------------------------------------------


def test_the_woocommerce_client_authenticates_with_basic_auth(fake: FakeWooCommerce, api: API) -> None:
    assert api.get("orders").status_code == 200
    assert fake.calls("GET", "/wp-json/wc/v3/orders")[-1].auth == "basic"


def test_a_host_that_strips_authorization_leaves_only_query_string_keys(fake: FakeWooCommerce) -> None:
    key, secret = fake.add_keys()
    fake.strip_authorization = True
    basic = API(fake.url, key, secret, verify_ssl=fake.ca_bundle_path)
    refused = basic.get("orders")
    assert refused.status_code == 401 and refused.json()["code"] == "woocommerce_rest_cannot_view"

    query = API(fake.url, key, secret, verify_ssl=fake.ca_bundle_path, query_string_auth=True)
    assert query.get("orders").status_code == 200
    assert fake.calls("GET", "/wp-json/wc/v3/orders")[-1].auth == "query"


def test_auth_failures_answer_as_woocommerce_does(fake: FakeWooCommerce, http: httpx.Client) -> None:
    key, secret = fake.add_keys()
    orders = f"{fake.url}/wp-json/wc/v3/orders"

    wrong_secret = http.get(orders, auth=(key, "cs_" + "0" * 40))
    assert wrong_secret.status_code == 401
    assert wrong_secret.json() == {
        "code": "woocommerce_rest_authentication_error",
        "message": "Consumer secret is invalid.",
        "data": {"status": 401},
    }
    # An unknown key is not an authentication error: the request runs as a guest.
    unknown = http.get(orders, auth=("ck_" + "1" * 40, secret)).json()
    assert (
        unknown["code"] == "woocommerce_rest_cannot_view"
        and unknown["message"] == "Sorry, you cannot list resources."
    )
    assert http.post(orders, json={}).json()["code"] == "woocommerce_rest_cannot_create"
    assert http.put(f"{orders}/5", json={}).json()["code"] == "woocommerce_rest_cannot_edit"
    assert http.delete(f"{orders}/5").json()["code"] == "woocommerce_rest_cannot_delete"

    read_key, read_secret = fake.add_keys("read")
    write = http.post(orders, json={}, auth=(read_key, read_secret))
    assert write.status_code == 401
    assert write.json()["message"] == "The API key provided does not have write permissions."

    fake.revoke_keys(key)
    assert http.get(orders, auth=(key, secret)).json()["code"] == "woocommerce_rest_cannot_view"
    missing = http.get(f"{fake.url}/wp-json/wc/v3/carts", auth=(read_key, read_secret))
    assert missing.status_code == 404 and missing.json()["code"] == "rest_no_route"


# --- paging and arguments --------------------------------------------------------------------


def test_orders_page_with_wordpress_headers_and_refuse_more_than_100_per_page(
    fake: FakeWooCommerce, api: API
) -> None:
    for _ in range(3):
        place(fake)
    first = api.get("orders", params={"per_page": 2})
    assert first.headers["X-WP-Total"] == "3" and first.headers["X-WP-TotalPages"] == "2"
    assert 'rel="next"' in first.headers["Link"]
    assert len(first.json()) == 2 and len(api.get("orders", params={"per_page": 2, "page": 2}).json()) == 1

    refused = api.get("orders", params={"per_page": 101})
    assert refused.status_code == 400
    assert refused.json()["code"] == "rest_invalid_param"
    assert refused.json()["data"]["params"] == {
        "per_page": "per_page must be between 1 (inclusive) and 100 (inclusive)"
    }
    bad_status = api.get("orders", params={"status": "paid"}).json()
    assert (
        bad_status["code"] == "rest_invalid_param"
        and "status[0] is not one of any, trash" in bad_status["data"]["params"]["status"]
    )


def test_modified_after_is_read_in_site_time_unless_dates_are_gmt(fake: FakeWooCommerce, api: API) -> None:
    with time_machine.travel(NOON_IST, tick=False):
        order = place(fake)
    assert (
        order["date_modified"] == "2026-11-28T12:00:00"
        and order["date_modified_gmt"] == "2026-11-28T06:30:00"
    )

    def ids(**query: str) -> list[int]:
        return [o["id"] for o in api.get("orders", params=query).json()]

    assert ids(modified_after="2026-11-28T11:59:00") == [order["id"]]
    assert ids(modified_after="2026-11-28T06:29:00", dates_are_gmt="true") == [order["id"]]
    assert ids(modified_after="2026-11-28T06:29:00Z") == [order["id"]]  # an offset is converted to site time
    assert ids(modified_after="2026-11-28T12:00:00") == []  # bounds are exclusive


# --- coupons ---------------------------------------------------------------------------------


def test_coupons_are_created_lower_cased_and_refused_twice(api: API) -> None:
    created = api.post(
        "coupons",
        {
            "code": "DIWALI10",
            "discount_type": "percent",
            "amount": "10",
            "usage_limit": 1,
            "date_expires": "2026-12-01T23:59:59+05:30",
            "date_expires_gmt": "2030-01-01T00:00:00",
        },
    )
    assert created.status_code == 201
    coupon = created.json()
    assert coupon["code"] == "diwali10" and coupon["amount"] == "10.00" and coupon["usage_count"] == 0
    assert coupon["date_expires_gmt"] == "2026-12-01T18:29:59"  # date_expires_gmt itself is ignored on write
    assert coupon["usage_limit_per_user"] is None and coupon["minimum_amount"] == "0.00"

    again = api.post("coupons", {"code": "Diwali10", "amount": "5"})
    assert again.status_code == 400 and again.json() == {
        "code": "woocommerce_rest_coupon_code_already_exists",
        "message": "The coupon code already exists",
        "data": {"status": 400},
    }
    assert [c["id"] for c in api.get("coupons", params={"code": "DIWALI10"}).json()] == [coupon["id"]]


def test_coupon_arguments_of_the_wrong_type_are_refused(api: API) -> None:
    assert api.post("coupons", {"amount": "5"}).json()["code"] == "rest_missing_callback_param"
    for body, param in (
        ({"code": "a1", "amount": 10}, "amount"),
        ({"code": "a2", "discount_type": "percent_off"}, "discount_type"),
        ({"code": "a3", "usage_limit": "once"}, "usage_limit"),
    ):
        refused = api.post("coupons", body).json()
        assert refused["code"] == "rest_invalid_param" and list(refused["data"]["params"]) == [param]
    assert (
        api.post("coupons", {"code": "a4", "discount_type": "fake"}).json()["data"]["params"]["discount_type"]
        == "discount_type is not one of percent, fixed_cart, and fixed_product."
    )


def test_deleting_a_coupon_trashes_it_unless_forced(api: API) -> None:
    coupon = api.post("coupons", {"code": "gone", "amount": "50"}).json()
    trashed = api.delete(f"coupons/{coupon['id']}")
    assert trashed.status_code == 200 and trashed.json()["id"] == coupon["id"]
    assert api.get(f"coupons/{coupon['id']}").json()["status"] == "trash"
    assert api.delete(f"coupons/{coupon['id']}").json()["code"] == "woocommerce_rest_already_trashed"
    assert api.delete(f"coupons/{coupon['id']}", params={"force": "true"}).status_code == 200
    missing = api.delete(f"coupons/{coupon['id']}", params={"force": "true"})
    assert missing.status_code == 404 and missing.json()["code"] == "woocommerce_rest_shop_coupon_invalid_id"


# --- orders ----------------------------------------------------------------------------------


def test_an_order_created_over_rest_is_priced_from_the_catalogue(api: API) -> None:
    created = api.post(
        "orders",
        {
            "billing": ASHA,
            "line_items": [{"product_id": 101, "quantity": 2}, {"product_id": 102, "variation_id": 201}],
            "meta_data": [{"key": "_cartback_cart", "value": "c-1"}],
        },
    )
    assert created.status_code == 201
    order = created.json()
    assert order["status"] == "pending" and order["created_via"] == "rest-api" and order["total"] == "5197.00"
    assert order["order_key"].startswith("wc_order_") and len(order["order_key"]) == len("wc_order_") + 13
    kurta, saree = order["line_items"]
    assert (kurta["subtotal"], kurta["price"], kurta["sku"]) == ("2598.00", 1299, "KUR-1")
    assert kurta["image"]["src"] == "https://cdn.example/kurta.jpg"
    assert (saree["product_id"], saree["variation_id"], saree["name"], saree["parent_name"]) == (
        102,
        201,
        "Saree - Red",
        "Saree",
    )
    assert (
        order["payment_url"]
        == f"{api.url}/checkout/order-pay/{order['id']}/?pay_for_order=true&key={order['order_key']}"
    )
    assert order["needs_payment"] is True and order["is_editable"] is True
    assert [m["key"] for m in order["meta_data"]] == ["_cartback_cart"]
    missing = api.get("orders/999999")
    assert missing.status_code == 404 and missing.json()["code"] == "woocommerce_rest_shop_order_invalid_id"


def test_an_empty_billing_email_is_not_an_email(api: API) -> None:
    refused = api.post("orders", {"billing": {**ASHA, "email": ""}, "line_items": [{"product_id": 101}]})
    assert refused.status_code == 400
    assert refused.json()["data"]["params"] == {"billing": "Invalid email address."}
    assert api.post("orders", {"billing": {**ASHA, "email": None}}).status_code == 201


def test_coupon_lines_replace_the_orders_coupons_and_retotal_it(fake: FakeWooCommerce, api: API) -> None:
    fake.add_coupon("save10", "10")
    fake.add_coupon("flat100", "100", discount_type="fixed_cart")
    order = place(fake)

    updated = api.put(f"orders/{order['id']}", {"coupon_lines": [{"code": "SAVE10"}]}).json()
    assert (updated["discount_total"], updated["total"]) == ("519.70", "4677.30")
    assert [(line["subtotal"], line["total"]) for line in updated["line_items"]] == [
        ("2598.00", "2338.20"),
        ("2599.00", "2339.10"),
    ]
    assert (
        updated["coupon_lines"][0]["code"] == "save10" and updated["coupon_lines"][0]["discount"] == "519.7"
    )
    assert fake.coupon("save10")["usage_count"] == 1  # type: ignore[index]

    replaced = api.put(f"orders/{order['id']}", {"coupon_lines": [{"code": "flat100"}]}).json()
    assert [line["code"] for line in replaced["coupon_lines"]] == ["flat100"]
    assert (replaced["discount_total"], replaced["total"]) == ("100.00", "5097.00")
    assert fake.coupon("save10")["usage_count"] == 0  # type: ignore[index]


def test_a_coupon_restricted_to_another_email_is_refused(fake: FakeWooCommerce, api: API) -> None:
    fake.add_coupon("vip", "20", email_restrictions=["vip@example.com"])
    order = place(fake)
    refused = api.put(f"orders/{order['id']}", {"coupon_lines": [{"code": "vip"}]})
    assert refused.status_code == 400
    assert refused.json() == {
        "code": "woocommerce_rest_invalid_coupon",
        "message": "Please enter a valid email at checkout to use coupon code &quot;vip&quot;.",
        "data": {"status": 400},
    }
    expired = fake.add_coupon("old", "5", date_expires="2020-01-01T00:00:00Z")
    message = api.put(f"orders/{order['id']}", {"coupon_lines": [{"code": expired["code"]}]}).json()[
        "message"
    ]
    assert message == "Coupon &quot;old&quot; has expired."


def test_an_order_whose_coupon_fails_on_creation_is_kept_as_a_draft(api: API) -> None:
    refused = api.post(
        "orders", {"billing": ASHA, "line_items": [{"product_id": 101}], "coupon_lines": [{"code": "nope"}]}
    )
    assert refused.status_code == 400
    body = refused.json()
    assert body["message"] == "Coupon &quot;nope&quot; cannot be applied because it does not exist."
    draft = api.get(f"orders/{body['data']['new_draft_order_id']}").json()
    assert draft["status"] == "checkout-draft"


# --- webhooks --------------------------------------------------------------------------------


def test_creating_a_webhook_pings_it_and_never_returns_the_secret(
    fake: FakeWooCommerce, api: API, receiver: Receiver
) -> None:
    created = api.post(
        "webhooks",
        {
            "name": "cartback",
            "topic": "order.updated",
            "delivery_url": receiver.url,
            "status": "paused",
            "secret": "s3cret",
        },
    )
    assert created.status_code == 201
    webhook = created.json()
    assert webhook["status"] == "active"  # the posted status is ignored on creation
    assert (webhook["resource"], webhook["event"]) == ("order", "updated")
    assert webhook["hooks"] == [
        "woocommerce_update_order",
        "woocommerce_order_refunded",
        "woocommerce_delete_order_refund",
    ]
    assert "secret" not in webhook and "api_version" not in webhook
    _, headers, body = receiver.received[0]
    assert body == f"webhook_id={webhook['id']}".encode()
    assert (
        headers["Content-Type"] == "application/x-www-form-urlencoded"
        and "X-Wc-Webhook-Signature" not in headers
    )
    assert fake.webhook(webhook["id"]).pending_delivery is False


def test_a_failed_ping_does_not_fail_the_creation(
    fake: FakeWooCommerce, api: API, receiver: Receiver
) -> None:
    receiver.status = 204  # only exactly 200 counts
    created = api.post("webhooks", {"topic": "order.created", "delivery_url": receiver.url})
    assert created.status_code == 201
    assert fake.pings[-1].status == 204 and fake.webhook(created.json()["id"]).pending_delivery is True


def test_webhook_arguments_are_checked_as_woocommerce_checks_them(api: API) -> None:
    assert api.post("webhooks", {"topic": "order.paid", "delivery_url": "https://a.example"}).json()[
        "code"
    ] == ("woocommerce_rest_shop_webhook_invalid_topic")
    missing = api.post("webhooks", {"topic": "order.created"}).json()
    assert missing["code"] == "rest_missing_callback_param" and missing["data"]["params"] == ["delivery_url"]
    assert api.post("webhooks", {"topic": "order.created", "delivery_url": "ftp://a.example"}).json()[
        "code"
    ] == ("woocommerce_rest_shop_webhook_invalid_delivery_url")
    assert api.delete("webhooks/1").json()["code"] == "woocommerce_rest_trash_not_supported"


def test_order_changes_are_delivered_signed_as_hookshot_sends_them(
    fake: FakeWooCommerce, api: API, receiver: Receiver
) -> None:
    for topic in ("order.created", "order.updated", "order.deleted", "order.restored"):
        api.post("webhooks", {"topic": topic, "delivery_url": receiver.url, "secret": "s3cret"})
    receiver.received.clear()

    order = place(fake)
    topics = [headers["X-Wc-Webhook-Topic"] for _, headers, _ in receiver.received]
    assert topics == ["order.created", "order.updated"]
    _, headers, body = receiver.received[0]
    assert headers["X-Wc-Webhook-Signature"] == signature("s3cret", body)
    assert (
        headers["User-Agent"].startswith("WooCommerce/") and "Hookshot (WordPress/" in headers["User-Agent"]
    )
    assert headers["X-Wc-Webhook-Source"] == fake.home_url and headers["X-Wc-Webhook-Resource"] == "order"
    assert b"\\/" in body  # wp_json_encode escapes slashes: verify the raw bytes
    assert json.loads(body)["id"] == order["id"] and json.loads(body)["total"] == "5197.00"

    receiver.received.clear()
    fake.trash(order["id"])
    fake.restore(order["id"])
    _, deleted_headers, deleted_body = receiver.received[0]
    assert (deleted_headers["X-Wc-Webhook-Topic"], json.loads(deleted_body)) == (
        "order.deleted",
        {"id": order["id"]},
    )
    assert receiver.received[1][1]["X-Wc-Webhook-Topic"] == "order.restored"
    assert [d.topic for d in fake.deliveries][-2:] == ["order.deleted", "order.restored"]


def test_delivery_ids_repeat_within_a_second(fake: FakeWooCommerce, api: API, receiver: Receiver) -> None:
    api.post("webhooks", {"topic": "order.updated", "delivery_url": receiver.url})
    with time_machine.travel(NOON_IST, tick=False):
        order = place(fake)
        fake.pay(order["id"])
    ids = [headers["X-Wc-Webhook-Delivery-Id"] for _, headers, _ in receiver.received[1:]]
    assert len(ids) == 2 and ids[0] == ids[1]


def test_a_webhook_is_disabled_after_consecutive_failures(fake: FakeWooCommerce, api: API) -> None:
    answers = iter([200] + [500] * 7)
    fake.deliver = lambda url, body, headers: next(answers)
    webhook = api.post(
        "webhooks", {"topic": "order.created", "delivery_url": "https://app.example/hooks"}
    ).json()
    for _ in range(8):
        place(fake)
    assert len(fake.deliveries) == 7  # failures 1-6 count up; the 7th disables (count > 5)
    assert fake.webhook(webhook["id"]).status == "disabled"
    assert api.get(f"webhooks/{webhook['id']}").json()["status"] == "disabled"


def test_a_successful_delivery_resets_the_failure_count(fake: FakeWooCommerce, api: API) -> None:
    answers = iter([200, 500, 500, 302])
    fake.deliver = lambda url, body, headers: next(answers)
    webhook = api.post(
        "webhooks", {"topic": "order.created", "delivery_url": "https://app.example/hooks"}
    ).json()
    place(fake)
    place(fake)
    assert fake.webhook(webhook["id"]).failure_count == 2
    place(fake)
    assert fake.webhook(webhook["id"]).failure_count == 0 and fake.deliveries[-1].ok


def test_dropped_deliveries_are_not_sent(fake: FakeWooCommerce, api: API) -> None:
    fake.deliver = sent = Posts()
    api.post("webhooks", {"topic": "order.created", "delivery_url": "https://app.example/hooks"})
    fake.drop_deliveries = True
    order = place(fake)
    assert (
        len(sent.posted) == 1
        and fake.deliveries == []
        and fake.dropped == [(1, "order.created", order["id"])]
    )


def test_signed_delivery_builds_what_woocommerce_would_post(fake: FakeWooCommerce) -> None:
    body, headers = fake.signed_delivery("order.deleted", {"id": 7}, "k", webhook_id=3)
    assert body == b'{"id":7}' and headers["X-WC-Webhook-Signature"] == signature("k", body)
    assert (headers["X-WC-Webhook-ID"], headers["X-WC-Webhook-Event"]) == ("3", "deleted")


# --- wc-auth ---------------------------------------------------------------------------------


def authorize_url(
    fake: FakeWooCommerce, callback_url: str = "https://app.example/woocommerce/callback"
) -> str:
    return fake.authorize_url(
        app_name="cartback",
        scope="read_write",
        user_id="state-123",
        return_url="https://app.example/woocommerce/return",
        callback_url=callback_url,
    )


def test_approving_posts_the_key_pair_and_redirects_to_return_url(
    fake: FakeWooCommerce, http: httpx.Client
) -> None:
    fake.deliver = posts = Posts()
    page = http.get(authorize_url(fake))
    assert page.status_code == 200 and "Approve" in page.text

    result = fake.approve(authorize_url(fake))
    assert result.error is None and result.key is not None
    assert result.redirect_url == "https://app.example/woocommerce/return?success=1&user_id=state-123"
    url, body, headers = posts.posted[0]
    assert url == "https://app.example/woocommerce/callback"
    assert headers["Content-Type"] == "application/json;charset=UTF-8"
    assert json.loads(body) == {
        "key_id": result.key.key_id,
        "user_id": "state-123",
        "consumer_key": result.key.consumer_key,
        "consumer_secret": result.key.consumer_secret,
        "key_permissions": "read_write",
    }
    assert (
        http.get(
            f"{fake.url}/wp-json/wc/v3/orders", auth=(result.key.consumer_key, result.key.consumer_secret)
        ).status_code
        == 200
    )


def test_a_callback_that_does_not_answer_200_loses_the_key(fake: FakeWooCommerce, http: httpx.Client) -> None:
    fake.deliver = lambda url, body, headers: 201
    result = fake.approve(authorize_url(fake))
    assert result.revoked and result.redirect_url is None and result.callback_status == 201
    assert (
        result.error
        == "Error: An error occurred in the request and at the time were unable to send the consumer data."
    )
    assert fake.site.keys == {}
    assert (
        fake.deny(authorize_url(fake)) == "https://app.example/woocommerce/return?success=0&user_id=state-123"
    )


def test_the_authorize_endpoint_validates_as_wc_auth_does(fake: FakeWooCommerce, http: httpx.Client) -> None:
    insecure = http.get(authorize_url(fake, callback_url="http://app.example/cb"))
    assert insecure.status_code == 401 and "Error: The callback_url needs to be over SSL." in insecure.text
    missing = http.get(f"{fake.url}/wc-auth/v1/authorize?app_name=cartback&scope=read")
    assert "Error: Missing parameter user_id." in missing.text


def test_the_approve_link_works_in_a_browser(
    fake: FakeWooCommerce, http: httpx.Client, receiver: Receiver
) -> None:
    page = http.get(authorize_url(fake, callback_url=receiver.url)).text
    approve = page.split('wc-auth-approve" href="')[1].split('"')[0].replace("&amp;", "&")
    granted = http.get(approve)
    assert granted.status_code == 302 and granted.headers["Location"].endswith("success=1&user_id=state-123")
    assert json.loads(receiver.received[0][2])["key_permissions"] == "read_write"


# --- storefront ------------------------------------------------------------------------------


def pay_page(http: httpx.Client, url: str) -> dict[str, Any]:
    return http.get(url).json()  # type: ignore[no-any-return]


def test_guests_verify_their_email_on_the_pay_page_after_ten_minutes(
    fake: FakeWooCommerce, http: httpx.Client
) -> None:
    with time_machine.travel(NOON_IST, tick=False) as clock:
        order = place(fake)
        fresh = pay_page(http, order["payment_url"])
        assert fresh["error"] is None and fresh["email_verification_required"] is False
        assert fresh["total"] == "5197.00" and fresh["needs_payment"] is True

        clock.shift(timedelta(minutes=11))
        assert pay_page(http, order["payment_url"])["email_verification_required"] is True
        wrong_key = order["payment_url"].replace(order["order_key"], "wc_order_nope")
        assert pay_page(http, wrong_key)["error"] == "Sorry, this order is invalid and cannot be paid for."


def test_the_companion_plugin_lifts_verification_for_a_valid_token(
    fake: FakeWooCommerce, http: httpx.Client
) -> None:
    fake.plugin_secret = "plugin-secret"
    with time_machine.travel(NOON_IST, tick=False) as clock:
        order = place(fake)
        clock.shift(timedelta(hours=1))
        expires = int(datetime.now(UTC).timestamp()) + 3600
        token = (
            f"{expires}.{cartback_pay_signature('plugin-secret', order['id'], order['order_key'], expires)}"
        )
        assert (
            pay_page(http, f"{order['payment_url']}&cartback_pay={token}")["email_verification_required"]
            is False
        )
        forged = f"{expires}.{cartback_pay_signature('other', order['id'], order['order_key'], expires)}"
        assert (
            pay_page(http, f"{order['payment_url']}&cartback_pay={forged}")["email_verification_required"]
            is True
        )
        clock.shift(timedelta(hours=2))  # the token has expired
        assert (
            pay_page(http, f"{order['payment_url']}&cartback_pay={token}")["email_verification_required"]
            is True
        )
    fake.pay(order["id"])
    assert "it cannot be paid for" in str(pay_page(http, order["payment_url"])["error"])


def test_checkout_links_fill_the_cart_and_apply_the_coupon(fake: FakeWooCommerce, http: httpx.Client) -> None:
    fake.add_coupon("save10", "10")
    page = http.get(
        f"{fake.url}/checkout-link/", params={"products": "101:2,201", "coupon": "SAVE10", "utm_source": "wa"}
    ).json()
    assert [(i["product_id"], i["variation_id"], i["quantity"]) for i in page["items"]] == [
        (101, 0, 2),
        (102, 201, 1),
    ]
    assert page["coupon"] == "save10" and page["coupon_applied"] is True and page["error"] is None
    assert [i["total"] for i in page["items"]] == ["2338.20", "2339.10"]
    query = parse_qs(urlsplit(page["redirect"]).query)
    assert query["utm_source"] == ["wa"] and "session" in query and "products" not in query

    unknown = http.get(f"{fake.url}/checkout-link/", params={"products": "999:1", "coupon": "nope"}).json()
    assert unknown["items"] == [] and unknown["error"] == (
        "Product with ID &quot;999&quot; was not found and cannot be added to the cart."
    )
    bad_coupon = http.get(f"{fake.url}/checkout-link/", params={"products": "101", "coupon": "nope"}).json()
    assert bad_coupon["coupon_applied"] is False
    assert bad_coupon["error"] == "Coupon &quot;nope&quot; cannot be applied because it does not exist."
