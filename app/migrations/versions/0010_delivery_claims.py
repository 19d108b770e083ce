"""webhook deliveries: claimed in batches by the workers (no RQ job per delivery)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 21:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.migrations import column_types

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Rows pending today start unclaimed with no attempts: the first drain takes them.
    with op.batch_alter_table("webhook_delivery") as batch:
        batch.add_column(sa.Column("claimed_until", column_types.UTCDateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("webhook_delivery") as batch:
        batch.drop_column("attempts")
        batch.drop_column("claimed_until")
