"""incidents: alert rules' findings per store and for the service; a store's platform failing since

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-08 00:20:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.migrations import column_types

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OPEN_INCIDENT = "status = 'open'"


def upgrade() -> None:
    op.create_table(
        "incident",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("store_id", sa.Integer(), nullable=True),
        sa.Column("scope", sa.String(length=32), nullable=False),
        sa.Column("rule", sa.String(length=48), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("opened_at", column_types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", column_types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("clear_since", column_types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("ended_at", column_types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("note_at", column_types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("opened_notice", sa.Text(), nullable=True),
        sa.Column("closed_notice", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["store_id"], ["store.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_incident_store_opened", "incident", ["store_id", "opened_at"])
    # One open incident per scope and rule: a second evaluation finds the first.
    op.create_index(
        "ix_incident_one_open",
        "incident",
        ["scope", "rule"],
        unique=True,
        postgresql_where=sa.text(OPEN_INCIDENT),
        sqlite_where=sa.text(OPEN_INCIDENT),
    )
    # Not batch mode: SQLite adds a nullable column itself (batch mode would copy the store
    # table, which every other table references).
    op.add_column(
        "store", sa.Column("platform_failing_since", column_types.UTCDateTime(timezone=True), nullable=True)
    )
    op.add_column("store", sa.Column("platform_failure", sa.Text(), nullable=True))


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("ALTER TABLE store DROP COLUMN platform_failure")
        op.execute("ALTER TABLE store DROP COLUMN platform_failing_since")
    else:
        op.drop_column("store", "platform_failure")
        op.drop_column("store", "platform_failing_since")
    op.drop_index("ix_incident_one_open", table_name="incident")
    op.drop_index("ix_incident_store_opened", table_name="incident")
    op.drop_table("incident")
