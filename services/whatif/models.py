"""The what-if service's tables. Only this service imports them.

A what-if is stored as its protobuf document (`document`: the request's plans, the results so far,
the adoption) beside the columns queries use; run results and forecast checks have rows of their own.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Index, LargeBinary, UniqueConstraint
from sqlmodel import Field, SQLModel

from services.common.clock import UtcDateTime
from services.common.outbox import OutboxBase


class WhatIfRow(SQLModel, table=True):
    __tablename__ = "whatif_what_if"
    __table_args__ = (Index("ix_whatif_what_if_create", "create_time", "id"),)

    id: str = Field(primary_key=True, max_length=63)
    state: int = Field(index=True)
    creator: str = Field(max_length=128)
    runs_total: int
    runs_done: int = 0
    create_time: datetime = Field(sa_type=UtcDateTime)
    finish_time: datetime | None = Field(default=None, sa_type=UtcDateTime)
    # The WhatIf document (plans, results, errors, adoption).
    document: bytes = Field(sa_type=LargeBinary)


class RunResultRow(SQLModel, table=True):
    """One finished run (a RunResult), kept once per run id."""

    __tablename__ = "whatif_run_result"
    __table_args__ = (UniqueConstraint("what_if_id", "run_id", name="uq_whatif_run_result_run"),)

    id: int | None = Field(default=None, primary_key=True)
    what_if_id: str = Field(max_length=63, index=True)
    run_id: str = Field(max_length=128)
    plan_id: str = Field(max_length=40)
    seed: int
    start_source: int
    failed: bool = False
    time: datetime = Field(sa_type=UtcDateTime)
    result: bytes = Field(sa_type=LargeBinary)


class PendingObservedRow(SQLModel, table=True):
    """What the twin observed over a what-if's horizon, kept until the what-if's runs are all in."""

    __tablename__ = "whatif_pending_observed"

    what_if_id: str = Field(primary_key=True, max_length=63)
    observed: bytes = Field(sa_type=LargeBinary)
    time: datetime = Field(sa_type=UtcDateTime)


class ForecastCheckRow(SQLModel, table=True):
    """`do-nothing`'s forecast of one KPI against what the twin then observed."""

    __tablename__ = "whatif_forecast_check"
    __table_args__ = (UniqueConstraint("what_if_id", "kpi", "start_source", name="uq_whatif_forecast_check"),)

    id: int | None = Field(default=None, primary_key=True)
    what_if_id: str = Field(max_length=63, index=True)
    kpi: str = Field(max_length=64)
    start_source: int
    forecast: float
    observed: float
    relative_error: float
    within_spread: bool
    time: datetime = Field(sa_type=UtcDateTime)


class AdoptionRow(SQLModel, table=True):
    """The adoption history: every plan adopted, by whom, and what it changed."""

    __tablename__ = "whatif_adoption"

    id: int | None = Field(default=None, primary_key=True)
    what_if_id: str = Field(max_length=63, index=True)
    plan_id: str = Field(max_length=40)
    actor: str = Field(max_length=128)
    actor_role: str = Field(max_length=64)
    time: datetime = Field(sa_type=UtcDateTime)
    changes: list[str] = Field(default_factory=list, sa_type=JSON)
    error: str = Field(default="", max_length=2000)


class WhatIfOutbox(OutboxBase, table=True):
    __tablename__ = "whatif_outbox"


TABLES: list[type[SQLModel]] = [
    WhatIfRow,
    RunResultRow,
    ForecastCheckRow,
    PendingObservedRow,
    AdoptionRow,
    WhatIfOutbox,
]
