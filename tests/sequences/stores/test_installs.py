"""sequences.stores.installs: one row per store, however installs, reinstalls and uninstalls
arrive (twice, at once, late)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.orm import Session as OrmSession
from sqlmodel import Session, select

from connectors.base import AppUninstalled, IssuedToken, WebhookIdentity
from sequences.models import Store, StoreStatus, WebhookDelivery
from sequences.runtime import Runtime
from sequences.stores.deliveries import delivery_values
from sequences.stores.installs import (
    TokenInstall,
    installed_store,
    record_token_install,
    record_uninstall,
    retry_on_store_race,
)

# The demo platform: the service is the same for every platform, and tests always have it.
PLATFORM = "demo"
REF = "bazaar"


def install(runtime: Runtime, token: str = "token-1") -> int:
    issued = IssuedToken(access_token=token, scope="read_orders")
    return record_token_install(runtime, TokenInstall(PLATFORM, REF, f"https://{REF}.example/api", issued))


def the_store(runtime: Runtime) -> Store:
    with runtime.database.session() as session:
        [store] = session.exec(select(Store)).all()
        return store


def token_of(runtime: Runtime, store: Store) -> str:
    return runtime.secrets.decrypt(store.access_token_ciphertext or "")


def uninstall(runtime: Runtime, store_id: int, occurred_at: datetime, delivery_id: str = "d-1") -> int | None:
    identity = WebhookIdentity(store_ref=REF, topic="app/uninstalled", delivery_id=delivery_id)
    body = json.dumps({"uninstalled_at": occurred_at.isoformat()}).encode()
    delivery = delivery_values(
        runtime,
        runtime.connectors[PLATFORM],
        store_id=store_id,
        identity=identity,
        raw_body=body,
        event=AppUninstalled(occurred_at=occurred_at),
    )
    return record_uninstall(runtime, delivery, store_id=store_id, occurred_at=occurred_at)


@contextmanager
def rival_creates_the_store(runtime: Runtime) -> Iterator[list[int]]:
    """Another request inserts the same store's row (and commits) just before ours is flushed:
    between our look and our insert, as two app pages loaded at once would."""
    rival_ids: list[int] = []

    def rival_insert(session: OrmSession, _context: object, _instances: object) -> None:
        if rival_ids or not any(isinstance(item, Store) for item in session.new):
            return
        rival_ids.append(0)  # before the rival's own flush, which passes through here too
        with runtime.database.session() as other:
            rival = Store(platform=PLATFORM, platform_store_id=REF, name=REF)
            other.add(rival)
            other.flush()
            assert rival.id is not None
            rival_ids[0] = rival.id

    event.listen(OrmSession, "before_flush", rival_insert)
    try:
        yield rival_ids
    finally:
        event.remove(OrmSession, "before_flush", rival_insert)


@pytest.mark.postgres
def test_installing_a_store_twice_keeps_one_row_with_the_newer_token(runtime):
    # Given a store installed once
    first = install(runtime, "token-1")
    # When it is installed again (a new token exchange)
    second = install(runtime, "token-2")
    # Then it is the same row, active, holding the newer token
    store = the_store(runtime)
    assert first == second == store.id
    assert store.status == StoreStatus.ACTIVE
    assert token_of(runtime, store) == "token-2"
    assert store.api_base_url == f"https://{REF}.example/api" and store.scopes == "read_orders"


@pytest.mark.postgres(only=True)
def test_an_install_losing_the_race_to_create_the_row_finds_the_winners(runtime):
    # Given another request creates the store's row between our look and our insert
    with rival_creates_the_store(runtime) as rival_ids:
        # When we record the install
        store_id = install(runtime)
    # Then our insert lost, and the retry wrote our token onto the rival's row
    store = the_store(runtime)
    assert rival_ids == [store_id] == [store.id]
    assert store.status == StoreStatus.ACTIVE and store.installed_at is not None
    assert token_of(runtime, store) == "token-1"


@pytest.mark.postgres(only=True)
def test_a_connection_losing_the_race_under_the_lock_finds_the_winners_row(runtime):
    # Given another connection for the same site creates the row meanwhile (WooCommerce's
    # completion writes under the locked session)
    now = runtime.now()

    def connect(session: Session) -> int:
        store = installed_store(session, PLATFORM, REF, now)
        session.flush()
        assert store.id is not None
        return store.id

    with rival_creates_the_store(runtime) as rival_ids:
        # When the connection completes
        store_id = retry_on_store_race(runtime.database.locked_session, connect)
    # Then it took the rival's row and marked it installed
    store = the_store(runtime)
    assert rival_ids == [store_id] == [store.id]
    assert store.status == StoreStatus.ACTIVE and store.installed_at == now


@pytest.mark.postgres(only=True)
def test_installs_at_once_from_several_requests_make_one_row(runtime):
    # When six requests install the same store at the same moment
    with ThreadPoolExecutor(max_workers=6) as pool:
        ids = list(pool.map(lambda n: install(runtime, f"token-{n}"), range(6)))
    # Then they all got the one row
    assert len(set(ids)) == 1 and ids[0] == the_store(runtime).id


@pytest.mark.postgres
def test_an_uninstall_stops_the_store_and_keeps_its_delivery(runtime):
    # Given an installed store
    store_id = install(runtime)
    # When its uninstall arrives
    delivery_id = uninstall(runtime, store_id, runtime.now())
    # Then the store is stopped at once, and the delivery is stored for the worker
    assert the_store(runtime).status == StoreStatus.UNINSTALLED
    with runtime.database.session() as session:
        delivery = session.get(WebhookDelivery, delivery_id)
        assert delivery is not None and delivery.topic == "app/uninstalled"


@pytest.mark.postgres
def test_a_reinstall_reactivates_an_uninstalled_store(runtime):
    # Given a store that was installed, then uninstalled
    store_id = install(runtime, "token-1")
    uninstalled_at = runtime.now()
    uninstall(runtime, store_id, uninstalled_at)
    # When the merchant installs again
    again = install(runtime, "token-2")
    # Then the same row is active again, installed after the uninstall, with the new token
    store = the_store(runtime)
    assert again == store_id
    assert store.status == StoreStatus.ACTIVE
    assert store.installed_at is not None and store.installed_at >= uninstalled_at
    assert token_of(runtime, store) == "token-2"


@pytest.mark.postgres
def test_an_uninstall_older_than_the_latest_install_leaves_the_store_active(runtime):
    # Given a store (re)installed now
    store_id = install(runtime)
    installed_at = the_store(runtime).installed_at
    assert installed_at is not None
    # When an uninstall from before that install arrives late
    delivery_id = uninstall(runtime, store_id, installed_at - timedelta(minutes=5))
    # Then it is stored (the worker judges it too) but stops nothing
    assert delivery_id is not None
    assert the_store(runtime).status == StoreStatus.ACTIVE


@pytest.mark.postgres
def test_an_uninstall_already_received_uninstalls_nothing(runtime):
    # Given an uninstall delivery received, then a reinstall
    store_id = install(runtime)
    assert uninstall(runtime, store_id, runtime.now(), delivery_id="d-1") is not None
    install(runtime)
    before: Any = the_store(runtime)
    # When the same delivery comes again (its time after the reinstall, to show it is not judged)
    replay = uninstall(runtime, store_id, runtime.now() + timedelta(minutes=1), delivery_id="d-1")
    # Then it is refused as a duplicate and the store is untouched
    assert replay is None
    after = the_store(runtime)
    assert after.status == StoreStatus.ACTIVE and after.updated_at == before.updated_at
    with runtime.database.session() as session:
        assert len(session.exec(select(WebhookDelivery)).all()) == 1
