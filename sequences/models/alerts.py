"""Incidents: an alert rule's condition held, from when until when, with its evidence, what to
do, and the merchant's postmortem note.

At most one open incident per (scope, rule): a partial unique index, so two evaluations racing
never open two. ``scope`` is ``store:<id>`` for a store's rules, ``service`` for the
operator's.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Column, Index, String, Text, text
from sqlmodel import Field, SQLModel

from sequences.models.types import UTCDateTime, json_field, time_field, utcnow


class IncidentStatus(StrEnum):
    OPEN = "open"
    CLOSED = "closed"


OPEN_INCIDENT = "status = 'open'"


class Incident(SQLModel, table=True):
    __tablename__ = "incident"
    __table_args__ = (
        Index(
            "ix_incident_one_open",
            "scope",
            "rule",
            unique=True,
            sqlite_where=text(OPEN_INCIDENT),
            postgresql_where=text(OPEN_INCIDENT),
        ),
        Index("ix_incident_store_opened", "store_id", "opened_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    # None for the operator's (service-wide) incidents.
    store_id: int | None = Field(default=None, foreign_key="store.id")
    scope: str = Field(sa_column=Column(String(32), nullable=False))
    rule: str = Field(sa_column=Column(String(48), nullable=False))
    # "warning" or "critical".
    severity: str = Field(sa_column=Column(String(16), nullable=False))
    status: str = Field(default=IncidentStatus.OPEN, sa_column=Column(String(16), nullable=False))
    title: str = Field(sa_column=Column(Text, nullable=False))
    # What the rule saw (figures, thresholds, names), the latest evaluation's.
    evidence: dict[str, Any] = json_field(default=dict)
    action: str = Field(sa_column=Column(Text, nullable=False))
    opened_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    # The condition was last seen holding; since when it has not (None while it holds).
    last_seen_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    clear_since: datetime | None = time_field()
    ended_at: datetime | None = time_field()
    # The merchant's (or operator's) postmortem.
    note: str | None = Field(default=None, sa_column=Column(Text))
    note_at: datetime | None = time_field()
    # Notifications sent (or why not), for the opening and the closing.
    opened_notice: str | None = Field(default=None, sa_column=Column(Text))
    closed_notice: str | None = Field(default=None, sa_column=Column(Text))
