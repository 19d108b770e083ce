"""Alembic environment: migrations for SQLite (embedded default) and PostgreSQL.

The migrations themselves import no model: their column types are frozen in
``column_types.py``. This environment does import the models, for ``target_metadata``:
autogenerate compares them with the database to write a new migration.
"""

from __future__ import annotations

import os

from alembic import context
from sqlmodel import SQLModel

import sequences.models  # noqa: F401 - registers the tables on SQLModel.metadata
from app.migrations.column_types import render_item
from sequences.config import Settings
from sequences.db import Database

# The demo platform's tables: their models are never loaded in production, where nothing of
# ``demo`` is (app.wiring, app.create_app). Migration 0001 creates the tables everywhere all
# the same; the models are needed only by autogenerate, run in development, which would
# otherwise write a migration dropping them. CARTBACK_ENV is read as Settings.from_env reads
# it; building the settings here would write development secrets as a side effect.
if os.environ.get("CARTBACK_ENV", "").strip() != "production":
    import demo.store.models  # noqa: F401

config = context.config
url = config.get_main_option("sqlalchemy.url") or Settings.from_env().database_url
target_metadata = SQLModel.metadata


def run_migrations_offline() -> None:
    context.configure(url=url, target_metadata=target_metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    database = Database(url)
    with database.engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            # SQLite cannot ALTER most things; batch mode rebuilds tables instead.
            render_as_batch=database.sqlite,
            compare_type=True,
            # Each migration commits on its own: a backfill then reads the rows the one before
            # it rewrote as committed (in one transaction, 0013's correlated lookups over the
            # assignments 0012 had just rewritten took 20x as long), and an upgrade that stops
            # halfway keeps what it finished.
            transaction_per_migration=True,
            # New migrations name the frozen column types, never the live models'.
            render_item=render_item,
        )
        with context.begin_transaction():
            context.run_migrations()
    database.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
