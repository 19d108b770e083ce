"""reconciliation runs: each store's weekly check of recovered revenue, codes and Meta's charges

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 23:59:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.migrations import column_types

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OPEN_RUN = "status IN ('queued', 'running')"


def upgrade() -> None:
    op.create_table(
        "reconciliation_run",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("store_id", sa.Integer(), nullable=False),
        sa.Column("trigger", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", column_types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("started_at", column_types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", column_types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("period_start", column_types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("period_end", column_types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("orders_total", sa.Integer(), nullable=False),
        sa.Column("orders_done", sa.Integer(), nullable=False),
        sa.Column("report", sa.JSON(), nullable=False),
        sa.Column("problem", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["store_id"], ["store.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_reconciliation_run_store_created", "reconciliation_run", ["store_id", "created_at"])
    # One open run per store: a second sweep or a click during a run finds the first.
    op.create_index(
        "ix_reconciliation_run_one_open",
        "reconciliation_run",
        ["store_id"],
        unique=True,
        postgresql_where=sa.text(OPEN_RUN),
        sqlite_where=sa.text(OPEN_RUN),
    )


def downgrade() -> None:
    op.drop_index("ix_reconciliation_run_one_open", table_name="reconciliation_run")
    op.drop_index("ix_reconciliation_run_store_created", table_name="reconciliation_run")
    op.drop_table("reconciliation_run")
