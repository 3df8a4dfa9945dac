"""The counter service's tables. Only this service imports them.

A counter is stored as its protobuf document; each count is a row keyed by its counter, direction and
interval start (what makes a resent count a duplicate or a correction).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, LargeBinary, UniqueConstraint
from sqlmodel import Field, SQLModel

from services.common.clock import UtcDateTime
from services.common.outbox import OutboxBase


class CounterRow(SQLModel, table=True):
    __tablename__ = "counters_counter"
    __table_args__ = (UniqueConstraint("partner_id", "counter_id", name="uq_counters_counter"),)

    id: int | None = Field(default=None, primary_key=True)
    partner_id: str = Field(max_length=63, index=True)
    counter_id: str = Field(max_length=63)
    create_time: datetime = Field(sa_type=UtcDateTime)
    # The Counter document.
    document: bytes = Field(sa_type=LargeBinary)


class CountRow(SQLModel, table=True):
    __tablename__ = "counters_count"
    __table_args__ = (
        UniqueConstraint("partner_id", "counter_id", "direction", "interval_start", name="uq_counters_count_interval"),
        Index("ix_counters_count_start", "partner_id", "interval_start"),
    )

    id: int | None = Field(default=None, primary_key=True)
    partner_id: str = Field(max_length=63)
    counter_id: str = Field(max_length=63)
    direction: str = Field(max_length=40)
    interval_start: datetime = Field(sa_type=UtcDateTime)
    interval_end: datetime = Field(sa_type=UtcDateTime)
    count: int
    report_time: datetime = Field(sa_type=UtcDateTime)


class CountersOutbox(OutboxBase, table=True):
    __tablename__ = "counters_outbox"


TABLES: list[type[SQLModel]] = [CounterRow, CountRow, CountersOutbox]
