"""Ingest's per-process store cache: a rotated secret, an uninstall and an install are each
seen when they must be, and a cached store costs a delivery one row in the process's spool and
no database statement at all."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import event, update
from sqlmodel import col, func, select

from sequences.engine.intake import drain_deliveries
from sequences.models import Cart, Store, StoreStatus, WebhookDelivery
from sequences.stores import store_cache as store_cache_module
from sequences.stores.spool import pending_count
from tests.support.factories import checkout_payload, collect_spooled, make_store, send_webhook


def deliveries(runtime) -> int:
    """Deliveries stored, spooled ones included (a worker's drain moves those in first)."""
    collect_spooled(runtime)
    with runtime.database.session() as session:
        return session.exec(select(func.count()).select_from(WebhookDelivery)).one()


def carts(runtime) -> int:
    with runtime.database.session() as session:
        return session.exec(select(func.count()).select_from(Cart)).one()


def another_process_writes(runtime, **values) -> None:
    """The store's row changed by someone else (another web process, the worker, an operator):
    nothing in this process is told."""
    with runtime.database.engine.begin() as connection:
        connection.execute(
            update(Store).where(col(Store.platform_store_id) == "demo-bazaar").values(**values)
        )


@contextmanager
def statements(runtime) -> Iterator[list[str]]:
    """The SQL statements this process sends to SQLite meanwhile (BEGIN/COMMIT aside), as the
    driver sees them: ingest's insert runs on the driver's connection, past SQLAlchemy."""
    seen: list[str] = []

    def record(statement: str) -> None:
        if not statement.startswith(("BEGIN", "COMMIT", "ROLLBACK", "PRAGMA")):
            seen.append(statement.split()[0])

    def trace(dbapi_connection, _record, _proxy) -> None:
        dbapi_connection.set_trace_callback(record)

    def untrace(dbapi_connection, _record) -> None:
        dbapi_connection.set_trace_callback(None)

    engine = runtime.database.engine
    event.listen(engine, "checkout", trace)
    event.listen(engine, "checkin", untrace)
    # And the connection ingest keeps for its inserts (sequences.db.Database.sqlite_writer).
    with runtime.database.sqlite_writer() as writer:
        writer.set_trace_callback(record)
    try:
        yield seen
    finally:
        event.remove(engine, "checkout", trace)
        event.remove(engine, "checkin", untrace)
        with runtime.database.sqlite_writer() as writer:
            writer.set_trace_callback(None)


@pytest.fixture
def store(runtime):
    return make_store(runtime, secret="whsec-old")


def test_a_delivery_for_a_cached_store_costs_one_spooled_row_and_no_job(client, runtime, store):
    # Given the store was seen by an earlier delivery
    send_webhook(client, "checkouts/create", checkout_payload(checkout_id="c1"), secret="whsec-old")
    # When the next one arrives
    with statements(runtime) as seen:
        response = send_webhook(
            client, "checkouts/create", checkout_payload(checkout_id="c2"), secret="whsec-old"
        )
    # Then it was spooled, with no statement on the database (no store lookup), and nothing
    # was queued in Redis
    assert response.json["status"] == "accepted"
    assert seen == []
    assert pending_count(runtime.database) == 2
    assert runtime.queue.count == 0


def test_a_rotated_secret_is_accepted_at_once_and_the_old_one_refused_after_it(client, runtime, store):
    # Given the store was cached with its old secret
    assert (
        send_webhook(client, "checkouts/create", checkout_payload(checkout_id="c1"), secret="whsec-old").json[
            "status"
        ]
        == "accepted"
    )
    # When another process replaces the secret
    another_process_writes(runtime, webhook_secret_ciphertext=runtime.secrets.encrypt("whsec-new"))
    # Then a delivery signed with the new one is accepted at once (the row was read again)...
    fresh = send_webhook(client, "checkouts/create", checkout_payload(checkout_id="c2"), secret="whsec-new")
    assert fresh.status_code == 200 and fresh.json["status"] == "accepted"
    # ...and the old secret no longer signs anything
    stale = send_webhook(client, "checkouts/create", checkout_payload(checkout_id="c3"), secret="whsec-old")
    assert stale.status_code == 401
    assert deliveries(runtime) == 2


def test_a_forged_signature_is_still_refused_after_the_second_look(client, runtime, store):
    send_webhook(client, "checkouts/create", checkout_payload(checkout_id="c1"), secret="whsec-old")
    forged = send_webhook(
        client, "checkouts/create", checkout_payload(checkout_id="c2"), secret="whsec-guess"
    )
    assert forged.status_code == 401
    assert deliveries(runtime) == 1


def test_an_uninstall_recorded_here_stops_deliveries_at_once(client, runtime, store):
    # Given the store is cached as installed
    send_webhook(client, "checkouts/create", checkout_payload(checkout_id="c1"), secret="whsec-old")
    # When its uninstall arrives through this process
    send_webhook(client, "app/uninstalled", {"uninstalled_at": "2026-11-28T10:00:00Z"}, secret="whsec-old")
    # Then the very next delivery is dropped at the door, without waiting for the cache to expire
    after = send_webhook(client, "checkouts/create", checkout_payload(checkout_id="c2"), secret="whsec-old")
    assert after.json == {"status": "ignored", "reason": "store uninstalled cartback"}
    assert deliveries(runtime) == 2


def test_an_uninstall_recorded_elsewhere_changes_nothing_meanwhile_and_is_seen_after_the_ttl(
    client, runtime, store, monkeypatch
):
    # Given the store is cached as installed
    send_webhook(client, "checkouts/create", checkout_payload(checkout_id="c1"), secret="whsec-old")
    drain_deliveries(runtime, limit=10)
    # When another process records its uninstall
    another_process_writes(runtime, status=StoreStatus.UNINSTALLED)
    # Then a delivery inside the cache's lifetime may be stored, but processing it changes nothing
    within = send_webhook(client, "checkouts/create", checkout_payload(checkout_id="c2"), secret="whsec-old")
    assert within.json["status"] == "accepted"
    drain_deliveries(runtime, limit=10)
    assert carts(runtime) == 1
    with runtime.database.session() as session:
        delivery = session.exec(select(WebhookDelivery).order_by(col(WebhookDelivery.id).desc())).first()
    assert delivery is not None
    assert delivery.outcome == "ignored: store uninstalled cartback"
    # And once the entry has lived its TTL, deliveries are dropped at the door
    monkeypatch.setattr(store_cache_module, "TTL_SECONDS", 0.0)
    later = send_webhook(client, "checkouts/create", checkout_payload(checkout_id="c3"), secret="whsec-old")
    assert later.json == {"status": "ignored", "reason": "store uninstalled cartback"}


def test_a_store_installed_after_a_miss_gets_its_next_delivery_accepted(client, runtime):
    # Given a delivery for a store not installed yet
    miss = send_webhook(client, "checkouts/create", checkout_payload(checkout_id="c1"), store="late-bazaar")
    assert miss.json == {"status": "ignored", "reason": "store is not installed"}
    # When the store installs (in another process)
    make_store(runtime, "late-bazaar")
    # Then its next delivery is accepted at once
    hit = send_webhook(client, "checkouts/create", checkout_payload(checkout_id="c2"), store="late-bazaar")
    assert hit.json["status"] == "accepted"


def test_a_reinstall_elsewhere_is_seen_by_the_next_delivery(client, runtime, store):
    # Given an uninstalled store (uninstalled stores are never cached)
    send_webhook(client, "app/uninstalled", {"uninstalled_at": "2026-11-28T10:00:00Z"}, secret="whsec-old")
    assert (
        send_webhook(client, "checkouts/create", checkout_payload(), secret="whsec-old").json["status"]
        == "ignored"
    )
    # When another process reinstalls it
    another_process_writes(runtime, status=StoreStatus.ACTIVE)
    # Then the next delivery is accepted
    again = send_webhook(client, "checkouts/create", checkout_payload(checkout_id="c9"), secret="whsec-old")
    assert again.json["status"] == "accepted"
