"""The sandbox outbox (a shopper's phone, simulated) and the operator endpoints."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlmodel import select

from sequences.models import CartStatus, Contact, SandboxOutboxMessage
from tests.support.journey import Journey

MIN = timedelta(minutes=1)


@pytest.fixture
def journey(messaged_journey: Journey) -> Journey:
    return messaged_journey


def outbox_id(runtime) -> int:
    with runtime.database.session() as session:
        return session.exec(select(SandboxOutboxMessage.id)).first()


def test_the_outbox_shows_the_message_with_a_masked_number(journey, client):
    page = client.get("/outbox").get_data(as_text=True)
    assert "Hi Asha, you left Handloom Cotton Kurta and 1 more" in page
    assert "+91 98•••••210" in page
    assert "9876543210" not in page


def test_replying_stop_in_the_outbox_opts_the_shopper_out_for_good(journey, client, runtime):
    with journey.at(20 * MIN):
        response = client.post(f"/outbox/{outbox_id(runtime)}/reply", data={"text": "STOP"})
    assert response.status_code == 303
    assert journey.cart().status == CartStatus.OPTED_OUT
    with runtime.database.session() as session:
        assert session.exec(select(Contact)).one().opted_out_at is not None
    event = journey.consent_events()[0]
    assert (event.kind, event.source, event.evidence["text"]) == ("opt_out", "sandbox_reply", "STOP")
    journey.run(5 * timedelta(hours=1))
    assert len(journey.outbox()) == 1


def test_start_after_stop_opts_back_in_and_is_recorded(journey, client, runtime):
    with journey.at(20 * MIN):
        client.post(f"/outbox/{outbox_id(runtime)}/reply", data={"text": "STOP"})
        client.post(f"/outbox/{outbox_id(runtime)}/reply", data={"text": "START"})
    assert [event.kind for event in journey.consent_events()] == ["opt_out", "opt_in"]


def test_a_hindi_stop_is_understood(journey, client, runtime):
    with journey.at(20 * MIN):
        client.post(f"/outbox/{outbox_id(runtime)}/reply", data={"text": "बंद करो"})
    assert journey.cart().status == CartStatus.OPTED_OUT


def test_an_ordinary_reply_does_not_opt_out(journey, client, runtime):
    with journey.at(20 * MIN):
        client.post(f"/outbox/{outbox_id(runtime)}/reply", data={"text": "Is the kurta available in XL?"})
    assert journey.cart().status == CartStatus.RECOVERING


def test_an_empty_reply_is_refused_with_a_reason(journey, client, runtime):
    response = client.post(f"/outbox/{outbox_id(runtime)}/reply", data={"text": "  "})
    assert response.status_code == 400
    assert "Type a reply first" in response.get_data(as_text=True)


def test_healthz_and_readyz(client):
    assert client.get("/healthz").json == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json["checks"] == {"database": "ok", "redis": "ok"}


def test_readyz_says_which_dependency_is_down(client, runtime, redis_url):
    from redis import Redis

    runtime.redis = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    response = client.get("/readyz")
    runtime.redis = Redis.from_url(redis_url)
    assert response.status_code == 503
    assert response.json["checks"]["redis"].startswith("unreachable")


METRICS_TOKEN = "metrics-token-for-tests"


def test_metrics_count_carts_messages_and_recovered_revenue(journey, client, runtime):
    from tests.support.factories import order_payload

    runtime.settings = runtime.settings.with_overrides(metrics_token=METRICS_TOKEN)
    journey.webhook(30 * MIN, "orders/create", order_payload(total="2098.00"))
    text = client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).get_data(as_text=True)
    assert 'cartback_carts{store="1",status="recovered"} 1' in text
    assert 'cartback_recovered_revenue{store="1",currency="INR"} 2098.0' in text
    assert "# TYPE cartback_messages gauge" in text


@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong-token", f"Basic {METRICS_TOKEN}", f"Bearer {METRICS_TOKEN}x"]
)
def test_metrics_without_the_token_show_no_store_figures(journey, client, runtime, authorization):
    from tests.support.factories import order_payload

    runtime.settings = runtime.settings.with_overrides(metrics_token=METRICS_TOKEN)
    journey.webhook(30 * MIN, "orders/create", order_payload(total="2098.00"))

    response = client.get("/metrics", headers={"Authorization": authorization} if authorization else {})

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert "cartback_" not in response.get_data(as_text=True)


def test_metrics_are_off_until_a_token_is_configured(journey, client):
    response = client.get("/metrics", headers={"Authorization": "Bearer anything"})

    assert response.status_code == 403
    assert "METRICS_TOKEN" in response.get_data(as_text=True)
    assert "cartback_" not in response.get_data(as_text=True)


def test_readyz_says_when_migrations_have_not_run(runtime, tmp_path):
    from app import create_app
    from sequences.db import Database

    runtime.database = Database(f"sqlite:///{tmp_path}/empty.db")
    response = create_app(runtime=runtime).test_client().get("/readyz")
    assert response.status_code == 503
    assert "cartback db upgrade" in response.json["checks"]["database"]
