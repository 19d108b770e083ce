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


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_after_a_journey_time_it_and_count_it(journey, client, runtime):
    """Checkout, reminder, click, order: the histograms count each, and the gauges say what
    the dashboard's buckets hold for the last 24 hours."""
    from tests.support.factories import order_payload

    runtime.settings = runtime.settings.with_overrides(metrics_token=METRICS_TOKEN)
    with journey.at(20 * MIN):
        assert client.get(journey.link_path(0)).status_code == 303
    journey.webhook(30 * MIN, "orders/create", order_payload(total="2098.00"))
    with journey.at(31 * MIN):
        response = client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert response.status_code == 200 and response.mimetype == "text/plain"
    samples = _samples(response.get_data(as_text=True))
    store = str(journey.cart().store_id)

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    # The checkout and the order: two deliveries ingested; one step handed over, on time.
    assert value("cartback_webhook_ingest_seconds_count", platform="demo", outcome="accepted") == 2
    assert value("cartback_step_lateness_seconds_count", transport="sandbox") == 1
    assert value("cartback_step_lateness_seconds_bucket", transport="sandbox", le="1.0") == 1
    assert value("cartback_click_redirect_seconds_count", outcome="redirected") == 1
    assert value("cartback_api_request_seconds_count", service="demo", operation="rebuild_checkout") == 1
    # Business gauges from the kept figures: the cart, its reminder, the pending revenue.
    assert value("cartback_store_carts_24h", store=store, state="abandoned") == 1
    assert value("cartback_store_carts_24h", store=store, state="recovered") == 1
    assert (
        value("cartback_store_recovered_revenue_24h", store=store, currency="INR", state="pending") == 2098.0
    )
    assert (
        value("cartback_store_recovered_revenue_24h", store=store, currency="INR", state="reconciled") == 0.0
    )
    assert value("cartback_store_messages_24h", store=store, status="sent") == 1
    assert value("cartback_store_messages_24h", store=store, status="clicked") == 1
    assert value("cartback_webhook_deliveries_pending") == 0
    assert value("cartback_oldest_due_step_age_seconds") == 0
    assert value("cartback_redis_up") == 1
    # A day later the cart is no longer in the window; the histograms keep counting.
    with journey.at(25 * 60 * MIN):
        later = _samples(
            client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).get_data(
                as_text=True
            )
        )
    assert ("cartback_store_carts_24h", (("state", "abandoned"), ("store", store))) not in later
    assert later[("cartback_step_lateness_seconds_count", (("transport", "sandbox"),))] == 1


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
