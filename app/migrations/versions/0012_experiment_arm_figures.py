"""experiment arm figures: what each assigned cart counts, summed per arm as carts change

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 20:55:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.migrations import column_types

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written out rather than imported from sequences.experiments.figures: a migration keeps meaning
# what it meant when it was written.
SHARDS = 8
OUTCOMES = ("counted", "messaged", "read", "clicked", "recovered", "opted_out")
AMOUNTS = ("revenue", "discount", "messaging_cost")


def upgrade() -> None:
    with op.batch_alter_table("experiment_assignment", schema=None) as batch_op:
        for name in OUTCOMES:
            batch_op.add_column(sa.Column(name, sa.Boolean(), nullable=False, server_default=sa.false()))
        for name in AMOUNTS:
            batch_op.add_column(
                sa.Column(name, column_types.MoneyAmount(), nullable=False, server_default=sa.text("0"))
            )
    op.create_table(
        "experiment_arm_figures",
        sa.Column("arm_id", sa.Integer(), nullable=False),
        sa.Column("shard", sa.Integer(), nullable=False),
        sa.Column("experiment_id", sa.Integer(), nullable=False),
        sa.Column("eligible", sa.Integer(), nullable=False),
        sa.Column("messaged", sa.Integer(), nullable=False),
        sa.Column("read", sa.Integer(), nullable=False),
        sa.Column("clicked", sa.Integer(), nullable=False),
        sa.Column("recovered", sa.Integer(), nullable=False),
        sa.Column("opted_out", sa.Integer(), nullable=False),
        sa.Column("revenue", column_types.MoneyAmount(), nullable=False),
        sa.Column("discounts", column_types.MoneyAmount(), nullable=False),
        sa.Column("messaging_cost", column_types.MoneyAmount(), nullable=False),
        sa.Column("revenue_squares", sa.Float(), nullable=False),
        sa.Column("spend_squares", sa.Float(), nullable=False),
        sa.Column("revenue_spend", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["arm_id"], ["experiment_arm.id"]),
        sa.ForeignKeyConstraint(["experiment_id"], ["experiment.id"]),
        sa.PrimaryKeyConstraint("arm_id", "shard"),
    )
    with op.batch_alter_table("experiment_arm_figures", schema=None) as batch_op:
        batch_op.create_index("ix_experiment_arm_figures_experiment", ["experiment_id"], unique=False)
    _backfill()


def _backfill() -> None:
    """What the carts already assigned count, and their arms' sums, as
    sequences.experiments.figures counts them."""
    if op.get_bind().dialect.name == "postgresql":

        def money(total: str) -> str:
            return f"coalesce({total}, 0)"

        real = "DOUBLE PRECISION"
    else:

        def money(total: str) -> str:
            # SQLite sums the stored text as a float: back to exact text, 4 decimals.
            return f"printf('%.4f', coalesce({total}, 0))"

        real = "REAL"

    def sent(condition: str) -> str:
        return (
            "EXISTS (SELECT 1 FROM message WHERE message.cart_id = experiment_assignment.cart_id"  # noqa: S608 (constants only)
            f" AND {condition} IS NOT NULL)"
        )

    cart = "SELECT {} FROM cart WHERE cart.id = experiment_assignment.cart_id"
    recovered = (
        "cart.ordered_at IS NOT NULL AND cart.ordered_at <= experiment_assignment.counts_until"
        " AND cart.order_cancelled_at IS NULL"
    )
    op.execute(
        "UPDATE experiment_assignment SET counted = TRUE,"  # noqa: S608 (constants only)
        f" messaged = {sent('message.sent_at')}, read = {sent('message.read_at')},"
        f" clicked = {sent('message.clicked_at')},"
        f" recovered = EXISTS ({cart.format('1')} AND {recovered}),"
        f" opted_out = EXISTS ({cart.format('1')} AND cart.status = 'opted_out'),"
        " messaging_cost = "
        + money(
            "(SELECT sum(CAST(cost AS NUMERIC)) FROM message WHERE message.cart_id = experiment_assignment.cart_id)"
        )
    )
    revenue = "CAST(cart.order_total_store AS NUMERIC) - coalesce(CAST(cart.order_refunded AS NUMERIC), 0)"
    discount = "CAST(cart.discount_given AS NUMERIC)"
    op.execute(
        "UPDATE experiment_assignment SET"  # noqa: S608 (constants only)
        f" revenue = {money(f'({cart.format(revenue)})')},"
        f" discount = {money(f'({cart.format(discount)})')}"
        " WHERE recovered"
    )

    def count(name: str) -> str:
        return f"sum(CASE WHEN {name} THEN 1 ELSE 0 END)"

    spend = f"(CAST(discount AS {real}) + CAST(messaging_cost AS {real}))"
    op.execute(
        "INSERT INTO experiment_arm_figures (arm_id, shard, experiment_id, eligible, messaged, read,"  # noqa: S608 (constants only)
        " clicked, recovered, opted_out, revenue, discounts, messaging_cost, revenue_squares,"
        " spend_squares, revenue_spend)"
        f" SELECT arm_id, cart_id % {SHARDS}, experiment_id, count(*),"
        f" {', '.join(count(name) for name in OUTCOMES[1:])},"
        f" {', '.join(money(f'sum(CAST({name} AS NUMERIC))') for name in AMOUNTS)},"
        f" sum(CAST(revenue AS {real}) * CAST(revenue AS {real})), sum({spend} * {spend}),"
        f" sum(CAST(revenue AS {real}) * {spend})"
        f" FROM experiment_assignment GROUP BY arm_id, cart_id % {SHARDS}, experiment_id"
    )


def downgrade() -> None:
    with op.batch_alter_table("experiment_arm_figures", schema=None) as batch_op:
        batch_op.drop_index("ix_experiment_arm_figures_experiment")
    op.drop_table("experiment_arm_figures")
    with op.batch_alter_table("experiment_assignment", schema=None) as batch_op:
        for name in (*reversed(AMOUNTS), *reversed(OUTCOMES)):
            batch_op.drop_column(name)
