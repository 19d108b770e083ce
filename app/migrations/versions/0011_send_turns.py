"""carts: the moment their number's pace keeps for their next message, claimed first

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 03:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.migrations import column_types

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # No turn is kept for any cart today: a cart waiting its number's pace takes a new one.
    with op.batch_alter_table("cart") as batch:
        batch.add_column(sa.Column("send_turn_at", column_types.UTCDateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_cart_turn_wake",
        "cart",
        ["next_wake_at"],
        postgresql_where=sa.text("send_turn_at IS NOT NULL"),
        sqlite_where=sa.text("send_turn_at IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_cart_turn_wake", table_name="cart")
    with op.batch_alter_table("cart") as batch:
        batch.drop_column("send_turn_at")
