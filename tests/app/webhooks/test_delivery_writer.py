"""The insert a delivery costs on SQLite: into the web process's own spool
(sequences.stores.spool), which no other process's write holds up; and where a delivery is
recorded in the database itself (sequences.stores.deliveries.record_delivery: the sync), on the
process's kept writer connection, retried at a fine pace while another process writes."""

from __future__ import annotations

import json
import sqlite3
import threading
import time

from sqlalchemy.engine import make_url
from sqlmodel import func, select

from sequences.models import WebhookDelivery
from sequences.stores.deliveries import delivery_values, record_delivery
from sequences.stores.spool import pending_count
from tests.support.factories import checkout_payload, collect_spooled, make_store, send_webhook


def _stored(runtime) -> int:
    with runtime.database.session() as session:
        return session.exec(select(func.count()).select_from(WebhookDelivery)).one()


def _database_locked_for(runtime, seconds: float) -> tuple[sqlite3.Connection, threading.Timer]:
    """Another process's write transaction on the database, committed after ``seconds``."""
    other = sqlite3.connect(
        make_url(runtime.database.url).database, isolation_level=None, check_same_thread=False
    )
    other.execute("BEGIN IMMEDIATE")
    released = threading.Timer(seconds, other.execute, ["COMMIT"])
    released.start()
    return other, released


def test_a_delivery_is_accepted_while_another_process_holds_the_databases_write_lock(client, runtime):
    make_store(runtime)
    other, released = _database_locked_for(runtime, 2.0)
    started = time.monotonic()
    try:
        response = send_webhook(client, "checkouts/update", checkout_payload())
        answered_after = time.monotonic() - started
        # Committed to this process's spool, not waiting on the database's lock.
        assert response.status_code == 200 and response.json["status"] == "accepted"
        assert answered_after < 1.0
        assert pending_count(runtime.database) == 1 and _stored(runtime) == 0
    finally:
        released.join()
        other.close()
    # A worker's drain moves it in once the lock is free.
    assert collect_spooled(runtime) == 1
    assert pending_count(runtime.database) == 0 and _stored(runtime) == 1


def test_a_delivery_recorded_in_the_database_waits_for_another_process_holding_the_write_lock(runtime):
    store = make_store(runtime)
    connector = runtime.connectors.get("demo")
    raw = json.dumps(checkout_payload()).encode()
    identity = connector.webhook_identity(
        {"X-Demo-Shop": "demo-bazaar", "X-Demo-Topic": "checkouts/update", "X-Demo-Webhook-Id": "w-1"}
    )
    values = delivery_values(
        runtime,
        connector,
        store_id=store.id,
        identity=identity,
        raw_body=raw,
        event=connector.parse_webhook(identity, raw, default_region="IN"),
    )
    other, released = _database_locked_for(runtime, 0.3)
    started = time.monotonic()
    try:
        delivery_id = record_delivery(runtime, values)
    finally:
        released.join()
        other.close()
    # Stored once the lock was let go, not refused with "database is locked".
    assert delivery_id is not None
    assert time.monotonic() - started >= 0.3
    assert _stored(runtime) == 1


def test_a_forked_child_opens_its_own_writer(runtime, monkeypatch):
    with runtime.database.sqlite_writer() as parent:
        pass
    monkeypatch.setattr("sequences.db.os.getpid", lambda: -1)
    with runtime.database.sqlite_writer() as child:
        assert child is not parent
    with runtime.database.sqlite_writer() as again:
        assert again is child


def test_the_writer_never_lends_its_no_wait_connection_to_the_pool(runtime, monkeypatch):
    # The writer's connection gives up at once on a lock (busy timeout 0: its caller retries).
    # Replaced in a forked child, it used to go back to the pool, and a session that drew it
    # failed with "database is locked" instead of waiting (the cloud demo's sign-in, HTTP 500).
    import gc

    from sequences.db import SQLITE_BUSY_TIMEOUT_MS

    with runtime.database.sqlite_writer():
        pass
    monkeypatch.setattr("sequences.db.os.getpid", lambda: -1)
    with runtime.database.sqlite_writer():
        pass
    gc.collect()
    with runtime.database.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == SQLITE_BUSY_TIMEOUT_MS
