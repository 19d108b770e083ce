"""Alembic migrations build exactly the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

from app.dbmigrate import upgrade
from sequences.db import Database


@pytest.mark.postgres
def test_migrations_match_the_models(database_url):
    import demo.store.models  # noqa: F401
    import sequences.models  # noqa: F401

    upgrade(database_url)
    database = Database(database_url)
    try:
        with database.engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": False})
            differences = compare_metadata(context, SQLModel.metadata)
    finally:
        database.dispose()
    assert differences == []


@pytest.mark.postgres
def test_upgrading_twice_is_harmless(database_url):
    upgrade(database_url)
    upgrade(database_url)


@pytest.mark.postgres
def test_carts_recovered_before_store_totals_existed_get_them_from_their_own_currency(database_url):
    from sqlalchemy import text

    upgrade(database_url, "0003")
    database = Database(database_url)
    try:
        with database.engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO store (id, platform, platform_store_id, name, status, currency, locale, timezone, "
                    "default_region, api_base_url, storefront_url, sending_paused, settings, created_at, updated_at) "
                    "VALUES (1, 'demo', 's', 'S', 'active', 'INR', 'en_IN', 'Asia/Kolkata', 'IN', '', '', false, "
                    "'{}', :now, :now)"
                ),
                {"now": "2026-11-01 00:00:00"},
            )
            for cart_id, currency in ((1, "INR"), (2, "USD")):
                connection.execute(
                    text(
                        "INSERT INTO cart (id, store_id, platform_cart_id, status, currency, subtotal, total, "
                        "line_count, platform_updated_at, last_activity_at, created_at, updated_at, order_total, "
                        "order_currency) VALUES (:id, 1, :ref, 'recovered', :currency, 10, 10, 1, :now, :now, :now, "
                        ":now, 2098.5, :currency)"
                    ),
                    {"id": cart_id, "ref": f"c{cart_id}", "currency": currency, "now": "2026-11-01 00:00:00"},
                )
        upgrade(database_url)
        with database.engine.connect() as connection:
            totals = dict(
                connection.execute(text("SELECT id, order_total_store FROM cart ORDER BY id")).all()
            )
    finally:
        database.dispose()
    assert str(totals[1]).startswith("2098.5") and totals[2] is None
