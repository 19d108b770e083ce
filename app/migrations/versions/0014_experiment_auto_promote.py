"""experiment auto-promotion: the merchant lets the winner be promoted by itself

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 21:20:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Not batch mode (see downgrade): SQLite adds a column with a default itself.
    op.add_column(
        "experiment", sa.Column("auto_promote", sa.Boolean(), nullable=False, server_default=sa.false())
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        # Not batch mode: it would copy and drop the experiment table, which the arms and
        # assignments reference (SQLite's foreign keys are on). SQLite drops a column itself.
        op.execute("ALTER TABLE experiment DROP COLUMN auto_promote")
    else:
        op.drop_column("experiment", "auto_promote")
