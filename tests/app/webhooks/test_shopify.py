"""POST /webhooks/shopify and /webhooks/shopify/compliance: what Shopify (and its app review) expects."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import timedelta

import pytest
from sqlmodel import func, select

from sequences.models import Cart, CartStatus, Contact, DataExport, Message, Store, WebhookDelivery
from tests.support.factories import collect_spooled, replay_answer
from tests.support.shopify import SHOP, fixture

MIN = timedelta(minutes=1)
PATHS = ["/webhooks/shopify", "/webhooks/shopify/compliance"]


def deliveries(shopify) -> int:
    """Deliveries stored, spooled ones included (a worker's drain moves those in first)."""
    collect_spooled(shopify.runtime)
    with shopify.runtime.database.session() as session:
        return session.exec(select(func.count()).select_from(WebhookDelivery)).one()


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    "topic", ["checkouts/update", "customers/redact", "shop/redact", "customers/data_request"]
)
def test_a_bad_hmac_gets_401_on_every_endpoint_even_for_an_unknown_shop(shopify, path, topic):
    forged = shopify.post(topic, fixture("customers_redact"), path=path, secret="x" * 40)
    unknown_shop = shopify.post(
        topic, fixture("customers_redact"), path=path, secret="y" * 40, shop="nobody.myshopify.com"
    )
    assert (forged.status_code, unknown_shop.status_code) == (401, 401)
    assert "signature" in forged.get_json()["error"]


@pytest.mark.parametrize("path", PATHS)
def test_a_missing_hmac_header_is_401_too(shopify, path):
    body, headers = shopify.fake.signed_webhook(SHOP, "shop/redact", fixture("shop_redact"))
    del headers["X-Shopify-Hmac-Sha256"]
    assert shopify.client.post(path, data=body, headers=headers).status_code == 401


@pytest.mark.postgres
def test_a_signed_checkout_with_a_nul_in_a_name_is_400_and_stores_nothing(shopify):
    # PostgreSQL cannot store NUL in text: accepted, it would fail in the worker, every retry.
    shopify.install()
    checkout = fixture("checkouts_update") | {"email": "asha\u0000@example.com"}

    response = shopify.post("checkouts/update", checkout)

    assert response.status_code == 400 and "NUL" in response.get_json()["error"]
    with shopify.runtime.database.session() as session:
        assert session.exec(select(func.count()).select_from(WebhookDelivery)).one() == 0


def test_a_body_that_is_not_utf8_cannot_be_verified(shopify):
    body, headers = shopify.fake.signed_webhook(SHOP, "checkouts/update", {})
    assert (
        shopify.client.post("/webhooks/shopify", data=b"\xff\xfe" + body, headers=headers).status_code == 401
    )


@pytest.mark.parametrize("path", PATHS)
def test_a_signed_delivery_for_a_shop_that_is_not_installed_is_acknowledged_and_dropped(shopify, path):
    response = shopify.post("customers/redact", fixture("customers_redact"), path=path)
    assert response.status_code == 200 and response.get_json()["status"] == "ignored"
    assert deliveries(shopify) == 0


def test_a_signed_delivery_for_an_uninstalled_shop_is_acknowledged_and_dropped(shopify):
    shopify.install()
    with shopify.at(MIN):
        shopify.post("app/uninstalled", fixture("app_uninstalled"))
    with shopify.at(2 * MIN):
        response = shopify.post("checkouts/update", fixture("checkouts_create"))
    assert response.status_code == 200 and response.get_json()["status"] == "ignored"


def test_malformed_json_is_400_and_a_bad_field_is_422_with_the_reason(shopify):
    shopify.install()
    _, headers = shopify.fake.signed_webhook(SHOP, "checkouts/update", {})
    broken = b"{not json"
    digest = hmac.new(shopify.fake.client_secret.encode(), broken, hashlib.sha256).digest()
    headers["X-Shopify-Hmac-Sha256"] = base64.b64encode(digest).decode()
    assert shopify.client.post("/webhooks/shopify", data=broken, headers=headers).status_code == 400
    bad = shopify.post("checkouts/update", fixture("checkouts_create") | {"total_price": 12.5})
    assert bad.status_code == 422 and "total_price" in bad.get_json()["error"]
    assert deliveries(shopify) == 0


def test_an_oversized_body_is_413(shopify):
    shopify.install()
    huge = fixture("checkouts_create") | {"note": "x" * (shopify.runtime.settings.max_webhook_bytes + 10)}
    assert shopify.post("checkouts/update", huge).status_code == 413


def test_a_replay_with_the_same_webhook_id_or_event_id_changes_nothing(shopify):
    shopify.install()
    payload = fixture("checkouts_create")
    first = shopify.post("checkouts/update", payload, webhook_id="wh-1", event_id="ev-1")
    same_delivery = shopify.post("checkouts/update", payload, webhook_id="wh-1", event_id="ev-1")
    # The same event delivered again under a new delivery id, with a different body order.
    same_event = shopify.post(
        "checkouts/update", dict(reversed(payload.items())), webhook_id="wh-2", event_id="ev-1"
    )
    assert first.get_json()["status"] == "accepted"
    assert same_delivery.get_json()["status"] == replay_answer(shopify.runtime)
    assert same_event.get_json()["status"] == replay_answer(shopify.runtime)
    assert deliveries(shopify) == 1


def test_an_older_update_arriving_late_is_ignored(shopify):
    shopify.install()
    newer = shopify.checkout(10 * MIN, name="checkouts_update")
    shopify.checkout(5 * MIN, name="checkouts_create")  # Shopify retries are not ordered
    cart = shopify.cart(newer["token"])
    assert str(cart.total) == newer["total_price"]


def test_checkouts_delete_without_a_token_finds_the_cart_by_cart_token(shopify):
    shopify.install()
    checkout = shopify.checkout()
    shopify.webhook(MIN, "checkouts/delete", fixture("checkouts_delete"))
    cart = shopify.cart(checkout["token"])
    assert cart.status == CartStatus.EXPIRED and "deleted" in (cart.status_reason or "")


# -- compliance ----------------------------------------------------------------------------


def test_data_request_produces_an_export_the_merchant_downloads_for_their_shop_only(shopify):
    shopify.install()
    shopify.checkout()
    response = shopify.webhook(
        MIN, "customers/data_request", fixture("customers_data_request"), path=PATHS[1]
    )
    assert response.status_code == 200
    with shopify.runtime.database.session() as session:
        export = session.exec(select(DataExport)).one()
    contact = export.content["contacts"][0]
    assert contact["contact"]["phone_e164"] == "+919876543210"
    assert contact["carts"][0]["lines"]
    assert export.request_ref == str(fixture("customers_data_request")["data_request"]["id"])

    with shopify.at(2 * MIN):
        token = shopify.fake.session_token(SHOP)
        mine = shopify.client.get(
            f"/api/data-exports/{export.id}", headers={"Authorization": f"Bearer {token}"}
        )
        shopify.fake.add_shop("other.myshopify.com")
        other = shopify.fake.session_token("other.myshopify.com")
        theirs = shopify.client.get(
            f"/api/data-exports/{export.id}", headers={"Authorization": f"Bearer {other}"}
        )
        anonymous = shopify.client.get(
            f"/api/data-exports/{export.id}", headers={"Authorization": "Bearer nope"}
        )
    assert mine.status_code == 200 and mine.get_json()["content"]["found"] is True
    assert theirs.status_code == 404
    assert anonymous.status_code == 401


def test_customers_redact_erases_the_customer_and_their_exports(shopify):
    shopify.install()
    shopify.checkout()
    shopify.run(15 * MIN)
    shopify.webhook(16 * MIN, "customers/data_request", fixture("customers_data_request"), path=PATHS[1])
    shopify.webhook(17 * MIN, "customers/redact", fixture("customers_redact"), path=PATHS[1])
    with shopify.runtime.database.session() as session:
        contact = session.exec(select(Contact)).one()
        messages = session.exec(select(Message)).all()
        exports = session.exec(select(DataExport)).all()
    assert not contact.phone_e164.startswith("+") and contact.email is None and contact.first_name is None
    assert all(message.preview == {"erased": True} for message in messages)
    assert exports == []
    assert shopify.outbox() == []


@pytest.mark.postgres
def test_shop_redact_after_uninstall_deletes_everything_held_for_the_shop(shopify):
    from app.admin.session import issue_login_link
    from sequences.models import AdminLogin, SettingsChange

    store = shopify.install()
    shopify.checkout()
    shopify.run(15 * MIN)
    # The merchant's admin left a sign-in link and an audit entry behind (rows that point at the store).
    issue_login_link(shopify.runtime, store.id, "test")
    token = shopify.fake.session_token(shopify.shop)
    payload = shopify.client.get("/api/settings", headers={"Authorization": f"Bearer {token}"}).get_json()
    shopify.client.put(
        "/api/settings",
        json=payload["settings"] | {"inactivity_minutes": 10},
        headers={"Authorization": f"Bearer {token}"},
    )
    with shopify.at(20 * MIN):
        shopify.post("app/uninstalled", fixture("app_uninstalled"))
    response = shopify.webhook(48 * 60 * MIN, "shop/redact", fixture("shop_redact"), path=PATHS[1])
    assert response.status_code == 200
    with shopify.runtime.database.session() as session:
        for model in (Store, Cart, Contact, Message, WebhookDelivery, AdminLogin, SettingsChange):
            assert session.exec(select(func.count()).select_from(model)).one() == 0, model.__name__
    # Shopify may send it again: nothing left, acknowledged.
    again = shopify.webhook(49 * 60 * MIN, "shop/redact", fixture("shop_redact"), path=PATHS[1])
    assert again.status_code == 200 and again.get_json()["status"] == "ignored"


def test_the_same_customer_asking_again_later_is_not_taken_for_a_replay(shopify):
    shopify.install()
    shopify.checkout()
    first = shopify.webhook(MIN, "customers/redact", fixture("customers_redact"), path=PATHS[1])
    shopify.checkout(10 * MIN, name="checkouts_update")  # they shop again: a new contact
    second = shopify.webhook(60 * MIN, "customers/redact", fixture("customers_redact"), path=PATHS[1])
    assert (first.get_json()["status"], second.get_json()["status"]) == ("accepted", "accepted")
    with shopify.runtime.database.session() as session:
        assert all(not contact.phone_e164.startswith("+") for contact in session.exec(select(Contact)).all())


def test_headers_without_the_x_prefix_are_read_too(shopify):
    shopify.install()
    body, headers = shopify.fake.signed_webhook(SHOP, "checkouts/update", fixture("checkouts_create"))
    bare = {name.removeprefix("X-"): value for name, value in headers.items()}
    response = shopify.client.post("/webhooks/shopify", data=body, headers=bare)
    assert response.status_code == 200 and response.get_json()["status"] == "accepted"


def test_a_delete_whose_cart_token_fits_two_open_checkouts_closes_neither(shopify):
    shopify.install()
    first = shopify.checkout()
    second = shopify.checkout(MIN, token="c0ffee" * 5 + "00")  # same storefront cart, checked out again
    shopify.webhook(2 * MIN, "checkouts/delete", fixture("checkouts_delete"))
    assert shopify.cart(first["token"]).status == CartStatus.ACTIVE
    assert shopify.cart(second["token"]).status == CartStatus.ACTIVE


def test_an_export_found_by_email_alone_is_erased_with_the_customer(shopify):
    shopify.install()
    shopify.checkout()
    by_email = fixture("customers_data_request")
    by_email["customer"] = {"id": None, "email": by_email["customer"]["email"], "phone": None}
    shopify.webhook(MIN, "customers/data_request", by_email, path=PATHS[1])
    shopify.webhook(2 * MIN, "customers/redact", fixture("customers_redact"), path=PATHS[1])
    with shopify.runtime.database.session() as session:
        assert session.exec(select(DataExport)).all() == []
