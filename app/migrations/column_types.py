"""The column types the migrations use, frozen as they were when the migrations were written.

A migration is history: it must build the same schema next year as on the day it was written,
whatever happens to the models since. So the migrations never import ``sequences.models``;
they use these copies instead, and moving or changing a model never changes an old migration.

These are copies of ``sequences.models.types`` as of migrations 0001-0009 (the types have not
changed since 0001). If a live type changes in a way that matters to the schema, add the new
version here under a new name for the new migrations and leave these as they are. New
migrations name these types through ``column_types.`` (``env.py``'s ``render_item`` and
``script.py.mako``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import DateTime, Dialect, Numeric, String
from sqlalchemy.types import TypeDecorator

# Where the live types are; named, not imported: this module imports nothing of the app.
LIVE_TYPES_MODULE = "sequences.models.types"


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite keeps no zone; we add it back)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column; use datetime.now(UTC)")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class MoneyAmount(TypeDecorator[Decimal]):
    """Exact decimal amounts. SQLite has no decimal type, so it stores the canonical text."""

    impl = Numeric(18, 4)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(40))
        return dialect.type_descriptor(Numeric(18, 4, asdecimal=True))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if not isinstance(value, Decimal):
            raise TypeError(f"money must be Decimal, got {type(value).__name__}")
        return str(value) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        return value if isinstance(value, Decimal) else Decimal(str(value))


def render_item(kind: str, item: Any, _context: Any) -> str | Literal[False]:
    """Autogenerate's hook: a live model type is written as its frozen copy here.

    ``column_types.UTCDateTime(timezone=True)`` rather than ``sequences.models.types...``;
    anything else is left to Alembic (``False``).
    """
    if kind != "type" or type(item).__module__ != LIVE_TYPES_MODULE:
        return False
    name = type(item).__name__
    frozen = globals().get(name)
    if not (isinstance(frozen, type) and issubclass(frozen, TypeDecorator)):
        raise LookupError(
            f"{LIVE_TYPES_MODULE}.{name} has no frozen copy: add one to app/migrations/column_types.py"
        )
    return f"column_types.{item!r}"
