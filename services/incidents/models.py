"""The incident service's tables. Only this service imports them.

An incident is stored as its protobuf document (`document`, restricted fields included) beside the
columns that queries filter on; the document is the single source for what callers see.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Index, LargeBinary, UniqueConstraint
from sqlmodel import Field, SQLModel

from services.common.clock import UtcDateTime
from services.common.outbox import OutboxBase


class IncidentRow(SQLModel, table=True):
    __tablename__ = "incidents_incident"
    __table_args__ = (
        UniqueConstraint("reporter", "request_id", name="uq_incidents_incident_request"),
        Index("ix_incidents_incident_state_start", "state", "expected_start"),
    )

    id: str = Field(primary_key=True, max_length=36)
    type: int
    agency: int
    state: int = Field(index=True)
    latitude: float | None = None
    longitude: float | None = None
    reporter: str = Field(max_length=128)
    request_id: str = Field(max_length=128)
    planned_event_id: str | None = Field(default=None, index=True, max_length=63)
    # The partner whose report it is (None: an agency's incident).
    partner_id: str | None = Field(default=None, index=True, max_length=63)
    # True for a partner's report the police never verified (logic.is_pending); None otherwise.
    pending: bool | None = None
    expected_start: datetime | None = Field(default=None, sa_type=UtcDateTime)
    expected_end: datetime | None = Field(default=None, sa_type=UtcDateTime)
    version: int
    create_time: datetime = Field(sa_type=UtcDateTime, index=True)
    update_time: datetime = Field(sa_type=UtcDateTime)
    document: bytes = Field(sa_type=LargeBinary)


class HistoryRow(SQLModel, table=True):
    """The audit trail: one row per change of an incident."""

    __tablename__ = "incidents_history"
    __table_args__ = (Index("ix_incidents_history_incident_version", "incident_id", "version"),)

    id: int | None = Field(default=None, primary_key=True)
    incident_id: str = Field(max_length=36)
    version: int
    time: datetime = Field(sa_type=UtcDateTime)
    actor: str = Field(max_length=128)
    actor_role: str = Field(max_length=64)
    action: str = Field(max_length=16)
    changed_fields: list[str] = Field(default_factory=list, sa_type=JSON)
    from_state: int = 0
    to_state: int = 0
    reason: str = Field(default="", max_length=1000)


class PlannedEventRow(SQLModel, table=True):
    __tablename__ = "incidents_planned_event"

    id: str = Field(primary_key=True, max_length=63)
    creator: str = Field(max_length=128)
    cancelled: bool = False
    create_time: datetime = Field(sa_type=UtcDateTime)
    # The PlannedEvent document (closures and incident names).
    document: bytes = Field(sa_type=LargeBinary)


class IncidentsOutbox(OutboxBase, table=True):
    __tablename__ = "incidents_outbox"


TABLES: list[type[SQLModel]] = [IncidentRow, HistoryRow, PlannedEventRow, IncidentsOutbox]
