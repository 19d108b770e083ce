"""dashboard: figures kept per store and 15 minutes of abandonment

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28 10:40:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.migrations import column_types

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written out rather than imported from sequences.merchant.rollups: a migration keeps meaning what it
# meant when it was written. `cartback dashboard rebuild` recounts with the current code.
BUCKET_SECONDS = 900
RECOVERED = "status = 'recovered' AND order_cancelled_at IS NULL"
REVENUE = "CAST(order_total_store AS NUMERIC) - coalesce(CAST(order_refunded AS NUMERIC), 0)"


def upgrade() -> None:
    op.create_table(
        "dashboard_cart_bucket",
        sa.Column("store_id", sa.Integer(), nullable=False),
        sa.Column("bucket_start", column_types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("abandoned", sa.Integer(), nullable=False),
        sa.Column("reachable", sa.Integer(), nullable=False),
        sa.Column("recovered", sa.Integer(), nullable=False),
        sa.Column("messaged", sa.Integer(), nullable=False),
        sa.Column("opted_out", sa.Integer(), nullable=False),
        sa.Column("recovered_step_1", sa.Integer(), nullable=False),
        sa.Column("recovered_step_2", sa.Integer(), nullable=False),
        sa.Column("recovered_step_3", sa.Integer(), nullable=False),
        sa.Column("revenue", column_types.MoneyAmount(), nullable=False),
        sa.Column("revenue_verified", column_types.MoneyAmount(), nullable=False),
        sa.Column("discounts", column_types.MoneyAmount(), nullable=False),
        sa.ForeignKeyConstraint(["store_id"], ["store.id"]),
        sa.PrimaryKeyConstraint("store_id", "bucket_start"),
    )
    op.create_table(
        "dashboard_message_bucket",
        sa.Column("store_id", sa.Integer(), nullable=False),
        sa.Column("bucket_start", column_types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("step_number", sa.Integer(), nullable=False),
        sa.Column("cost_currency", sa.String(length=3), nullable=False),
        sa.Column("sent", sa.Integer(), nullable=False),
        sa.Column("delivered", sa.Integer(), nullable=False),
        sa.Column("read", sa.Integer(), nullable=False),
        sa.Column("clicked", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("priced", sa.Integer(), nullable=False),
        sa.Column("cost", column_types.MoneyAmount(), nullable=False),
        sa.ForeignKeyConstraint(["store_id"], ["store.id"]),
        sa.PrimaryKeyConstraint("store_id", "bucket_start", "step_number", "cost_currency"),
    )
    _backfill()
    # The opt-out rate is kept per cart now: the opted-out contacts' index is read no more.
    with op.batch_alter_table("contact", schema=None) as batch_op:
        batch_op.drop_index("ix_contact_store_opted_out")


def _backfill() -> None:
    """The buckets of the carts and messages already held, counted as sequences.merchant.rollups does."""
    if op.get_bind().dialect.name == "postgresql":

        def bucket(column: str) -> str:
            return f"to_timestamp(floor(extract(epoch FROM {column}) / {BUCKET_SECONDS}) * {BUCKET_SECONDS})"

        def money(total: str) -> str:
            return f"coalesce({total}, 0)"
    else:

        def bucket(column: str) -> str:
            # The text SQLAlchemy stores for a datetime on SQLite, microseconds included.
            number = f"(CAST(strftime('%s', {column}) AS INTEGER) / {BUCKET_SECONDS})"
            return f"strftime('%Y-%m-%d %H:%M:%S.000000', {number} * {BUCKET_SECONDS}, 'unixepoch')"

        def money(total: str) -> str:
            # SQLite sums the stored text as a float: back to exact text, 4 decimals.
            return f"printf('%.4f', coalesce({total}, 0))"

    steps = ", ".join(
        f"sum(CASE WHEN {RECOVERED} AND recovered_step = {step} THEN 1 ELSE 0 END)" for step in (1, 2, 3)
    )
    op.execute(
        "INSERT INTO dashboard_cart_bucket (store_id, bucket_start, abandoned, reachable, recovered,"  # noqa: S608 (constants only)
        " messaged, opted_out, recovered_step_1, recovered_step_2, recovered_step_3, revenue, revenue_verified, discounts)"
        f" SELECT store_id, {bucket('abandoned_at')}, count(*),"
        " sum(CASE WHEN status != 'unreachable' OR first_message_at IS NOT NULL THEN 1 ELSE 0 END),"
        f" sum(CASE WHEN {RECOVERED} THEN 1 ELSE 0 END),"
        " sum(CASE WHEN first_message_at IS NOT NULL THEN 1 ELSE 0 END),"
        " sum(CASE WHEN first_message_at IS NOT NULL AND status = 'opted_out' THEN 1 ELSE 0 END),"
        f" {steps},"
        f" {money(f'sum(CASE WHEN {RECOVERED} THEN {REVENUE} END)')},"
        f" {money(f'sum(CASE WHEN {RECOVERED} AND order_verified_at IS NOT NULL THEN {REVENUE} END)')},"
        f" {money(f'sum(CASE WHEN {RECOVERED} THEN CAST(discount_given AS NUMERIC) END)')}"
        f" FROM cart WHERE abandoned_at IS NOT NULL GROUP BY store_id, {bucket('abandoned_at')}"
    )
    sent = "sent_at IS NOT NULL"
    op.execute(
        "INSERT INTO dashboard_message_bucket (store_id, bucket_start, step_number, cost_currency, sent,"  # noqa: S608 (constants only)
        " delivered, read, clicked, failed, priced, cost)"
        f" SELECT store_id, {bucket('cart_abandoned_at')}, step_number, coalesce(cost_currency, ''),"
        f" sum(CASE WHEN {sent} THEN 1 ELSE 0 END),"
        f" sum(CASE WHEN {sent} AND (delivered_at IS NOT NULL OR read_at IS NOT NULL) THEN 1 ELSE 0 END),"
        f" sum(CASE WHEN {sent} AND read_at IS NOT NULL THEN 1 ELSE 0 END),"
        f" sum(CASE WHEN {sent} AND clicked_at IS NOT NULL THEN 1 ELSE 0 END),"
        " sum(CASE WHEN status = 'failed' THEN 1 ELSE 0 END),"
        " sum(CASE WHEN cost IS NOT NULL THEN 1 ELSE 0 END),"
        f" {money('sum(CAST(cost AS NUMERIC))')}"
        " FROM message WHERE cart_abandoned_at IS NOT NULL"
        f" GROUP BY store_id, {bucket('cart_abandoned_at')}, step_number, coalesce(cost_currency, '')"
    )


def downgrade() -> None:
    with op.batch_alter_table("contact", schema=None) as batch_op:
        batch_op.create_index(
            "ix_contact_store_opted_out",
            ["store_id", "opted_out_at"],
            unique=False,
            postgresql_where=sa.text("opted_out_at IS NOT NULL"),
            sqlite_where=sa.text("opted_out_at IS NOT NULL"),
        )
    op.drop_table("dashboard_message_bucket")
    op.drop_table("dashboard_cart_bucket")
