"""The insert a delivery costs on SQLite (sequences.stores.deliveries.record_delivery): on the
process's kept writer connection, retried at a fine pace while another process writes."""

from __future__ import annotations

import sqlite3
import threading
import time

from sqlalchemy.engine import make_url
from sqlmodel import func, select

from sequences.models import WebhookDelivery
from tests.support.factories import checkout_payload, make_store, send_webhook


def _stored(runtime) -> int:
    with runtime.database.session() as session:
        return session.exec(select(func.count()).select_from(WebhookDelivery)).one()


def test_a_delivery_waits_for_another_process_holding_the_write_lock(client, runtime):
    make_store(runtime)
    other = sqlite3.connect(
        make_url(runtime.database.url).database, isolation_level=None, check_same_thread=False
    )
    other.execute("BEGIN IMMEDIATE")
    released = threading.Timer(0.3, other.execute, ["COMMIT"])
    started = time.monotonic()
    released.start()
    try:
        response = send_webhook(client, "checkouts/update", checkout_payload())
    finally:
        released.join()
        other.close()
    # Accepted once the lock was let go, not refused with "database is locked".
    assert response.status_code == 200 and response.json["status"] == "accepted"
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
