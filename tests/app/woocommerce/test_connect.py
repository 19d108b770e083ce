"""Connecting a WooCommerce store: /woocommerce/connect, /callback and /return (no store behind
it here; tests/app/woocommerce/test_flow.py runs the whole flow against the fake WooCommerce)."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
import time_machine
from sqlmodel import select

from app import create_app
from sequences.models import PlatformConnection, Store

APP = "https://cartback.test"
KEY = "ck_" + "a1" * 20
SECRET = "cs_" + "b2" * 20


def https_client(app):
    """A browser on cartback's https address (its Secure cookies are sent back)."""
    client = app.test_client()
    client.environ_base["wsgi.url_scheme"] = "https"
    return client


@pytest.fixture
def secure(runtime):
    """The app as deployed: APP_URL over https."""
    runtime.settings = runtime.settings.with_overrides(app_url=APP)
    return https_client(create_app(runtime=runtime))


def start(client, store_url: str = "https://shop.example") -> str:
    response = client.get("/woocommerce/connect", query_string={"store_url": store_url})
    assert response.status_code == 302, response.get_data(as_text=True)
    return response.headers["Location"]


def connection_id(location: str) -> str:
    return parse_qs(urlsplit(location).query)["user_id"][0]


def keys(connection: str, **changes: object) -> dict:
    return {
        "key_id": 1,
        "user_id": connection,
        "consumer_key": KEY,
        "consumer_secret": SECRET,
        "key_permissions": "read_write",
    } | changes


def test_without_an_address_the_merchant_is_asked_for_one(secure):
    page = secure.get("/woocommerce/connect")
    assert page.status_code == 200 and 'name="store_url"' in page.get_data(as_text=True)


def test_the_merchant_is_sent_to_their_stores_authorization_with_a_one_time_id(secure, runtime):
    location = start(secure, "Shop.Example/")
    parts = urlsplit(location)
    query = {name: values[0] for name, values in parse_qs(parts.query).items()}

    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == "https://shop.example/wc-auth/v1/authorize"
    assert query["app_name"] == "cartback" and query["scope"] == "read_write"
    assert query["return_url"] == f"{APP}/woocommerce/return"
    assert query["callback_url"] == f"{APP}/woocommerce/callback"
    with runtime.database.session() as session:
        [pending] = session.exec(select(PlatformConnection)).all()
    # Only a hash of the id is kept.
    assert pending.connection_sha256 == hashlib.sha256(query["user_id"].encode()).hexdigest()
    assert pending.store_url == "https://shop.example" and pending.keys_received_at is None
    assert start(secure) != location  # a new id each time


@pytest.mark.parametrize(
    ("store_url", "reason"),
    [
        ("http://shop.example", "https"),
        ("ftp://shop.example", "address"),
        ("https://" + "x" * 2100, "too long"),
        ("https://not a url", "spaces"),
        ("https://shop.example/\tpath", "spaces"),
        ("https://admin:pw@shop.example", "user name"),
        ("https://@shop.example", "user name"),
        ("https://shop..example", "host name"),
        ("https://-shop.example", "host name"),
        ("https://" + "a" * 64 + ".example", "host name"),
        ("https://999.1.1.1", "host name"),
    ],
)
def test_an_address_that_cannot_be_connected_is_refused_with_the_reason(secure, store_url, reason):
    response = secure.get("/woocommerce/connect", query_string={"store_url": store_url})
    assert response.status_code == 400 and reason in response.get_data(as_text=True)


def test_a_refused_address_writes_no_row(secure, runtime):
    secure.get("/woocommerce/connect", query_string={"store_url": "https://not a url"})

    with runtime.database.session() as session:
        assert session.exec(select(PlatformConnection)).all() == []


def test_an_international_store_name_is_accepted_as_written(secure, runtime):
    location = start(secure, "https://Bücher.example/shop/")

    # The browser is sent to its ASCII form; the store is known as its webhooks will name it.
    assert location.startswith("https://xn--bcher-kva.example/shop/wc-auth/v1/authorize?")
    with runtime.database.session() as session:
        [pending] = session.exec(select(PlatformConnection)).all()
    assert pending.store_url == "https://bücher.example/shop"


def test_one_address_may_start_only_so_many_connections(secure, runtime):
    from app.woocommerce.connect import CONNECT_BUDGET

    for _ in range(CONNECT_BUDGET.limit):
        start(secure)

    refused = secure.get("/woocommerce/connect", query_string={"store_url": "https://shop.example"})

    assert refused.status_code == 429
    assert 0 < int(refused.headers["Retry-After"]) <= CONNECT_BUDGET.window_seconds + 1
    assert "Try again in about" in refused.get_data(as_text=True)
    with runtime.database.session() as session:
        assert len(session.exec(select(PlatformConnection)).all()) == CONNECT_BUDGET.limit
    # Another address has its own budget; the form itself is never refused.
    other = secure.get(
        "/woocommerce/connect",
        query_string={"store_url": "https://shop.example"},
        environ_base={"REMOTE_ADDR": "203.0.113.9"},
    )
    assert other.status_code == 302
    assert secure.get("/woocommerce/connect").status_code == 200


def test_behind_a_proxy_the_budget_follows_the_forwarded_client(runtime):
    from app.woocommerce.connect import CONNECT_BUDGET

    runtime.settings = runtime.settings.with_overrides(app_url=APP, forwarded_proxies=1)
    client = https_client(create_app(runtime=runtime))
    for _ in range(CONNECT_BUDGET.limit):
        started = client.get(
            "/woocommerce/connect",
            query_string={"store_url": "https://shop.example"},
            headers={"X-Forwarded-For": "198.51.100.7"},
        )
        assert started.status_code == 302

    spent = client.get(
        "/woocommerce/connect",
        query_string={"store_url": "https://shop.example"},
        headers={"X-Forwarded-For": "198.51.100.7"},
    )
    # A client cannot pick a fresh address by prepending one: only the last hop is trusted.
    forged = client.get(
        "/woocommerce/connect",
        query_string={"store_url": "https://shop.example"},
        headers={"X-Forwarded-For": "192.0.2.1, 198.51.100.7"},
    )
    fresh = client.get(
        "/woocommerce/connect",
        query_string={"store_url": "https://shop.example"},
        headers={"X-Forwarded-For": "198.51.100.8"},
    )

    assert (spent.status_code, forged.status_code, fresh.status_code) == (429, 429, 302)


def test_private_addresses_are_refused_in_production():
    from connectors.woocommerce.site import validate_store_url

    for address in (
        "https://127.0.0.1:8443",
        "https://10.0.0.5",
        "https://localhost",
        "https://[::1]",
        "https://x.internal",
    ):
        with pytest.raises(ValueError, match="public internet"):
            validate_store_url(address, public_only=True)
    # A name is judged by what it resolves to (here: nothing, tests have no DNS).
    with pytest.raises(ValueError, match="public internet"):
        validate_store_url("https://shop.example", public_only=True)
    assert validate_store_url("https://127.0.0.1:8443", public_only=False) == "https://127.0.0.1:8443"


def test_without_an_https_app_url_connecting_explains_what_to_set(client):
    response = client.get("/woocommerce/connect", query_string={"store_url": "https://shop.example"})
    assert response.status_code == 503 and "APP_URL" in response.get_data(as_text=True)


def test_the_key_delivery_is_answered_exactly_200_and_held_encrypted_until_proven(secure, runtime):
    user_id = connection_id(start(secure))
    response = secure.post("/woocommerce/callback", json=keys(user_id))

    assert response.status_code == 200
    with runtime.database.session() as session:
        [held] = session.exec(select(PlatformConnection)).all()
        stores = session.exec(select(Store)).all()
    assert held.keys_received_at is not None and KEY not in (held.keys_ciphertext or "")
    assert runtime.secrets.decrypt(held.keys_ciphertext or "") == f"{KEY}:{SECRET}"
    # Anyone who saw the id could have posted these: nothing is the store's until proven on it.
    assert stores == []


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        ("not json", 400, "JSON"),
        (["a list"], 400, "object"),
        ({"key_permissions": "read"}, 400, "read_write"),
        ({"consumer_key": "ck_short"}, 400, "consumer_key"),
        ({"consumer_secret": None}, 400, "consumer_secret"),
        ({"user_id": "made-up"}, 404, "no connection"),
    ],
)
def test_a_key_delivery_that_is_not_for_a_pending_connection_is_refused(
    secure, runtime, body, status, reason
):
    user_id = connection_id(start(secure))
    if isinstance(body, dict):
        response = secure.post("/woocommerce/callback", json=keys(user_id, **body))
    elif isinstance(body, list):
        response = secure.post("/woocommerce/callback", json=body)
    else:
        response = secure.post("/woocommerce/callback", data=body, content_type="application/json")
    assert response.status_code == status and reason in response.get_json()["error"]
    with runtime.database.session() as session:
        assert session.exec(select(Store)).all() == []


def test_a_connection_id_takes_keys_once_and_only_for_an_hour(secure):
    used = connection_id(start(secure))
    assert secure.post("/woocommerce/callback", json=keys(used)).status_code == 200
    replay = secure.post("/woocommerce/callback", json=keys(used))
    assert replay.status_code == 409

    late = connection_id(start(secure))
    with time_machine.travel(timedelta(hours=1, minutes=1)):
        assert secure.post("/woocommerce/callback", json=keys(late)).status_code == 410


def test_a_merchant_who_denied_access_is_told_how_to_try_again(secure):
    user_id = connection_id(start(secure))
    page = secure.get("/woocommerce/return", query_string={"success": "0", "user_id": user_id})
    text = page.get_data(as_text=True)
    assert page.status_code == 200 and "not approved" in text and "/woocommerce/connect" in text


def test_a_return_without_the_keys_says_the_callback_never_arrived(secure):
    user_id = connection_id(start(secure))
    page = secure.get("/woocommerce/return", query_string={"success": "1", "user_id": user_id})
    assert page.status_code == 502 and f"{APP}/woocommerce/callback" in page.get_data(as_text=True)


def test_keys_that_cannot_be_proven_on_the_store_sign_nobody_in_and_make_no_store(secure, runtime):
    # Someone starts a connection for a store that is not theirs and posts made-up keys.
    user_id = connection_id(start(secure))
    assert secure.post("/woocommerce/callback", json=keys(user_id)).status_code == 200
    page = secure.get("/woocommerce/return", query_string={"success": "1", "user_id": user_id})
    text = page.get_data(as_text=True)
    assert page.status_code == 502 and "could not be checked" in text
    assert "/admin/login#token=" not in text
    with runtime.database.session() as session:
        assert session.exec(select(Store)).all() == []
        [held] = session.exec(select(PlatformConnection)).all()
    assert held.problem  # what went wrong, kept for the next try


def test_only_the_browser_that_started_the_connection_is_signed_in(secure):
    user_id = connection_id(start(secure))
    secure.post("/woocommerce/callback", json=keys(user_id))
    stranger = https_client(secure.application)
    page = stranger.get("/woocommerce/return", query_string={"success": "1", "user_id": user_id})
    assert page.status_code == 403 and "/admin/login#token=" not in page.get_data(as_text=True)
