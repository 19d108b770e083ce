"""Deliveries spooled per web process on SQLite (sequences.stores.spool): answered once
committed to the spool, moved into the database by a worker's drain exactly once however the
collecting goes, and the spool of a process that is gone removed once it is empty."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3

import pytest
from sqlmodel import col, func, select

from app import create_app
from app.wiring import build_runtime
from sequences.db import Database
from sequences.engine.intake import drain_deliveries
from sequences.models import Cart, WebhookDelivery
from sequences.stores import spool as spool_module
from sequences.stores.spool import SUFFIX, collect, pending_count, spool_directory
from tests.support.factories import checkout_payload, make_store, send_webhook


def stored(runtime) -> int:
    with runtime.database.session() as session:
        return session.exec(select(func.count()).select_from(WebhookDelivery)).one()


def spool_files(runtime) -> list[str]:
    directory = spool_directory(runtime.database)
    assert directory is not None
    return sorted(p.name for p in directory.glob("*" + SUFFIX))


@pytest.fixture
def store(runtime):
    return make_store(runtime)


def test_a_spooled_delivery_is_stored_and_processed_by_a_workers_drain(client, runtime, store):
    response = send_webhook(client, "checkouts/create", checkout_payload())
    assert response.status_code == 200 and response.json == {"status": "accepted"}
    assert (pending_count(runtime.database), stored(runtime)) == (1, 0)
    assert drain_deliveries(runtime, limit=10) == 1
    assert (pending_count(runtime.database), stored(runtime)) == (0, 1)
    with runtime.database.session() as session:
        assert session.exec(select(func.count()).select_from(Cart)).one() == 1


def test_a_collector_that_dies_after_the_database_commit_leaves_no_second_copy(
    client, runtime, store, monkeypatch
):
    # Given two spooled deliveries, and a collector that dies before it deletes them from the spool
    for n in range(2):
        send_webhook(client, "checkouts/create", checkout_payload(checkout_id=f"c{n}", token=f"t{n}"))
    real_connect = spool_module._connect

    class Died(Exception):
        pass

    def connect_then_die_on_delete(path, **kwargs):
        connection = real_connect(path, **kwargs)

        class Dying:
            def __getattr__(self, name):
                return getattr(connection, name)

            def execute(self, sql, *args):
                if sql.startswith("DELETE"):
                    raise Died
                return connection.execute(sql, *args)

        return Dying()

    monkeypatch.setattr(spool_module, "_connect", connect_then_die_on_delete)
    with pytest.raises(Died):
        collect(runtime.database, limit=100)
    assert stored(runtime) == 2 and pending_count(runtime.database) == 2
    # When the next collector reads the same rows again
    monkeypatch.setattr(spool_module, "_connect", real_connect)
    again = collect(runtime.database, limit=100)
    # Then they are dropped as received already, and the spool is emptied
    assert (again.moved, again.inserted) == (2, 0)
    assert stored(runtime) == 2 and pending_count(runtime.database) == 0


def test_a_spooled_row_the_database_refuses_is_dropped_and_holds_back_no_other(client, runtime, store):
    send_webhook(client, "checkouts/create", checkout_payload(checkout_id="c0", token="t0"))
    # A row whose store is gone (no such store: the foreign key refuses it)
    directory = spool_directory(runtime.database)
    assert directory is not None
    [path] = directory.glob("*" + SUFFIX)
    with sqlite3.connect(path) as raw:
        raw.execute(
            f"INSERT INTO {spool_module.TABLE} (platform, store_id, delivery_id, topic, content_sha256,"
            " payload, status, received_at, attempts)"
            " VALUES ('demo', 9999, 'gone-1', 'checkouts/create', 'x', '{}', 'pending', '2026-12-07 10:00:00', 0)"
        )
    send_webhook(client, "checkouts/create", checkout_payload(checkout_id="c1", token="t1"))
    result = collect(runtime.database, limit=100)
    assert (result.moved, result.inserted) == (3, 2)
    assert stored(runtime) == 2 and pending_count(runtime.database) == 0


def test_a_collector_that_read_before_another_emptied_the_spool_never_deletes_a_newer_delivery(
    client, runtime, store, monkeypatch
):
    # Given a spooled delivery, read by one collector; before it writes, another collector
    # moves it in and empties the spool, and the next delivery is spooled
    send_webhook(client, "checkouts/create", checkout_payload(checkout_id="c0", token="t0"))
    real_insert = spool_module._insert_into_database
    meanwhile: list = []

    def another_collector_first(database, columns, rows):
        if not meanwhile:
            meanwhile.append(None)
            monkeypatch.setattr(spool_module, "_insert_into_database", real_insert)
            meanwhile[0] = collect(database, limit=100)
            send_webhook(client, "checkouts/create", checkout_payload(checkout_id="c1", token="t1"))
        return real_insert(database, columns, rows)

    monkeypatch.setattr(spool_module, "_insert_into_database", another_collector_first)
    collect(runtime.database, limit=1)
    monkeypatch.setattr(spool_module, "_insert_into_database", real_insert)
    # Then the late collector's delete left the newer delivery in the spool, and it is stored
    assert meanwhile[0].inserted == 1
    assert pending_count(runtime.database) == 1
    assert collect(runtime.database, limit=100).inserted == 1
    assert stored(runtime) == 2


def test_rows_the_database_refuses_for_another_reason_than_their_store_stay_spooled(client, runtime, store):
    # A row the database cannot take as it stands (a column it requires, here left empty, as
    # a spool written before a migration could be): not dropped, kept for an operator
    directory = spool_directory(runtime.database)
    send_webhook(client, "checkouts/create", checkout_payload(checkout_id="c0", token="t0"))
    assert directory is not None
    [path] = directory.glob("*" + SUFFIX)
    with sqlite3.connect(path) as raw:
        raw.execute(f"UPDATE {spool_module.TABLE} SET payload = NULL")
    assert collect(runtime.database, limit=100).moved == 0
    assert pending_count(runtime.database) == 1 and stored(runtime) == 0


def _ingest_in_child(settings, checkout_ids: list[str]) -> None:
    """A web process of its own: its deliveries go to its own spool; it then exits."""
    database = Database(settings.database_url)
    runtime = build_runtime(settings, database=database)
    client = create_app(runtime=runtime).test_client()
    for checkout_id in checkout_ids:
        response = send_webhook(
            client, "checkouts/create", checkout_payload(checkout_id=checkout_id), delivery_id=checkout_id
        )
        assert response.status_code == 200
    os._exit(0)  # as a killed process would: nothing closed, the kernel frees the lock


def test_web_processes_spool_apart_and_a_delivery_both_received_is_stored_once(
    client, runtime, store, settings
):
    # Given this process and two others received deliveries, one of them received by both others
    send_webhook(client, "checkouts/create", checkout_payload(checkout_id="here"), delivery_id="here")
    context = multiprocessing.get_context("fork")
    children = [
        context.Process(target=_ingest_in_child, args=(settings, ids))
        for ids in (["a1", "a2", "both"], ["b1", "both"])
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(30)
        assert child.exitcode == 0
    assert len(spool_files(runtime)) == 3
    assert pending_count(runtime.database) == 6
    # When a worker drains
    assert drain_deliveries(runtime, limit=100) == 5
    # Then each delivery was stored and processed once, and the spools of the processes that
    # are gone were removed; this live process keeps its own
    with runtime.database.session() as session:
        ids = session.exec(
            select(WebhookDelivery.delivery_id).order_by(col(WebhookDelivery.delivery_id))
        ).all()
    assert ids == ["a1", "a2", "b1", "both", "here"]
    assert len(spool_files(runtime)) == 1
    [live] = spool_files(runtime)
    directory = spool_directory(runtime.database)
    assert directory is not None
    assert {p.name.split(".")[0] for p in directory.iterdir()} == {live.split(".")[0]}
    assert pending_count(runtime.database) == 0


def test_a_forked_child_spools_apart_from_its_parent(client, runtime, store, monkeypatch):
    from sequences.stores.spool import SPOOLS

    columns = ["platform"]
    parent = SPOOLS.own(runtime.database, columns)
    assert parent is not None
    with monkeypatch.context() as forked:
        forked.setattr("sequences.stores.spool.os.getpid", lambda: -1)
        child = SPOOLS.own(runtime.database, columns)
        assert child is not None and child.path != parent.path
        assert SPOOLS.own(runtime.database, columns) is child
        child.close()
    parent.close()


def test_a_database_path_with_uri_characters_spools_and_collects(tmp_path):
    directory = tmp_path / "shop #1 data"
    database = Database(f"sqlite:///{directory}/cartback.db")
    try:
        spool = spool_module.SPOOLS.own(database, ["x"])
        assert spool is not None
        spool.append(["one"])
        assert spool.path.parent == directory / "cartback.db.spool"
        assert spool.path.exists()
        assert pending_count(database) == 1
    finally:
        database.dispose()


def test_postgresql_has_no_spool(runtime):
    assert spool_directory(Database("postgresql://localhost/nothing")) is None
    assert spool_directory(Database("sqlite://")) is None


def test_a_file_that_is_not_a_spool_holds_back_neither_the_count_nor_the_collection(client, runtime, store):
    # Left by hand, or by another program: /metrics still answers, the real spool is moved
    send_webhook(client, "checkouts/create", checkout_payload())
    directory = spool_directory(runtime.database)
    assert directory is not None
    (directory / ("not-a-spool" + SUFFIX)).write_bytes(b"this is not SQLite " * 400)
    assert pending_count(runtime.database) == 1
    assert collect(runtime.database, limit=10).moved == 1
    assert stored(runtime) == 1 and pending_count(runtime.database) == 0
