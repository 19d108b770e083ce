"""Privacy requests: what is produced for a platform's customer data request."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Column, String
from sqlmodel import Field, SQLModel

from sequences.models.types import UTCDateTime, json_field, utcnow


class DataExport(SQLModel, table=True):
    """Everything held about one customer, produced for a platform's data request."""

    __tablename__ = "data_export"

    id: int | None = Field(default=None, primary_key=True)
    store_id: int = Field(foreign_key="store.id", index=True)
    request_ref: str | None = Field(default=None, sa_column=Column(String(255)))
    customer_ref: str | None = Field(default=None, sa_column=Column(String(255)))
    content: dict[str, Any] = json_field(default=dict)
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
