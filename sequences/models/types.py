"""Column types and field helpers shared by every table.

Money is ``Decimal`` stored exactly (``MoneyAmount``); times are timezone-aware UTC on every
backend (``UTCDateTime``). The migrations keep their own frozen copies of these types
(``app/migrations/column_types.py``): changing one here never changes an old migration.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Dialect, Numeric, String
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field


def utcnow() -> datetime:
    return datetime.now(UTC)


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


def time_field(*, nullable: bool = True, index: bool = False) -> Any:
    """A UTC time column, None until set."""
    return Field(
        default=None,
        sa_column=Column(UTCDateTime(), nullable=nullable, index=index),
    )


def money_field(*, nullable: bool = True) -> Any:
    """An exact money column (``MoneyAmount``), None until set."""
    return Field(default=None, sa_column=Column(MoneyAmount(), nullable=nullable))


def json_field(*, default: Any) -> Any:
    """A JSON column that is never NULL; ``default`` makes its empty value (``dict``, ``list``)."""
    return Field(default_factory=default, sa_column=Column(JSON, nullable=False))
