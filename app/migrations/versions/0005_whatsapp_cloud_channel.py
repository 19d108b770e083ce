"""whatsapp cloud channel

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28 04:34:08.384170
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.migrations import column_types

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "whatsapp_account",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("store_id", sa.Integer(), nullable=False),
        sa.Column("waba_id", sa.String(length=64), nullable=False),
        sa.Column("phone_number_id", sa.String(length=64), nullable=False),
        sa.Column("access_token_ciphertext", sa.Text(), nullable=False),
        sa.Column("display_phone_number", sa.String(length=32), nullable=True),
        sa.Column("verified_name", sa.String(length=255), nullable=True),
        sa.Column("default_language", sa.String(length=16), nullable=False),
        sa.Column("quality_rating", sa.String(length=16), nullable=False),
        sa.Column("messages_per_second", sa.Integer(), nullable=False),
        sa.Column("checked_at", column_types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("check_problem", sa.Text(), nullable=True),
        sa.Column("created_at", column_types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", column_types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["store_id"],
            ["store.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("phone_number_id"),
        sa.UniqueConstraint("store_id"),
    )
    with op.batch_alter_table("whatsapp_account", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_whatsapp_account_waba_id"), ["waba_id"], unique=False)

    op.create_table(
        "whatsapp_template",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("store_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("language", sa.String(length=16), nullable=False),
        sa.Column("category", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("platform_template_id", sa.String(length=64), nullable=True),
        sa.Column("quality_score", sa.String(length=16), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("status_at", column_types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("pushed_at", column_types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("updated_at", column_types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["store_id"],
            ["store.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("store_id", "name", "language"),
    )
    with op.batch_alter_table("whatsapp_template", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_whatsapp_template_platform_template_id"), ["platform_template_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_whatsapp_template_store_id"), ["store_id"], unique=False)

    op.create_table(
        "inbound_message",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("store_id", sa.Integer(), nullable=False),
        sa.Column("contact_id", sa.Integer(), nullable=True),
        sa.Column("provider_event_id", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("intent", sa.String(length=16), nullable=False),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("reply_to_message_id", sa.Integer(), nullable=True),
        sa.Column("sent_at", column_types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("confirmation_sent_at", column_types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", column_types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contact.id"],
        ),
        sa.ForeignKeyConstraint(
            ["reply_to_message_id"],
            ["message.id"],
        ),
        sa.ForeignKeyConstraint(
            ["store_id"],
            ["store.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("store_id", "provider_event_id"),
    )
    with op.batch_alter_table("inbound_message", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_inbound_message_contact_id"), ["contact_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_inbound_message_store_id"), ["store_id"], unique=False)

    with op.batch_alter_table("cart", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("shopper_replied_at", column_types.UTCDateTime(timezone=True), nullable=True)
        )

    with op.batch_alter_table("message", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pricing_category", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("billable", sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column("cost", column_types.MoneyAmount(precision=18, scale=4), nullable=True))
        batch_op.add_column(sa.Column("cost_currency", sa.String(length=3), nullable=True))

    with op.batch_alter_table("sandbox_outbox_message", schema=None) as batch_op:
        batch_op.alter_column("message_id", existing_type=sa.INTEGER(), nullable=True)

    with op.batch_alter_table("store", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pause_source", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("paused_at", column_types.UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("store", schema=None) as batch_op:
        batch_op.drop_column("paused_at")
        batch_op.drop_column("pause_source")

    with op.batch_alter_table("sandbox_outbox_message", schema=None) as batch_op:
        batch_op.alter_column("message_id", existing_type=sa.INTEGER(), nullable=False)

    with op.batch_alter_table("message", schema=None) as batch_op:
        batch_op.drop_column("cost_currency")
        batch_op.drop_column("cost")
        batch_op.drop_column("billable")
        batch_op.drop_column("pricing_category")

    with op.batch_alter_table("cart", schema=None) as batch_op:
        batch_op.drop_column("shopper_replied_at")

    with op.batch_alter_table("inbound_message", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_inbound_message_store_id"))
        batch_op.drop_index(batch_op.f("ix_inbound_message_contact_id"))

    op.drop_table("inbound_message")
    with op.batch_alter_table("whatsapp_template", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_whatsapp_template_store_id"))
        batch_op.drop_index(batch_op.f("ix_whatsapp_template_platform_template_id"))

    op.drop_table("whatsapp_template")
    with op.batch_alter_table("whatsapp_account", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_whatsapp_account_waba_id"))

    op.drop_table("whatsapp_account")
