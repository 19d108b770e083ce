"""customer value: shoppers' orders, and per shopper in each arm their 90-day value and
whether they abandoned again

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 21:05:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.migrations import column_types

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written out rather than imported from sequences.experiments (a migration keeps meaning what
# it meant when it was written): a shopper's value counts their orders over 90 days.


def upgrade() -> None:
    op.create_table(
        "shopper_order",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("store_id", sa.Integer(), nullable=False),
        sa.Column("contact_id", sa.Integer(), nullable=False),
        sa.Column("order_platform_id", sa.String(length=255), nullable=False),
        sa.Column("ordered_at", column_types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("total_store", column_types.MoneyAmount(), nullable=True),
        sa.Column("cart_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["cart_id"], ["cart.id"]),
        sa.ForeignKeyConstraint(["contact_id"], ["contact.id"]),
        sa.ForeignKeyConstraint(["store_id"], ["store.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("store_id", "order_platform_id"),
    )
    with op.batch_alter_table("shopper_order", schema=None) as batch_op:
        batch_op.create_index("ix_shopper_order_contact", ["contact_id", "ordered_at"], unique=False)
    postgresql = op.get_bind().dialect.name == "postgresql"
    with op.batch_alter_table("experiment_assignment", schema=None) as batch_op:
        # Filled below, then required.
        batch_op.add_column(sa.Column("value_until", column_types.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("shopper", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(
            sa.Column(
                "customer_value", column_types.MoneyAmount(), nullable=False, server_default=sa.text("0")
            )
        )
        batch_op.add_column(
            sa.Column("abandoned_again", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.create_index(
            "ix_experiment_assignment_contact", ["contact_id", "experiment_id"], unique=False
        )
    with op.batch_alter_table("experiment_arm_figures", schema=None) as batch_op:
        batch_op.add_column(sa.Column("shoppers", sa.Integer(), nullable=False, server_default=sa.text("0")))
        batch_op.add_column(
            sa.Column(
                "customer_value", column_types.MoneyAmount(), nullable=False, server_default=sa.text("0")
            )
        )
        batch_op.add_column(
            sa.Column("customer_value_squares", sa.Float(), nullable=False, server_default=sa.text("0"))
        )
        batch_op.add_column(
            sa.Column("abandoned_again", sa.Integer(), nullable=False, server_default=sa.text("0"))
        )
    if postgresql:
        op.execute("UPDATE experiment_assignment SET value_until = assigned_at + interval '90 days'")
    else:
        # SQLite keeps 'YYYY-MM-DD HH:MM:SS.ffffff': the date moved, the fraction kept.
        op.execute(
            "UPDATE experiment_assignment SET value_until ="
            " strftime('%Y-%m-%d %H:%M:%S', assigned_at, '+90 days') || substr(assigned_at, 20)"
        )
    with op.batch_alter_table("experiment_assignment", schema=None) as batch_op:
        batch_op.alter_column(
            "value_until", existing_type=column_types.UTCDateTime(timezone=True), nullable=False
        )
    _backfill(postgresql)


def _backfill(postgresql: bool) -> None:
    """The orders already on the carts of shoppers in an experiment, and what each shopper's
    first cart counts, as sequences.experiments.figures counts it."""

    def money(total: str) -> str:
        # SQLite sums the stored text as a float: back to exact text, 4 decimals.
        return f"coalesce({total}, 0)" if postgresql else f"printf('%.4f', coalesce({total}, 0))"

    real = "DOUBLE PRECISION" if postgresql else "REAL"
    op.execute(
        "INSERT INTO shopper_order (store_id, contact_id, order_platform_id, ordered_at, total_store, cart_id)"
        " SELECT store_id, contact_id, order_platform_id, ordered_at, order_total_store, id FROM cart"
        " WHERE order_platform_id IS NOT NULL AND ordered_at IS NOT NULL AND contact_id IN"
        " (SELECT contact_id FROM experiment_assignment)"
    )
    op.execute(
        "UPDATE experiment_assignment SET shopper = NOT EXISTS (SELECT 1 FROM experiment_assignment earlier"
        " WHERE earlier.experiment_id = experiment_assignment.experiment_id AND earlier.contact_id = experiment_assignment.contact_id"
        " AND earlier.id < experiment_assignment.id)"
    )
    op.execute(
        "UPDATE experiment_assignment SET customer_value = "  # noqa: S608 (constants only)
        + money(
            "(SELECT sum(CAST(total_store AS NUMERIC)) FROM shopper_order WHERE shopper_order.contact_id"
            " = experiment_assignment.contact_id AND shopper_order.ordered_at >= experiment_assignment.assigned_at"
            " AND shopper_order.ordered_at <= experiment_assignment.value_until)"
        )
        + ", abandoned_again = EXISTS (SELECT 1 FROM cart later WHERE later.contact_id = experiment_assignment.contact_id"
        " AND later.id <> experiment_assignment.cart_id AND later.abandoned_at > experiment_assignment.assigned_at"
        " AND later.abandoned_at <= experiment_assignment.value_until)"
        " WHERE shopper"
    )
    grouped = (
        f"SELECT arm_id, cart_id % 8 AS shard, count(*) FILTER (WHERE shopper) AS shoppers,"  # noqa: S608 (constants only)
        f" {money('sum(CAST(customer_value AS NUMERIC))')} AS value,"
        f" sum(CAST(customer_value AS {real}) * CAST(customer_value AS {real})) AS squares,"
        " count(*) FILTER (WHERE abandoned_again) AS again"
        f" FROM experiment_assignment GROUP BY arm_id, cart_id % 8"
    )
    op.execute(
        "UPDATE experiment_arm_figures SET"  # noqa: S608 (constants only)
        " shoppers = grouped.shoppers, customer_value = grouped.value,"
        " customer_value_squares = grouped.squares, abandoned_again = grouped.again"
        f" FROM ({grouped}) AS grouped"
        " WHERE experiment_arm_figures.arm_id = grouped.arm_id AND experiment_arm_figures.shard = grouped.shard"
    )


def downgrade() -> None:
    with op.batch_alter_table("experiment_arm_figures", schema=None) as batch_op:
        for name in ("abandoned_again", "customer_value_squares", "customer_value", "shoppers"):
            batch_op.drop_column(name)
    with op.batch_alter_table("experiment_assignment", schema=None) as batch_op:
        batch_op.drop_index("ix_experiment_assignment_contact")
        for name in ("abandoned_again", "customer_value", "shopper", "value_until"):
            batch_op.drop_column(name)
    with op.batch_alter_table("shopper_order", schema=None) as batch_op:
        batch_op.drop_index("ix_shopper_order_contact")
    op.drop_table("shopper_order")
