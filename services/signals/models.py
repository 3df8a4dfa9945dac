"""The signal service's tables. Only this service imports them. Intersections, plans and priorities
are stored as their protobuf documents beside the columns queries use."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Index, LargeBinary
from sqlmodel import Field, SQLModel

from services.common.clock import UtcDateTime
from services.common.outbox import OutboxBase


class IntersectionRow(SQLModel, table=True):
    __tablename__ = "signals_intersection"

    id: str = Field(primary_key=True, max_length=63)
    sumo_tls_id: str = Field(max_length=128)
    version: int
    # Plan versions in the order they were activated; the last is active. Rollback pops it.
    activations: list[int] = Field(default_factory=list, sa_type=JSON)
    document: bytes = Field(sa_type=LargeBinary)


class PlanRow(SQLModel, table=True):
    __tablename__ = "signals_plan"
    __table_args__ = (Index("ix_signals_plan_state_time", "state", "activate_time"),)

    intersection_id: str = Field(primary_key=True, max_length=63)
    version: int = Field(primary_key=True)
    state: int
    activate_time: datetime | None = Field(default=None, sa_type=UtcDateTime)
    document: bytes = Field(sa_type=LargeBinary)


class PriorityRow(SQLModel, table=True):
    __tablename__ = "signals_priority"

    id: str = Field(primary_key=True, max_length=36)
    intersection_id: str = Field(index=True, max_length=63)
    decision: int
    priority_class: int
    hold_until: datetime = Field(sa_type=UtcDateTime)
    document: bytes = Field(sa_type=LargeBinary)


class HistoryRow(SQLModel, table=True):
    """The audit trail: who changed what, when, which plan version, why."""

    __tablename__ = "signals_history"
    __table_args__ = (Index("ix_signals_history_intersection_version", "intersection_id", "version"),)

    id: int | None = Field(default=None, primary_key=True)
    intersection_id: str = Field(max_length=63)
    version: int
    time: datetime = Field(sa_type=UtcDateTime)
    actor: str = Field(max_length=128)
    actor_role: str = Field(max_length=64)
    action: str = Field(max_length=32)
    plan_version: int = 0
    reason: str = Field(default="", max_length=1000)


class StepRow(SQLModel, table=True):
    """An adaptive step after a takeover, compactly: the audit of control that changes every few
    seconds, without a plan version each."""

    __tablename__ = "signals_step"
    __table_args__ = (Index("ix_signals_step_intersection_sequence", "intersection_id", "sequence", unique=True),)

    id: int | None = Field(default=None, primary_key=True)
    intersection_id: str = Field(max_length=63)
    sequence: int
    plan_version: int  # the takeover (adaptive plan version) it follows
    time: datetime = Field(sa_type=UtcDateTime)
    actor: str = Field(max_length=128)
    phases: str  # `state:duration` per phase, comma-separated (logic.encode_phases)
    reason: str = Field(default="", max_length=1000)


class StepSummaryRow(SQLModel, table=True):
    """An hour of an intersection's adaptive steps under one takeover by one caller, after retention
    compacted their rows (compaction.py): how many, which sequences, when, and the cycles shown."""

    __tablename__ = "signals_step_summary"
    __table_args__ = (
        Index("ix_signals_step_summary_key", "intersection_id", "hour", "plan_version", "actor", unique=True),
        Index("ix_signals_step_summary_hour", "hour"),
    )

    id: int | None = Field(default=None, primary_key=True)
    intersection_id: str = Field(max_length=63)
    hour: datetime = Field(sa_type=UtcDateTime)  # its start
    plan_version: int
    actor: str = Field(max_length=128)
    steps: int
    first_sequence: int
    last_sequence: int
    first_time: datetime = Field(sa_type=UtcDateTime)
    last_time: datetime = Field(sa_type=UtcDateTime)
    cycle_min_s: float
    cycle_max_s: float
    cycle_sum_s: float  # the mean is cycle_sum_s / steps (kept as a sum so partial hours merge)


class LeaseRow(SQLModel, table=True):
    """An intersection under adaptive control: its takeover and the last sign of life of the
    controller (the takeover, a step or a renewal). lease.py hands it back when that is too old."""

    __tablename__ = "signals_lease"

    intersection_id: str = Field(primary_key=True, max_length=63)
    plan_version: int  # the takeover (adaptive plan version)
    renew_time: datetime = Field(sa_type=UtcDateTime, index=True)


class SignalsOutbox(OutboxBase, table=True):
    __tablename__ = "signals_outbox"


TABLES: list[type[SQLModel]] = [
    IntersectionRow,
    PlanRow,
    PriorityRow,
    HistoryRow,
    StepRow,
    StepSummaryRow,
    LeaseRow,
    SignalsOutbox,
]
