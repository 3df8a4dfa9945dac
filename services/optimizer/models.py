"""The optimizer's tables. Only this service imports them. What must survive a restart: the incidents
and facilities it has consumed (with their versions, so redelivered events are dropped), the decisions
it has taken (so none is repeated) and the spaces it has promised. Travel times are soft state: they
are measured again within minutes."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Index, LargeBinary
from sqlmodel import Field, SQLModel

from services.common.clock import UtcDateTime
from services.common.opening_hours import DEFAULT_TIME_ZONE
from services.common.outbox import OutboxBase


class IncidentRow(SQLModel, table=True):
    __tablename__ = "optimizer_incident"

    id: str = Field(primary_key=True, max_length=63)
    version: int
    edge_id: str = Field(default="", max_length=128)
    # Affecting traffic now (ACTIVE or CLEARING).
    active: bool = False
    full_closure: bool = False
    closed_lanes: list[int] = Field(default_factory=list, sa_type=JSON)
    speed_limit_kmh: float = 0.0


class FacilityRow(SQLModel, table=True):
    __tablename__ = "optimizer_facility"

    id: str = Field(primary_key=True, max_length=63)
    version: int
    capacity: int
    occupied: int = 0
    # Nullable so an existing table gains the column (None, from before it: counted).
    counted: bool | None = True
    # Closed or out of service: no guidance there.
    available: bool = True
    edge_id: str = Field(default="", max_length=128)
    latitude: float = 0.0
    longitude: float = 0.0
    report_time: datetime | None = Field(default=None, sa_type=UtcDateTime)
    opening_hours: list[dict[str, object]] = Field(default_factory=list, sa_type=JSON)
    time_zone: str = Field(default=DEFAULT_TIME_ZONE, max_length=64)
    operator_id: str | None = Field(default=None, max_length=63)


class DecisionRow(SQLModel, table=True):
    """Every decision taken; (vehicle, cause) identifies what a decision answered, so the same cause
    never produces a second decision for the same vehicle (a restart, a redelivered event)."""

    __tablename__ = "optimizer_decision"
    __table_args__ = (
        Index("ix_optimizer_decision_cause", "cause", "vehicle_id", unique=True),
        Index("ix_optimizer_decision_time", "time"),
    )

    id: str = Field(primary_key=True, max_length=36)
    vehicle_id: str = Field(max_length=128)
    lever: int
    cause: str = Field(max_length=200)
    time: datetime = Field(sa_type=UtcDateTime)
    # The reporter's clock at the decision (simulated or wall seconds): damping survives a restart.
    clock: float = 0.0
    document: bytes = Field(sa_type=LargeBinary)


class ReservationRow(SQLModel, table=True):
    """A space promised to a guided vehicle, until the facility's count includes it."""

    __tablename__ = "optimizer_reservation"

    vehicle_id: str = Field(primary_key=True, max_length=128)
    facility_id: str = Field(max_length=63)
    decided: datetime = Field(sa_type=UtcDateTime)
    # When the vehicle was seen parked; the reservation ends with the first count after that.
    arrived: datetime | None = Field(default=None, sa_type=UtcDateTime)
    # The caller reporting the vehicle (several navigation backends may report).
    reporter: str = Field(default="", max_length=128)


class StrategyRow(SQLModel, table=True):
    __tablename__ = "optimizer_strategy"

    id: int = Field(default=1, primary_key=True)
    document: bytes = Field(sa_type=LargeBinary)


class OptimizerOutbox(OutboxBase, table=True):
    __tablename__ = "optimizer_outbox"


TABLES: list[type[SQLModel]] = [IncidentRow, FacilityRow, DecisionRow, ReservationRow, StrategyRow, OptimizerOutbox]
