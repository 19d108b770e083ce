"""/api/whatsapp: the settings page's WhatsApp actions, each scoped to the session's own shop."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.shopify import SHOP
from tests.support.whatsapp import ACCESS_TOKEN, PHONE_NUMBER_ID, WABA_ID

NUMBER = {"waba_id": WABA_ID, "phone_number_id": PHONE_NUMBER_ID, "access_token": ACCESS_TOKEN}


@pytest.fixture
def merchant(shopify: Any, fake_graph: Any) -> Any:
    shopify.runtime.settings = shopify.runtime.settings.with_overrides(whatsapp_graph_url=fake_graph.url)
    shopify.install()
    return shopify


def _call(merchant: Any, method: str, path: str, shop: str = SHOP, **kwargs: Any) -> Any:
    token = merchant.fake.session_token(shop)
    return merchant.client.open(path, method=method, headers={"Authorization": f"Bearer {token}"}, **kwargs)


def test_connecting_a_number_checks_it_and_never_shows_the_token(merchant, fake_graph):
    response = _call(merchant, "PUT", "/api/whatsapp", json=NUMBER)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["check"]["ok"] is True
    assert body["number"]["verified_name"] == "Kurta Corner" and body["number"]["quality_rating"] == "GREEN"
    assert ACCESS_TOKEN not in response.get_data(as_text=True)
    assert fake_graph.subscribed(WABA_ID)


def test_a_wrong_field_is_named_and_nothing_is_saved(merchant):
    response = _call(merchant, "PUT", "/api/whatsapp", json=NUMBER | {"phone_number_id": "+91 90000 00001"})
    assert response.status_code == 422 and "not the phone number" in response.get_json()["error"]
    missing = _call(merchant, "PUT", "/api/whatsapp", json={"waba_id": WABA_ID})
    assert missing.status_code == 422 and set(missing.get_json()["fields"]) == {
        "phone_number_id",
        "access_token",
    }
    assert _call(merchant, "GET", "/api/whatsapp").get_json()["number"] is None


def test_the_check_reports_a_revoked_token_in_words(merchant, fake_graph):
    _call(merchant, "PUT", "/api/whatsapp", json=NUMBER)
    fake_graph.revoke_token(ACCESS_TOKEN)
    body = _call(merchant, "POST", "/api/whatsapp/check").get_json()
    assert body["ok"] is False and "system-user token" in body["problems"][0]


def test_the_merchant_pauses_and_resumes_sending(merchant):
    paused = _call(merchant, "POST", "/api/whatsapp/pause").get_json()
    assert paused == {"paused": True, "reason": "paused by the merchant", "by": "merchant"}
    assert _call(merchant, "POST", "/api/whatsapp/resume").get_json()["paused"] is False


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/whatsapp"),
        ("PUT", "/api/whatsapp"),
        ("POST", "/api/whatsapp/check"),
        ("POST", "/api/whatsapp/pause"),
        ("POST", "/api/whatsapp/resume"),
    ],
)
def test_every_action_needs_a_session_and_sees_only_its_own_shop(merchant, method, path):
    _call(merchant, "PUT", "/api/whatsapp", json=NUMBER)
    anonymous = merchant.client.open(
        path, method=method, headers={"Authorization": "Bearer nope"}, json=NUMBER
    )
    assert anonymous.status_code == 401
    merchant.fake.add_shop("other.myshopify.com")
    theirs = _call(merchant, method, path, shop="other.myshopify.com", json={"waba_id": "1"})
    assert PHONE_NUMBER_ID not in theirs.get_data(as_text=True)
    mine = _call(merchant, "GET", "/api/whatsapp").get_json()
    assert mine["number"]["phone_number_id"] == PHONE_NUMBER_ID and mine["sending"]["paused"] is False


@pytest.mark.parametrize(
    "changes",
    [{"access_token": "é" * 30}, {"waba_id": "1" * 100}, {"phone_number_id": "١٢٣٤٥"}],
)
def test_ids_and_tokens_that_cannot_reach_meta_are_refused_with_422(merchant, changes):
    response = _call(merchant, "PUT", "/api/whatsapp", json=NUMBER | changes)
    assert response.status_code == 422
    assert _call(merchant, "GET", "/api/whatsapp").get_json()["number"] is None


def test_a_merchant_pause_outlasts_a_quality_pause(merchant, fake_graph):
    _call(merchant, "PUT", "/api/whatsapp", json=NUMBER)
    fake_graph.set_quality(PHONE_NUMBER_ID, "RED")
    _call(merchant, "POST", "/api/whatsapp/check")
    assert _call(merchant, "POST", "/api/whatsapp/pause").get_json()["by"] == "merchant"
    fake_graph.set_quality(PHONE_NUMBER_ID, "GREEN")
    _call(merchant, "POST", "/api/whatsapp/check")
    assert _call(merchant, "GET", "/api/whatsapp").get_json()["sending"]["paused"] is True
