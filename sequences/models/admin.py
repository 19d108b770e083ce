"""Sign-in to a store's standalone admin: one-time links, used once, stored as hashes."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, String
from sqlmodel import Field, SQLModel

from sequences.models.types import UTCDateTime, time_field, utcnow


class AdminLogin(SQLModel, table=True):
    """A one-time sign-in link to a store's standalone admin (``cartback admin-link STORE``).

    The link carries this row's id and a random nonce; only the nonce's SHA-256 is stored, so
    a database reader cannot sign in. Used once: ``used_at`` is set by a conditional update.
    """

    __tablename__ = "admin_login"

    id: int | None = Field(default=None, primary_key=True)
    store_id: int = Field(foreign_key="store.id", index=True)
    nonce_sha256: str = Field(sa_column=Column(String(64), nullable=False))
    # Who asked for the link, for the audit trail ("cli", "woocommerce connect").
    issued_by: str = Field(sa_column=Column(String(64), nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    expires_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    used_at: datetime | None = time_field()
    # Signing out ends the session everywhere: a copied cookie of this sign-in stops working.
    signed_out_at: datetime | None = time_field()
