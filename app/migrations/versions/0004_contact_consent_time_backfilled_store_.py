"""contact consent time, backfilled store totals

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 04:04:49.112948
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.migrations import column_types

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("contact", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("consent_observed_at", column_types.UTCDateTime(timezone=True), nullable=True)
        )

    # Carts recovered before 0003 had no store-currency total: where the order was paid in the
    # store's own currency it is the order total (otherwise it stays unknown, as before).
    op.execute(
        "UPDATE cart SET order_total_store = order_total WHERE order_total_store IS NULL "
        "AND order_total IS NOT NULL AND order_currency = (SELECT currency FROM store WHERE store.id = cart.store_id)"
    )


def downgrade() -> None:
    with op.batch_alter_table("contact", schema=None) as batch_op:
        batch_op.drop_column("consent_observed_at")
