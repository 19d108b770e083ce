"""delivery times and store-currency totals

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 02:59:26.018980
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.migrations import column_types

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("cart", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("order_total_store", column_types.MoneyAmount(precision=18, scale=4), nullable=True)
        )

    with op.batch_alter_table("webhook_delivery", schema=None) as batch_op:
        batch_op.add_column(sa.Column("triggered_at", column_types.UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("webhook_delivery", schema=None) as batch_op:
        batch_op.drop_column("triggered_at")

    with op.batch_alter_table("cart", schema=None) as batch_op:
        batch_op.drop_column("order_total_store")
