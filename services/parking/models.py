"""The parking service's tables. Only this service imports them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Index
from sqlmodel import Field, SQLModel

from services.common.clock import UtcDateTime
from services.common.opening_hours import DEFAULT_TIME_ZONE
from services.common.outbox import OutboxBase


class Facility(SQLModel, table=True):
    """A facility and its live occupancy (one row, so a count report is one read and one write)."""

    __tablename__ = "parking_facility"

    id: str = Field(primary_key=True, max_length=63)
    display_name: str = Field(max_length=200)
    kind: int
    operator_id: str = Field(index=True, max_length=63)
    capacity: int
    latitude: float | None = None
    longitude: float | None = None
    entrance_edge_ids: list[str] = Field(default_factory=list, sa_type=JSON)
    sumo_parking_area_id: str = Field(default="", max_length=128)
    opening_hours: list[dict[str, Any]] = Field(default_factory=list, sa_type=JSON)
    time_zone: str = Field(default=DEFAULT_TIME_ZONE, max_length=64)
    state: int
    almost_full: float
    full: float
    hysteresis: float
    version: int = 1
    create_time: datetime = Field(sa_type=UtcDateTime)
    update_time: datetime = Field(sa_type=UtcDateTime)
    # Live occupancy. occupied is None until the first count.
    occupied: int | None = None
    status: int
    sequence: int = Field(default=0, sa_type=BigInteger)  # uint64 in the contract (e.g. epoch ms)
    reported_occupied: int | None = None
    report_time: datetime | None = Field(default=None, sa_type=UtcDateTime)
    source_time: datetime | None = Field(default=None, sa_type=UtcDateTime)
    occupancy_time: datetime | None = Field(default=None, sa_type=UtcDateTime)
    # When the last count (report or gate events) was measured; with stale_after_s it tells whether
    # the field system or its feed has gone silent. Facility updates leave it alone.
    count_time: datetime | None = Field(default=None, sa_type=UtcDateTime)
    stale_after_s: float | None = None


class OccupancySample(SQLModel, table=True):
    """Every accepted occupancy change, for history."""

    __tablename__ = "parking_occupancy_sample"
    __table_args__ = (Index("ix_parking_occupancy_sample_facility_time", "facility_id", "source_time"),)

    id: int | None = Field(default=None, primary_key=True)
    facility_id: str = Field(max_length=63)
    source_time: datetime = Field(sa_type=UtcDateTime)
    occupied: int
    version: int
    cause: int
    sequence: int = Field(default=0, sa_type=BigInteger)  # uint64 in the contract (e.g. epoch ms)


class GateBatch(SQLModel, table=True):
    """Gate-event batches already applied: a batch sent twice is applied once."""

    __tablename__ = "parking_gate_batch"

    facility_id: str = Field(primary_key=True, max_length=63)
    batch_id: str = Field(primary_key=True, max_length=64)
    entries: int
    exits: int
    recorded_time: datetime = Field(sa_type=UtcDateTime)


class ParkingOutbox(OutboxBase, table=True):
    __tablename__ = "parking_outbox"


TABLES: list[type[SQLModel]] = [Facility, OccupancySample, GateBatch, ParkingOutbox]
