"""experiments: experiments, their arms, each eligible cart's arm

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 18:10:11.251601
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
    op.create_table(
        "experiment",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("store_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("metric", sa.String(length=32), nullable=False),
        sa.Column("planned_per_arm", sa.Integer(), nullable=False),
        sa.Column("assignment_key", sa.String(length=64), nullable=False),
        sa.Column("started_at", column_types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("stopped_at", column_types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("promoted_arm_id", sa.Integer(), nullable=True),
        sa.Column("created_at", column_types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["store_id"],
            ["store.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("experiment", schema=None) as batch_op:
        batch_op.create_index("ix_experiment_store_status", ["store_id", "status"], unique=False)

    op.create_table(
        "experiment_arm",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("experiment_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("weight", sa.Integer(), nullable=False),
        sa.Column("is_control", sa.Boolean(), nullable=False),
        sa.Column("is_holdout", sa.Boolean(), nullable=False),
        sa.Column("overrides", sa.JSON(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["experiment_id"],
            ["experiment.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("experiment_arm", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_experiment_arm_experiment_id"), ["experiment_id"], unique=False)

    op.create_table(
        "experiment_assignment",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("experiment_id", sa.Integer(), nullable=False),
        sa.Column("arm_id", sa.Integer(), nullable=False),
        sa.Column("store_id", sa.Integer(), nullable=False),
        sa.Column("cart_id", sa.Integer(), nullable=False),
        sa.Column("contact_id", sa.Integer(), nullable=False),
        sa.Column("assigned_at", column_types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("counts_until", column_types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["arm_id"],
            ["experiment_arm.id"],
        ),
        sa.ForeignKeyConstraint(
            ["cart_id"],
            ["cart.id"],
        ),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contact.id"],
        ),
        sa.ForeignKeyConstraint(
            ["experiment_id"],
            ["experiment.id"],
        ),
        sa.ForeignKeyConstraint(
            ["store_id"],
            ["store.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("experiment_id", "cart_id"),
    )
    with op.batch_alter_table("experiment_assignment", schema=None) as batch_op:
        batch_op.create_index("ix_experiment_assignment_arm", ["experiment_id", "arm_id"], unique=False)
        batch_op.create_index("ix_experiment_assignment_cart", ["cart_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("experiment_assignment", schema=None) as batch_op:
        batch_op.drop_index("ix_experiment_assignment_cart")
        batch_op.drop_index("ix_experiment_assignment_arm")

    op.drop_table("experiment_assignment")
    with op.batch_alter_table("experiment_arm", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_experiment_arm_experiment_id"))

    op.drop_table("experiment_arm")
    with op.batch_alter_table("experiment", schema=None) as batch_op:
        batch_op.drop_index("ix_experiment_store_status")

    op.drop_table("experiment")
