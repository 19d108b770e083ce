"""shopify connector

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 02:24:30.087697
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.migrations import column_types

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "data_export",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("store_id", sa.Integer(), nullable=False),
        sa.Column("request_ref", sa.String(length=255), nullable=True),
        sa.Column("customer_ref", sa.String(length=255), nullable=True),
        sa.Column("content", sa.JSON(), nullable=False),
        sa.Column("created_at", column_types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["store_id"],
            ["store.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("data_export", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_data_export_store_id"), ["store_id"], unique=False)

    op.create_table(
        "variant_image",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("store_id", sa.Integer(), nullable=False),
        sa.Column("platform_variant_id", sa.String(length=255), nullable=False),
        sa.Column("image_url", sa.Text(), nullable=True),
        sa.Column("fetched_at", column_types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["store_id"],
            ["store.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("store_id", "platform_variant_id"),
    )
    with op.batch_alter_table("cart", schema=None) as batch_op:
        batch_op.add_column(sa.Column("order_financial_status", sa.String(length=32), nullable=True))
        batch_op.add_column(
            sa.Column("order_refunded", column_types.MoneyAmount(precision=18, scale=4), nullable=True)
        )
        batch_op.add_column(
            sa.Column("order_cancelled_at", column_types.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("order_verified_at", column_types.UTCDateTime(timezone=True), nullable=True)
        )

    with op.batch_alter_table("consent_event", schema=None) as batch_op:
        batch_op.add_column(sa.Column("platform_sync", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("platform_sync_detail", sa.Text(), nullable=True))

    with op.batch_alter_table("discount", schema=None) as batch_op:
        batch_op.add_column(sa.Column("redeemed_at", column_types.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(
            sa.Column("platform_deleted_at", column_types.UTCDateTime(timezone=True), nullable=True)
        )

    with op.batch_alter_table("store", schema=None) as batch_op:
        batch_op.add_column(sa.Column("refresh_token_ciphertext", sa.Text(), nullable=True))
        batch_op.add_column(
            sa.Column("access_token_expires_at", column_types.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("refresh_token_expires_at", column_types.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("scopes", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("installed_at", column_types.UTCDateTime(timezone=True), nullable=True))

    with op.batch_alter_table("webhook_delivery", schema=None) as batch_op:
        batch_op.add_column(sa.Column("event_id", sa.String(length=255), nullable=True))
        batch_op.create_unique_constraint(
            "uq_webhook_delivery_event", ["platform", "store_id", "topic", "event_id"]
        )


def downgrade() -> None:
    with op.batch_alter_table("webhook_delivery", schema=None) as batch_op:
        batch_op.drop_constraint("uq_webhook_delivery_event", type_="unique")
        batch_op.drop_column("event_id")

    with op.batch_alter_table("store", schema=None) as batch_op:
        batch_op.drop_column("installed_at")
        batch_op.drop_column("scopes")
        batch_op.drop_column("refresh_token_expires_at")
        batch_op.drop_column("access_token_expires_at")
        batch_op.drop_column("refresh_token_ciphertext")

    with op.batch_alter_table("discount", schema=None) as batch_op:
        batch_op.drop_column("platform_deleted_at")
        batch_op.drop_column("redeemed_at")

    with op.batch_alter_table("consent_event", schema=None) as batch_op:
        batch_op.drop_column("platform_sync_detail")
        batch_op.drop_column("platform_sync")

    with op.batch_alter_table("cart", schema=None) as batch_op:
        batch_op.drop_column("order_verified_at")
        batch_op.drop_column("order_cancelled_at")
        batch_op.drop_column("order_refunded")
        batch_op.drop_column("order_financial_status")

    op.drop_table("variant_image")
    with op.batch_alter_table("data_export", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_data_export_store_id"))

    op.drop_table("data_export")
