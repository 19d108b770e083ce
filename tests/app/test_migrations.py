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
    import app.demo_store.models  # noqa: F401
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
