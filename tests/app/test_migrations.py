"""Alembic migrations build exactly the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata, produce_migrations, render_python_code
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlmodel import SQLModel

from app.dbmigrate import MIGRATIONS_DIR, alembic_config, upgrade
from app.migrations.column_types import render_item
from sequences.db import Database

ROOT = Path(__file__).resolve().parents[2]
# What a migration may not import: the live code, which moves and changes after it is written.
LIVE_PACKAGES = ("sequences", "demo", "channels", "connectors")


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


def test_no_migration_imports_the_live_code():
    """A migration means the same for ever: moving or changing a model must not change it."""
    offenders = []
    for path in sorted((MIGRATIONS_DIR / "versions").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                modules = [node.module or ""] if node.level == 0 else ["(relative)"]
            else:
                continue
            offenders += [
                f"{path.name} imports {module}"
                for module in modules
                if module.split(".")[0] in LIVE_PACKAGES
                or (module.split(".")[0] == "app" and module != "app.migrations")
                or module == "(relative)"
            ]
    assert offenders == []


def test_new_migrations_are_written_with_the_frozen_column_types(database_url):
    import demo.store.models  # noqa: F401
    import sequences.models  # noqa: F401

    database = Database(database_url)
    try:
        with database.engine.connect() as connection:
            script = produce_migrations(MigrationContext.configure(connection), SQLModel.metadata)
    finally:
        database.dispose()
    code = render_python_code(script.upgrade_ops, render_item=render_item)
    assert "column_types.UTCDateTime(timezone=True)" in code
    assert "column_types.MoneyAmount(" in code
    assert "sequences" not in code
    template = (MIGRATIONS_DIR / "script.py.mako").read_text()
    assert "from app.migrations import column_types" in template
    assert "sequences" not in template


@pytest.mark.postgres
def test_autogenerate_finds_nothing_to_do_after_the_migrations(database_url):
    # The environment's models include the demo platform's tables outside production: a new
    # migration written in development must not drop them.
    upgrade(database_url)
    command.check(alembic_config(database_url))


def test_upgrading_in_production_imports_nothing_of_the_demo(tmp_path):
    url = f"sqlite:///{tmp_path}/cartback.db"
    code = (
        "import sys\n"
        "from app.dbmigrate import upgrade\n"
        f"upgrade({url!r})\n"
        "print(sorted(m for m in sys.modules if m == 'demo' or m.startswith('demo.')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "CARTBACK_ENV": "production"},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[]"
    database = Database(url)
    try:
        tables = set(inspect(database.engine).get_table_names())
    finally:
        database.dispose()
    # The demo's tables are still made by migration 0001, as before: only its code stays out.
    assert {"store", "cart", "demo_checkout"} <= tables
