"""The dashboard's kept figures (sequences.merchant.rollups) stay equal to a recount of the carts and
messages: as the engine changes them (every test checks this as it ends, in conftest), when two
transactions change the same 15 minutes at once, after a migration, and after a rebuild."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import text
from sqlmodel import select

from app.dbmigrate import alembic_config
from sequences.merchant import rollups
from sequences.models import (
    Cart,
    CartStatus,
    DashboardCartBucket,
    DashboardMessageBucket,
    Store,
)
from sequences.runtime import Runtime
from tests.support.admin import DAY, seed_dashboard
from tests.support.factories import make_store


def _stored(runtime: Runtime, store_id: int) -> tuple[dict[Any, Any], dict[Any, Any]]:
    with runtime.database.session() as session:
        return rollups.stored_carts(session, store_id), rollups.stored_messages(session, store_id)


def _abandoned_cart(runtime: Runtime, store: Store, number: int, at: datetime) -> int:
    with runtime.database.session() as session:
        cart = Cart(
            store_id=store.id or 0,
            platform_cart_id=f"chk_rollup_{number}",
            currency="INR",
            subtotal=Decimal("999.00"),
            total=Decimal("999.00"),
            platform_updated_at=at,
            last_activity_at=at,
            abandoned_at=at,
            status=CartStatus.ABANDONED,
            first_message_at=at,
            line_count=1,
        )
        session.add(cart)
        session.flush()
        assert cart.id is not None
        return cart.id


def test_buckets_are_the_15_minutes_of_abandonment_in_utc() -> None:
    at = datetime(2026, 11, 20, 6, 44, 59, 999999, tzinfo=UTC)
    assert rollups.bucket_start(at) == datetime(2026, 11, 20, 6, 30, tzinfo=UTC)
    assert rollups.bucket_start(at + timedelta(microseconds=1)) == datetime(2026, 11, 20, 6, 45, tzinfo=UTC)


@pytest.mark.postgres
def test_the_kept_figures_are_those_of_the_seeded_data(runtime: Runtime) -> None:
    store = make_store(runtime)
    assert store.id is not None
    expected = seed_dashboard(runtime, store)
    carts, messages = _stored(runtime, store.id)
    in_period = [figures for at, figures in carts.items() if at >= DAY - timedelta(days=19)]
    assert sum(f["abandoned"] for f in in_period) == expected.abandoned
    assert sum(f["revenue"] for f in in_period) == expected.revenue
    assert sum(f["revenue_verified"] for f in in_period) == expected.revenue_verified
    assert sum(f["cost"] for key, f in messages.items() if key[2] == "INR" and key[0] >= DAY) == expected.cost
    with runtime.database.session() as session:
        assert rollups.differences(session, store.id) == []


@pytest.mark.postgres
def test_a_cart_moved_to_other_15_minutes_leaves_its_old_bucket(runtime: Runtime) -> None:
    store = make_store(runtime)
    assert store.id is not None
    cart_id = _abandoned_cart(runtime, store, 1, DAY)
    with runtime.database.session() as session:
        cart = session.get(Cart, cart_id)
        assert cart is not None
        cart.abandoned_at = DAY + timedelta(hours=2)
    carts, _ = _stored(runtime, store.id)
    assert {at: f["abandoned"] for at, f in carts.items()} == {DAY: 0, DAY + timedelta(hours=2): 1}


@pytest.mark.postgres(only=True)
def test_two_transactions_changing_the_same_15_minutes_at_once_both_count(runtime: Runtime) -> None:
    """Each recount locks its bucket first: the one that waited sees the other's committed rows."""
    store = make_store(runtime)
    assert store.id is not None
    cart_ids = [_abandoned_cart(runtime, store, number, DAY + timedelta(minutes=number)) for number in (1, 2)]
    both_flushed = threading.Barrier(2, timeout=10)
    errors: list[BaseException] = []

    def recover(cart_id: int, total: str) -> None:
        try:
            with runtime.database.locked_session() as session:
                cart = session.get(Cart, cart_id)
                assert cart is not None
                cart.status, cart.order_total_store = CartStatus.RECOVERED, Decimal(total)
                session.flush()
                # Both changes are written, neither committed: both recounts start together.
                both_flushed.wait()
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=recover, args=(cart_id, total))
        for cart_id, total in zip(cart_ids, ("1000.50", "2000.25"), strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    carts, _ = _stored(runtime, store.id)
    (figures,) = carts.values()
    assert (figures["recovered"], figures["revenue"]) == (2, Decimal("3000.7500"))


@pytest.mark.postgres
def test_the_migration_counts_what_was_held_before_it(runtime: Runtime, database_url: str) -> None:
    from alembic import command

    store = make_store(runtime)
    assert store.id is not None
    seed_dashboard(runtime, store)
    before = _stored(runtime, store.id)
    assert before[0] and before[1]
    # The database as 0007 left it: no kept figures.
    with runtime.database.engine.begin() as connection:
        connection.execute(text("DROP TABLE dashboard_message_bucket"))
        connection.execute(text("DROP TABLE dashboard_cart_bucket"))
        connection.execute(
            text(
                "CREATE INDEX ix_contact_store_opted_out ON contact (store_id, opted_out_at)"
                " WHERE opted_out_at IS NOT NULL"
            )
        )
    command.stamp(alembic_config(database_url), "0007")

    command.upgrade(alembic_config(database_url), "0008")

    assert _stored(runtime, store.id) == before


@pytest.mark.postgres
def test_rebuild_puts_right_what_was_changed_behind_the_orms_back(runtime: Runtime, monkeypatch: Any) -> None:
    from app.cli import main as cli

    store = make_store(runtime)
    assert store.id is not None
    seed_dashboard(runtime, store)
    before = _stored(runtime, store.id)
    with runtime.database.engine.begin() as connection:
        connection.execute(text("UPDATE dashboard_cart_bucket SET recovered = 99, revenue = '1'"))
        connection.execute(text("DELETE FROM dashboard_message_bucket WHERE step_number = 2"))
    with runtime.database.session() as session:
        session.add(
            DashboardCartBucket(store_id=store.id, bucket_start=datetime(2026, 1, 1, tzinfo=UTC), abandoned=3)
        )
        session.add(
            DashboardMessageBucket(
                store_id=store.id, bucket_start=datetime(2026, 1, 1, tzinfo=UTC), step_number=1, sent=3
            )
        )
        assert len(rollups.differences(session, store.id)) > 3

    monkeypatch.setattr("app.wiring.build_runtime", lambda _settings: runtime)
    monkeypatch.setattr(cli, "_settings", lambda: runtime.settings)
    result = CliRunner().invoke(cli.main, ["dashboard", "rebuild"])

    assert result.exit_code == 0, result.output
    assert "store 1: 100%" in result.output
    wrong = len(before[0]) + 1  # every cart bucket, and the bogus one
    assert "were wrong" in result.output and f"Done: 1 stores, {wrong} buckets fixed." in result.output
    assert _stored(runtime, store.id) == before
    again = CliRunner().invoke(cli.main, ["dashboard", "rebuild", "--store", str(store.id)])
    assert again.exit_code == 0 and "Done: 1 stores, 0 buckets fixed." in again.output
    with runtime.database.session() as session:
        assert session.exec(select(Store)).first() is not None


@pytest.mark.postgres(only=True)
def test_a_change_made_from_an_older_copy_of_a_message_is_counted_once(runtime: Runtime) -> None:
    """Two status webhooks for one message, each loading it before the other commits: the
    second's delta starts from the row as committed, not from its own older copy."""
    from sequences.models import Message

    store = make_store(runtime)
    assert store.id is not None
    seed_dashboard(runtime, store)
    with runtime.database.session() as session:
        message_id = session.exec(
            select(Message.id).where(
                Message.store_id == store.id, Message.read_at.is_(None), Message.sent_at.is_not(None)
            )  # type: ignore[union-attr]
        ).first()
    read_before = sum(f["read"] for f in _stored(runtime, store.id)[1].values())
    with runtime.database.session() as late:
        older_copy = late.get(Message, message_id)
        assert older_copy is not None and older_copy.read_at is None
        with runtime.database.session() as first:
            message = first.get(Message, message_id)
            assert message is not None
            message.read_at = DAY + timedelta(hours=3)
        older_copy.read_at = DAY + timedelta(hours=3)

    assert sum(f["read"] for f in _stored(runtime, store.id)[1].values()) == read_before + 1


def test_every_database_built_in_a_process_keeps_its_figures(tmp_path: Any) -> None:
    """A process that builds many runtimes (this test suite; a CLI command beside a worker) gets
    the figures kept for each: SQLAlchemy's listener registry keys by ``id()`` and keeps a dead
    sessionmaker's key, so a new sessionmaker at the same address once looked registered and
    kept nothing (a rare "kept None" in the suite: every figure of a test missing)."""
    import gc

    from sequences.db import Database
    from tests.conftest import all_tables_metadata

    url = f"sqlite:///{tmp_path}/figures.db"
    first = Database(url)
    all_tables_metadata().metadata.create_all(first.engine)
    first.dispose()
    store = Store(platform="demo", platform_store_id="s", name="S", timezone="Asia/Kolkata")
    at = datetime(2026, 11, 20, 6, 44, tzinfo=UTC)
    seen: set[int] = set()
    for attempt in range(40):
        database = Database(url)
        # Built and dropped again and again, sessionmakers come back at addresses used before.
        reused = id(database.sessions) in seen
        seen.add(id(database.sessions))
        rollups.keep_figures(database)
        if attempt == 0:
            with database.session() as session:
                session.add(store)
        _abandoned_cart(type("R", (), {"database": database})(), store, attempt, at)
        with database.session() as session:
            kept = sum(
                figures["abandoned"] for figures in rollups.stored_carts(session, store.id or 0).values()
            )
        assert kept == attempt + 1, f"database {attempt} (address reused: {reused}) kept no figures"
        database.dispose()
        del database
        gc.collect()
