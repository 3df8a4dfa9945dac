"""The optimizer's use cases on its tables: the durable state read once at start, and the batch
handlers that write it after each consumed event or decision round (in one transaction with the
decisions' outbox events)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from functools import cache
from typing import Any

from almere.optimizer.v1 import decisions_pb2 as dpb
from almere.optimizer.v1 import optimizer_pb2 as pb
from sqlalchemy import Engine, delete, func, insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col, select

from services.optimizer import events
from services.optimizer.models import (
    DecisionRow,
    FacilityRow,
    IncidentRow,
    OptimizerOutbox,
    ReservationRow,
    StrategyRow,
)
from services.optimizer.state import Facility, Incident, Reservation


@dataclass(frozen=True, kw_only=True)
class Taken:
    """A decision and what it answered."""

    decision: dpb.Decision
    vehicle_id: str
    cause: str
    clock: float = 0.0  # the reporter's clock when it was taken


@dataclass(kw_only=True)
class Writes:
    incidents: list[Incident] = field(default_factory=list)
    facilities: list[Facility] = field(default_factory=list)
    reservations: list[Reservation] = field(default_factory=list)
    released: list[str] = field(default_factory=list)  # vehicle ids
    decisions: list[Taken] = field(default_factory=list)
    strategy: pb.Strategy | None = None

    def __bool__(self) -> bool:
        return any((self.incidents, self.facilities, self.reservations, self.released, self.decisions, self.strategy))


@dataclass(kw_only=True)
class Loaded:
    """The durable state (nothing: a first start, or a run without a database)."""

    incidents: list[Incident] = field(default_factory=list)
    facilities: list[Facility] = field(default_factory=list)
    reservations: list[Reservation] = field(default_factory=list)
    decided: dict[tuple[str, str], datetime] = field(default_factory=dict)
    strategy: pb.Strategy | None = None
    # Per vehicle, the reporter's clock at its latest decision (the hold against oscillation).
    last_rerouted: dict[str, float] = field(default_factory=dict)


def load(engine: Engine, since: datetime) -> Loaded:
    """The durable state; decisions only from `since` on (older ones answered trips long over)."""
    with Session(engine) as session:
        strategy_row = session.get(StrategyRow, 1)
        return Loaded(
            incidents=[Incident(**r.model_dump()) for r in session.exec(select(IncidentRow))],
            facilities=[
                Facility(**{**r.model_dump(), "counted": r.counted is not False})
                for r in session.exec(select(FacilityRow))
            ],
            reservations=[Reservation(**r.model_dump()) for r in session.exec(select(ReservationRow))],
            decided={
                (vehicle, cause): time
                for vehicle, cause, time in session.exec(
                    select(DecisionRow.vehicle_id, DecisionRow.cause, DecisionRow.time).where(
                        col(DecisionRow.time) >= since
                    )
                )
            },
            strategy=pb.Strategy.FromString(strategy_row.document) if strategy_row else None,
            last_rerouted={
                vehicle: float(clock)
                for vehicle, clock in session.exec(
                    select(DecisionRow.vehicle_id, func.max(DecisionRow.clock))
                    .where(col(DecisionRow.time) >= since)
                    .group_by(col(DecisionRow.vehicle_id))
                )
            },
        )


@cache
def _upsert_statement(table: Any, dialect_name: str, *, newer_only: bool) -> Any:
    """Built once per table (building it and its cache key cost more than the rows it writes)."""
    (key,) = table.primary_key.columns
    statement = (postgresql if dialect_name == "postgresql" else sqlite).insert(table)
    return statement.on_conflict_do_update(
        index_elements=[key],
        set_={c.name: statement.excluded[c.name] for c in table.c if c.name != key.name},
        where=table.c.version < statement.excluded.version if newer_only else None,
    )


def _upsert(session: Session, model: type[Any], rows: list[dict[str, Any]], *, newer_only: bool) -> None:
    """Insert each row, or overwrite the stored one, in one statement (no read first, as the ORM's
    merge would). `newer_only`: only with a higher version: every replica writes what it consumed,
    in its own time, and one that lags must not put an older version back (nor fail on the row the
    other inserted first)."""
    if not rows:
        return
    table: Any = model.__table__
    (key,) = table.primary_key.columns
    ordered = sorted(rows, key=lambda r: int(r["version"])) if newer_only else rows
    last = {r[key.name]: r for r in ordered}  # one per key a statement
    statement = _upsert_statement(table, session.get_bind().dialect.name, newer_only=newer_only)
    session.execute(statement, list(last.values()))


def save(session: Session, batch: Sequence[tuple[Writes, datetime]]) -> list[Any]:
    """Batch handler: every item's state changes, decisions and their outbox events. Incidents and
    facilities (versioned: the newest wins whatever the order) go in one statement each for the
    batch; the rest item by item, in order (a promise released, then made again)."""
    # The rows have the dataclasses' fields.
    _upsert(session, IncidentRow, [asdict(i) for w, _ in batch for i in w.incidents], newer_only=True)
    _upsert(session, FacilityRow, [asdict(f) for w, _ in batch for f in w.facilities], newer_only=True)
    for writes, now in batch:
        if writes.released:
            session.execute(delete(ReservationRow).where(col(ReservationRow.vehicle_id).in_(writes.released)))
        _upsert(session, ReservationRow, [asdict(r) for r in writes.reservations], newer_only=False)
        if writes.decisions:
            session.execute(
                insert(DecisionRow),
                [
                    {
                        "id": t.decision.name.removeprefix("decisions/"),
                        "vehicle_id": t.vehicle_id,
                        "lever": t.decision.lever,
                        "cause": t.cause,
                        "time": now,
                        "clock": t.clock,
                        "document": t.decision.SerializeToString(),
                    }
                    for t in writes.decisions
                ],
            )
            session.execute(insert(OptimizerOutbox), [events.decision_event(t.decision, now) for t in writes.decisions])
        if writes.strategy is not None:
            session.merge(StrategyRow(id=1, document=writes.strategy.SerializeToString()))
    return [None] * len(batch)
