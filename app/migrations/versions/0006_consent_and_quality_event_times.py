"""consent and quality event times

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28 06:10:12.392536
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.migrations import column_types

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("contact", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("consent_changed_at", column_types.UTCDateTime(timezone=True), nullable=True)
        )

    with op.batch_alter_table("whatsapp_account", schema=None) as batch_op:
        batch_op.add_column(sa.Column("quality_at", column_types.UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("whatsapp_account", schema=None) as batch_op:
        batch_op.drop_column("quality_at")

    with op.batch_alter_table("contact", schema=None) as batch_op:
        batch_op.drop_column("consent_changed_at")
