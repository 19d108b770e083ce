"""Reconciliation runs: each store's weekly (or requested) check of its recovered revenue,
discount codes and messaging cost against the platforms' own records, and what it found.

At most one run per store is open (queued or running) at a time: a partial unique index, so
two sweeps or a merchant's click during a scheduled run never start a second one.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Column, Index, String, Text, text
from sqlmodel import Field, SQLModel

from sequences.models.types import UTCDateTime, json_field, time_field, utcnow


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class RunTrigger(StrEnum):
    SCHEDULE = "schedule"
    MERCHANT = "merchant"
    COMMAND = "command"


OPEN_RUN = "status IN ('queued', 'running')"


class ReconciliationRun(SQLModel, table=True):
    __tablename__ = "reconciliation_run"
    __table_args__ = (
        Index(
            "ix_reconciliation_run_one_open",
            "store_id",
            unique=True,
            sqlite_where=text(OPEN_RUN),
            postgresql_where=text(OPEN_RUN),
        ),
        Index("ix_reconciliation_run_store_created", "store_id", "created_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    store_id: int = Field(foreign_key="store.id")
    trigger: str = Field(sa_column=Column(String(16), nullable=False))
    status: str = Field(default=RunStatus.QUEUED, sa_column=Column(String(16), nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    started_at: datetime | None = time_field()
    finished_at: datetime | None = time_field()
    # Orders placed in [period_start, period_end) are re-read; messaging cost is compared for
    # the whole UTC days of the week before period_end.
    period_start: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    period_end: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    # Progress while it runs: orders to read and read so far.
    orders_total: int = Field(default=0)
    orders_done: int = Field(default=0)
    # What it found (``reconciliation.report``), and why it stopped when it failed.
    report: dict[str, Any] = json_field(default=dict)
    problem: str | None = Field(default=None, sa_column=Column(Text))
