"""POST /webhooks/<platform>: every bad input is a clear 4xx and stores nothing."""

from __future__ import annotations

import json

import pytest
from sqlmodel import func, select

from demo.connector import sign
from sequences.engine.intake import drain_deliveries
from sequences.models import Cart, WebhookDelivery
from tests.support.factories import checkout_payload, collect_spooled, make_store, replay_answer, send_webhook


def deliveries(runtime) -> int:
    """Deliveries stored, spooled ones included (a worker's drain moves those in first)."""
    collect_spooled(runtime)
    with runtime.database.session() as session:
        return session.exec(select(func.count()).select_from(WebhookDelivery)).one()


@pytest.fixture
def store(runtime):
    return make_store(runtime)


def test_a_signed_checkout_is_accepted_and_stored_for_processing(client, runtime, store):
    response = send_webhook(client, "checkouts/create", checkout_payload())
    assert response.status_code == 200
    assert response.json["status"] == "accepted"
    assert deliveries(runtime) == 1
    # No RQ job per delivery: it waits, pending, for the workers' drain.
    assert runtime.queue.count == 0
    assert drain_deliveries(runtime, limit=10) == 1
    with runtime.database.session() as session:
        assert session.exec(select(func.count()).select_from(Cart)).one() == 1


def test_a_wrong_signature_gets_401_and_nothing_is_stored(client, runtime, store):
    response = send_webhook(client, "checkouts/create", checkout_payload(), secret="someone-elses-secret")
    assert response.status_code == 401
    assert "signature" in response.json["error"]
    assert deliveries(runtime) == 0


def test_missing_platform_headers_get_400_naming_them(client, runtime, store):
    response = client.post("/webhooks/demo", data=b"{}", content_type="application/json")
    assert response.status_code == 400
    assert "X-Demo-Shop" in response.json["error"]


def test_malformed_json_gets_400(client, runtime, store):
    response = send_webhook(client, "checkouts/update", b'{"id": "chk_1",')
    assert response.status_code == 400
    assert "JSON" in response.json["error"]
    assert deliveries(runtime) == 0


def test_a_bad_phone_gets_422_with_the_reason_and_nothing_is_stored(client, runtime, store):
    response = send_webhook(client, "checkouts/update", checkout_payload(phone="+91 12"))
    assert response.status_code == 422
    assert "phone" in response.json["error"]
    assert deliveries(runtime) == 0


def test_a_payload_missing_a_required_field_gets_422_naming_it(client, runtime, store):
    payload = checkout_payload()
    del payload["updated_at"]
    response = send_webhook(client, "checkouts/update", payload)
    assert response.status_code == 422
    assert "updated_at" in response.json["error"]


def test_a_body_nested_absurdly_deep_gets_400_not_a_crash(client, runtime, store):
    response = send_webhook(client, "checkouts/update", b"[" * 200_000 + b"]" * 200_000)
    assert response.status_code == 400
    assert deliveries(runtime) == 0


def test_an_oversized_body_gets_413(client, runtime, store):
    body = json.dumps({"padding": "x" * (runtime.settings.max_webhook_bytes + 1)}).encode()
    response = send_webhook(client, "checkouts/update", body)
    assert response.status_code == 413
    assert deliveries(runtime) == 0


def test_an_empty_body_gets_400(client, runtime, store):
    response = client.post(
        "/webhooks/demo",
        data=b"",
        headers={"X-Demo-Shop": "demo-bazaar", "X-Demo-Topic": "checkouts/update", "X-Demo-Webhook-Id": "1"},
    )
    assert response.status_code == 400


def test_an_unknown_platform_gets_404(client, runtime, store):
    response = client.post("/webhooks/bigcommerce", data=b"{}")
    assert response.status_code == 404
    assert "demo" in response.json["error"]


def test_a_delivery_for_a_store_that_is_not_installed_is_acknowledged_and_dropped(client, runtime):
    response = send_webhook(client, "checkouts/update", checkout_payload(), store="never-installed")
    assert response.status_code == 200
    assert response.json["status"] == "ignored"
    assert deliveries(runtime) == 0


def test_a_signed_delivery_for_an_uninstalled_store_is_acknowledged_and_dropped(client, runtime, store):
    send_webhook(client, "app/uninstalled", {"uninstalled_at": "2026-11-28T10:00:00Z"})
    from sequences.jobs import process_delivery_job

    with runtime.database.session() as session:
        delivery_id = session.exec(select(WebhookDelivery.id)).one()
    process_delivery_job(delivery_id)

    response = send_webhook(client, "checkouts/update", checkout_payload())
    assert response.status_code == 200
    assert response.json["status"] == "ignored"
    assert deliveries(runtime) == 1


@pytest.mark.postgres
def test_a_replayed_delivery_id_changes_nothing(client, runtime, store, drain):
    first = send_webhook(client, "checkouts/update", checkout_payload(), delivery_id="d-1")
    replay = send_webhook(
        client, "checkouts/update", checkout_payload(first_name="Changed"), delivery_id="d-1"
    )
    assert first.json["status"] == "accepted"
    assert replay.status_code == 200 and replay.json["status"] == replay_answer(runtime)
    assert deliveries(runtime) == 1
    drain()
    with runtime.database.session() as session:
        assert session.exec(select(func.count()).select_from(Cart)).one() == 1


@pytest.mark.postgres
def test_the_same_content_under_a_new_delivery_id_is_a_duplicate(client, runtime, store):
    payload = checkout_payload()
    send_webhook(client, "checkouts/update", payload, delivery_id="d-1")
    again = send_webhook(client, "checkouts/update", payload, delivery_id="d-2")
    assert again.status_code == 200 and again.json["status"] == replay_answer(runtime)
    assert deliveries(runtime) == 1


def test_redis_being_down_does_not_lose_the_delivery(client, runtime, store, redis_url):
    from redis import Redis

    runtime.redis = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    try:
        response = send_webhook(client, "checkouts/create", checkout_payload())
    finally:
        runtime.redis = Redis.from_url(redis_url)
    assert response.status_code == 200
    assert deliveries(runtime) == 1


def test_one_store_cannot_sign_for_another(client, runtime, store):
    make_store(runtime, "other-store")
    body = json.dumps(checkout_payload()).encode()
    response = client.post(
        "/webhooks/demo",
        data=body,
        headers={
            "X-Demo-Shop": "demo-bazaar",
            "X-Demo-Topic": "checkouts/create",
            "X-Demo-Webhook-Id": "x",
            "X-Demo-Hmac-Sha256": sign(body, "whsec-other-store"),
        },
    )
    assert response.status_code == 401
    with runtime.database.session() as session:
        assert session.exec(select(func.count()).select_from(Cart)).one() == 0


def test_a_delivery_queued_before_an_uninstall_is_not_acted_on_after_it(client, runtime, store):
    from sequences.jobs import process_delivery_job

    send_webhook(client, "checkouts/create", checkout_payload())
    send_webhook(client, "app/uninstalled", {"uninstalled_at": "2026-11-28T10:00:00Z"})
    collect_spooled(runtime)
    with runtime.database.session() as session:
        checkout_id, uninstall_id = session.exec(
            select(WebhookDelivery.id).order_by(WebhookDelivery.received_at, WebhookDelivery.id)
        ).all()
    process_delivery_job(uninstall_id)
    assert process_delivery_job(checkout_id) == "ignored: store uninstalled cartback"
    with runtime.database.session() as session:
        assert session.exec(select(func.count()).select_from(Cart)).one() == 0


ODD_VALUES = [None, 0, -1, 1.5, True, "", "x" * 5000, [], {}, [1, 2], {"a": 1}, "२०२६", "NaN", "1e400"]


@pytest.mark.parametrize("topic", ["checkouts/update", "orders/create"])
def test_no_field_of_any_odd_type_makes_ingest_fail_with_a_500(client, runtime, store, topic):
    from tests.support.factories import order_payload

    valid = (
        checkout_payload()
        if topic == "checkouts/update"
        else order_payload(created_at=None) | {"created_at": "2026-11-28T10:00:00Z"}
    )
    paths = [(key,) for key in valid] + (
        [("line_items", 0, key) for key in valid["line_items"][0]]
        + [("customer", key) for key in valid["customer"]]
        if topic == "checkouts/update"
        else []
    )
    for path in paths:
        for odd in ODD_VALUES:
            payload = json.loads(json.dumps(valid))
            target = payload
            for part in path[:-1]:
                target = target[part]
            target[path[-1]] = odd
            response = send_webhook(client, topic, payload)
            assert response.status_code in (200, 400, 422), (path, odd, response.status_code)
            assert response.is_json and ("error" in response.json or "status" in response.json)


# -- served before Flask (app.webhooks.platforms.PlatformWebhooks) -------------------------------


def test_a_webhook_address_asked_with_get_gets_405_naming_post(client, runtime, store):
    response = client.get("/webhooks/demo")
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"
    assert "POST" in response.json["error"]
    assert deliveries(runtime) == 0


def test_a_chunked_body_without_content_length_is_read_whole(app, runtime, store):
    """gunicorn marks a chunked body's end (wsgi.input_terminated): it is read, signed, stored."""
    body = json.dumps(checkout_payload()).encode()
    headers = {
        "X-Demo-Topic": "checkouts/update",
        "X-Demo-Webhook-Id": "chunked-1",
        "X-Demo-Hmac-Sha256": sign(body, "whsec-demo-bazaar"),
    }
    status, answer = _post_chunked(app, _Chunks(body), headers)
    assert status == 200, answer
    assert answer["status"] == "accepted"
    assert deliveries(runtime) == 1


def test_a_chunked_body_over_the_limit_gets_413_after_reading_one_byte_more(app, runtime, store):
    limit = runtime.settings.max_webhook_bytes
    stream = _Chunks(b"x" * (limit * 3))
    status, answer = _post_chunked(app, stream, {})
    assert status == 413 and str(limit) in answer["error"]
    assert stream.read_bytes <= limit + 1
    assert deliveries(runtime) == 0


def test_a_body_ending_before_its_content_length_gets_400_and_nothing_is_stored(app, runtime, store):
    import io

    from werkzeug.test import EnvironBuilder, run_wsgi_app

    body = json.dumps(checkout_payload()).encode()
    environ = EnvironBuilder(
        path="/webhooks/demo",
        method="POST",
        headers={
            "X-Demo-Shop": "demo-bazaar",
            "X-Demo-Topic": "checkouts/update",
            "X-Demo-Webhook-Id": "cut-1",
            "X-Demo-Hmac-Sha256": sign(body, "whsec-demo-bazaar"),
        },
    ).get_environ()
    # The client promised more than it sent, then went away.
    environ.update({"wsgi.input": io.BytesIO(body[:-20]), "CONTENT_LENGTH": str(len(body))})
    app_iter, status, _headers = run_wsgi_app(app, environ, buffered=True)
    assert status.startswith("400") and "Content-Length" in json.loads(b"".join(app_iter))["error"]
    assert deliveries(runtime) == 0


def _post_chunked(app, stream: _Chunks, headers: dict[str, str]) -> tuple[int, dict]:
    from werkzeug.test import EnvironBuilder, run_wsgi_app

    environ = EnvironBuilder(
        path="/webhooks/demo", method="POST", headers={"X-Demo-Shop": "demo-bazaar", **headers}
    ).get_environ()
    environ.pop("CONTENT_LENGTH", None)
    environ.update({"wsgi.input": stream, "wsgi.input_terminated": True, "HTTP_TRANSFER_ENCODING": "chunked"})
    app_iter, status, _headers = run_wsgi_app(app, environ, buffered=True)
    return int(status.split()[0]), json.loads(b"".join(app_iter))


def test_the_other_webhook_addresses_still_reach_their_views(client, store):
    # Meta's handshake (a Flask view under /webhooks/) and a path with more segments.
    assert client.get("/webhooks/whatsapp", query_string={"hub.mode": "subscribe"}).status_code == 403
    assert client.post("/webhooks/demo/extra", data=b"{}").status_code == 404


def test_an_unexpected_failure_is_a_logged_500_the_platform_retries(runtime, store, monkeypatch, caplog):
    from app import create_app
    from app.webhooks import platforms

    app = create_app({"TESTING": False}, runtime=runtime)

    def broken(*_args, **_kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(platforms, "record_delivery", broken)
    monkeypatch.setattr(platforms, "spool_delivery", broken)
    body = json.dumps(checkout_payload()).encode()
    response = send_webhook(app.test_client(), "checkouts/update", body)
    assert response.status_code == 500
    assert "retry" in response.json["error"] and "disk full" not in response.get_data(as_text=True)
    assert any(record.getMessage() == "webhook not ingested" for record in caplog.records)


class _Chunks:
    """A request body with no length, as a server hands over a chunked one; counts what is read."""

    def __init__(self, data: bytes) -> None:
        self.data, self.read_bytes = data, 0

    def read(self, size: int = -1) -> bytes:
        size = len(self.data) - self.read_bytes if size < 0 else size
        piece = self.data[self.read_bytes : self.read_bytes + size]
        self.read_bytes += len(piece)
        return piece

    def readline(self, size: int = -1) -> bytes:
        return self.read(size)
