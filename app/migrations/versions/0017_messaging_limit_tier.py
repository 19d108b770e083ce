"""whatsapp_account.messaging_limit_tier: Meta's daily messaging limit, read with each check

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-08 00:40:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Not batch mode: SQLite adds a nullable column itself.
    op.add_column("whatsapp_account", sa.Column("messaging_limit_tier", sa.String(length=32), nullable=True))


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("ALTER TABLE whatsapp_account DROP COLUMN messaging_limit_tier")
    else:
        op.drop_column("whatsapp_account", "messaging_limit_tier")
