"""woocommerce: pending connections, captured billing details, the orders poll's mark

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-28 13:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.migrations import column_types

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "platform_connection",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("connection_sha256", sa.String(length=64), nullable=False),
        sa.Column("browser_sha256", sa.String(length=64), nullable=False),
        sa.Column("platform", sa.String(length=32), nullable=False),
        sa.Column("store_url", sa.Text(), nullable=False),
        sa.Column("created_at", column_types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", column_types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("keys_received_at", column_types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("keys_ciphertext", sa.Text(), nullable=True),
        sa.Column("problem", sa.Text(), nullable=True),
        sa.Column("store_id", sa.Integer(), nullable=True),
        sa.Column("returned_at", column_types.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["store_id"], ["store.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("connection_sha256"),
    )
    with op.batch_alter_table("store") as batch:
        batch.add_column(
            sa.Column("orders_synced_at", column_types.UTCDateTime(timezone=True), nullable=True)
        )
    with op.batch_alter_table("cart") as batch:
        batch.add_column(sa.Column("buyer_details", sa.JSON(), nullable=True))
    with op.batch_alter_table("webhook_delivery") as batch:
        batch.add_column(sa.Column("cart_id", sa.Integer(), nullable=True))
        batch.create_index("ix_webhook_delivery_cart_id", ["cart_id"])


def downgrade() -> None:
    with op.batch_alter_table("webhook_delivery") as batch:
        batch.drop_index("ix_webhook_delivery_cart_id")
        batch.drop_column("cart_id")
    with op.batch_alter_table("cart") as batch:
        batch.drop_column("buyer_details")
    with op.batch_alter_table("store") as batch:
        batch.drop_column("orders_synced_at")
    op.drop_table("platform_connection")
