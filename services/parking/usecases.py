"""The parking use cases: group-commit batch handlers (who may write, field-mask merge, occupancy
samples and events, one result per request) and the reads behind the servicer."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, TypeVar

from almere.parking.v1 import events_pb2
from almere.parking.v1 import parking_pb2 as pb
from google.protobuf import field_mask_pb2
from sqlalchemy import Engine, and_, bindparam, delete, select, true, update
from sqlmodel import Session, col

from services.common import driver_sql
from services.common.auth import Identity, Role
from services.common.batch import Locked, each, lock
from services.common.changes import Changes
from services.common.errors import AlreadyExists, InvalidArgument, NotFound, PermissionDenied
from services.common.feed import Snapshot
from services.common.outbox import OUTBOX_COLUMNS
from services.common.retention import Expire
from services.common.tracing import Traced
from services.parking import events, logic, metrics
from services.parking.convert import (
    FacilityView,
    OccupancyRow,
    facility_fields,
    facility_to_proto,
    occupancy_to_proto,
    thresholds_of,
)
from services.parking.models import Facility, GateBatch, OccupancySample, ParkingOutbox
from services.parking.shaping import BusAccess, for_bus

R = TypeVar("R", bound=FacilityView)

UPDATABLE_FIELDS = frozenset(
    {
        "display_name",
        "kind",
        "operator_id",
        "capacity",
        "location",
        "entrance_edge_ids",
        "sumo_parking_area_id",
        "opening_hours",
        "time_zone",
        "state",
        "thresholds",
        "stale_after",
    }
)


FACILITY = Facility.__table__  # type: ignore[attr-defined]
GATE_BATCH = GateBatch.__table__  # type: ignore[attr-defined]
# Occupancy writes (the hot path) read and write these columns with the driver itself (driver_sql):
# ORM identity maps and change tracking, and Core's per-execution work, cost more than the SQL itself
# at thousands of reports a second.
OCCUPANCY_COLUMNS = [f.name for f in fields(OccupancyRow)]
MUTABLE_COLUMNS = [
    "version",
    "occupied",
    "status",
    "sequence",
    "reported_occupied",
    "report_time",
    "source_time",
    "occupancy_time",
    "update_time",
    "count_time",
]
_SAVED = ["id", *MUTABLE_COLUMNS]  # the values of each saved occupancy, in the statement's order
_SAVE_OCCUPANCY = driver_sql.Statement(
    update(FACILITY)
    .where(FACILITY.c.id == bindparam("b_id"))
    .values({c: bindparam(f"b_{c}") for c in MUTABLE_COLUMNS}),
    params=[f"b_{c}" for c in _SAVED],
)
_READ_OCCUPANCY = driver_sql.select_for_update(FACILITY, OCCUPANCY_COLUMNS, key="id")
_HISTORY = ["facility_id", "source_time", "occupied", "version", "cause", "sequence"]
_INSERT_HISTORY = driver_sql.Insert(OccupancySample.__table__, _HISTORY)  # type: ignore[attr-defined]
_INSERT_OUTBOX = driver_sql.Insert(ParkingOutbox.__table__, OUTBOX_COLUMNS)  # type: ignore[attr-defined]
_GATE_BATCH = ["facility_id", "batch_id", "entries", "exits", "recorded_time"]
_INSERT_GATE_BATCH = driver_sql.Insert(GATE_BATCH, _GATE_BATCH)


def _facilities(session: Session, ids: set[str]) -> Locked[Facility]:
    return lock(session, noun="facility", query=select(Facility), id_column=col(Facility.id), ids=ids)


def _occupancies(session: Session, ids: set[str]) -> Locked[OccupancyRow]:
    found = (
        OccupancyRow(**dict(zip(OCCUPANCY_COLUMNS, r, strict=True)))
        for r in _READ_OCCUPANCY.fetch(session.connection(), ids)
    )
    return Locked("facility", {row.id: row for row in found})


def _authorized(identity: Identity) -> Callable[[R], R]:
    def check(row: R) -> R:
        logic.authorize_write(identity, row.id, row.operator_id)
        return row

    return check


def _derive(row: FacilityView) -> int:
    return logic.derive_status(
        previous=row.status,
        occupied=row.occupied,
        capacity=row.capacity,
        thresholds=thresholds_of(row),
        closed=row.state == pb.FACILITY_STATE_CLOSED,
    )


class _Changes(Changes):
    """Occupancy samples (the history rows) and outbox events of one batch, plus the occupancy rows
    it changed and the gate batches it recorded, each saved with one executemany."""

    def __init__(self, bus: BusAccess) -> None:
        super().__init__(OccupancySample, ParkingOutbox)
        self.bus = bus
        self.changed: dict[str, OccupancyRow] = {}
        self.gate_batches: list[tuple[Any, ...]] = []

    def occupancy(
        self, row: FacilityView, *, previous_status: int, cause: int, now: datetime, source: datetime
    ) -> pb.Occupancy:
        """Bump the version, record the sample and the events; return the new occupancy."""
        row.version += 1
        row.update_time = row.occupancy_time = now
        row.source_time = source
        self.history.append(
            {
                "facility_id": row.id,
                "source_time": source,
                "occupied": row.occupied or 0,
                "version": row.version,
                "cause": cause,
                "sequence": row.sequence,
            }
        )
        occupancy = occupancy_to_proto(row)
        metrics.record(row.id, occupancy.occupied_spaces, row.capacity)
        published = for_bus(occupancy, access=self.bus(row.operator_id), thresholds=thresholds_of(row))
        if published.sharing.counts_withheld and published.status == pb.OCCUPANCY_STATUS_UNKNOWN:
            previous_status = published.status  # withheld: not even its status is the bus's to know
        self.outbox.extend(
            events.occupancy_changed(
                facility_id=row.id,
                version=row.version,
                occupancy=published,
                previous_status=previous_status,
                cause=cause,
                now=now,
            )
        )
        if isinstance(row, OccupancyRow):
            self.changed[row.id] = row
        return occupancy

    def flush(self, session: Session) -> None:
        connection = session.connection()
        if self.changed:
            _SAVE_OCCUPANCY.executemany(connection, [[getattr(r, c) for c in _SAVED] for r in self.changed.values()])
        if self.gate_batches:
            _INSERT_GATE_BATCH.executemany(connection, self.gate_batches)
        if self.history:
            _INSERT_HISTORY.executemany(connection, [[h[c] for c in _HISTORY] for h in self.history])
        if self.outbox:
            _INSERT_OUTBOX.executemany(connection, [[e[c] for c in OUTBOX_COLUMNS] for e in self.outbox])


# --- writes --------------------------------------------------------------------------------------


def insert_events(session: Session, items: Sequence[list[dict[str, Any]]]) -> list[None]:
    """Batch handler: outbox rows (outbox_row values) of events no write of a facility causes (the
    published forecasts), each item a list of them."""
    rows = [row for item in items for row in item]
    if rows:
        _INSERT_OUTBOX.executemany(session.connection(), [[e[c] for c in OUTBOX_COLUMNS] for e in rows])
    return [None] * len(items)


@dataclass(frozen=True, kw_only=True)
class CreateFacility(Traced):
    identity: Identity
    facility_id: str
    facility: pb.Facility
    now: datetime


def create_facilities(session: Session, items: Sequence[CreateFacility], *, bus: BusAccess) -> list[Any]:
    existing = _facilities(session, {i.facility_id for i in items}).rows
    changes = _Changes(bus)

    def apply(item: CreateFacility) -> pb.Facility:
        if item.facility_id in existing:
            raise AlreadyExists(f"facility {item.facility_id!r} already exists")
        row = Facility(
            id=item.facility_id,
            **facility_fields(item.facility),
            version=1,
            create_time=item.now,
            update_time=item.now,
            status=pb.OCCUPANCY_STATUS_UNKNOWN,
        )
        row.status = _derive(row)
        session.add(row)
        existing[row.id] = row
        access = bus(row.operator_id)
        changes.outbox.append(events.facility_changed(row=row, created=True, changed=[], access=access, now=item.now))
        return facility_to_proto(row)

    return each(session, items, apply, changes)


@dataclass(frozen=True, kw_only=True)
class UpdateFacility(Traced):
    identity: Identity
    facility_id: str
    patch: pb.Facility
    paths: tuple[str, ...]
    now: datetime


def update_facilities(session: Session, items: Sequence[UpdateFacility], *, bus: BusAccess) -> list[Any]:
    rows = _facilities(session, {i.facility_id for i in items})
    changes = _Changes(bus)

    def apply(item: UpdateFacility) -> pb.Facility:
        row = rows.writable(item.facility_id, _authorized(item.identity))
        if "operator_id" in item.paths and item.identity.role is Role.OPERATOR:
            raise PermissionDenied("an operator may not hand its facility to another operator")
        merged = facility_to_proto(row)
        field_mask_pb2.FieldMask(paths=item.paths).MergeMessage(
            item.patch, merged, replace_message_field=True, replace_repeated_field=True
        )
        logic.apply_defaults(merged)
        logic.validate_facility(merged)
        previous_status = row.status
        for column, value in facility_fields(merged).items():
            setattr(row, column, value)
        row.status = _derive(row)
        row.version += 1
        row.update_time = item.now
        changes.outbox.append(
            events.facility_changed(
                row=row, created=False, changed=sorted(item.paths), access=bus(row.operator_id), now=item.now
            )
        )
        if row.status != previous_status or "capacity" in item.paths:
            cause = events_pb2.OCCUPANCY_CHANGE_CAUSE_FACILITY_UPDATE
            changes.occupancy(row, previous_status=previous_status, cause=cause, now=item.now, source=item.now)
        return facility_to_proto(row)

    return each(session, items, apply, changes)


@dataclass(frozen=True, kw_only=True)
class ReportOccupancy(Traced):
    identity: Identity
    facility_id: str
    request: pb.ReportOccupancyRequest
    source_time: datetime
    now: datetime


def report_occupancies(session: Session, items: Sequence[ReportOccupancy], *, bus: BusAccess) -> list[Any]:
    rows = _occupancies(session, {i.facility_id for i in items})
    changes = _Changes(bus)

    def apply(item: ReportOccupancy) -> pb.ReportOccupancyResponse:
        row = rows.writable(item.facility_id, _authorized(item.identity))
        occupied = logic.reported_occupied(item.request, row.capacity)
        outcome, detail = logic.order_report(
            sequence=item.request.sequence,
            occupied=occupied,
            source_time=item.source_time,
            last_sequence=row.sequence,
            last_reported=row.reported_occupied,
            last_report_time=row.report_time,
        )
        if outcome is logic.ReportOutcome.ACCEPTED:
            previous_status = row.status
            row.occupied = row.reported_occupied = occupied
            row.sequence = item.request.sequence
            row.report_time = row.count_time = item.source_time
            row.status = _derive(row)
            occupancy = changes.occupancy(
                row,
                previous_status=previous_status,
                cause=events_pb2.OCCUPANCY_CHANGE_CAUSE_COUNT_REPORT,
                now=item.now,
                source=item.source_time,
            )
        else:
            occupancy = occupancy_to_proto(row)
        return pb.ReportOccupancyResponse(outcome=outcome.value, occupancy=occupancy, detail=detail)

    return each(session, items, apply, changes, savepoints=False)  # apply checks before it changes


@dataclass(frozen=True, kw_only=True)
class GateBatchItem(Traced):
    identity: Identity
    facility_id: str
    batch_id: str
    entries: int
    exits: int
    latest: datetime
    now: datetime


@dataclass(frozen=True)
class GateBatchResult:
    duplicate: bool
    occupancy: pb.Occupancy


def record_gate_batches(session: Session, items: Sequence[GateBatchItem], *, bus: BusAccess) -> list[Any]:
    rows = _occupancies(session, {i.facility_id for i in items})
    seen = {
        (b.facility_id, b.batch_id)
        for b in session.execute(
            select(GateBatch).where(col(GateBatch.batch_id).in_({i.batch_id for i in items}))
        ).scalars()
    }
    changes = _Changes(bus)

    def apply(item: GateBatchItem) -> GateBatchResult:
        row = rows.writable(item.facility_id, _authorized(item.identity))
        key = (item.facility_id, item.batch_id)
        if key in seen:
            return GateBatchResult(True, occupancy_to_proto(row))
        seen.add(key)
        previous_status = row.status
        row.occupied = logic.apply_gate_counts(row.occupied, item.entries, item.exits)
        row.count_time = max(item.latest, row.count_time) if row.count_time else item.latest
        row.status = _derive(row)
        occupancy = changes.occupancy(
            row,
            previous_status=previous_status,
            cause=events_pb2.OCCUPANCY_CHANGE_CAUSE_GATE_EVENTS,
            now=item.now,
            source=max(item.latest, row.source_time) if row.source_time else item.latest,
        )
        changes.gate_batches.append((row.id, item.batch_id, item.entries, item.exits, item.now))  # _GATE_BATCH
        return GateBatchResult(False, occupancy)

    return each(session, items, apply, changes, savepoints=False)  # apply checks before it changes


# --- reads ---------------------------------------------------------------------------------------


def get_facility(engine: Engine, facility_id: str) -> Facility:
    with Session(engine) as session:
        row = session.get(Facility, facility_id)
        if row is None:
            raise NotFound(f"facility {facility_id!r} not found")
        return row


@dataclass(frozen=True)
class FacilityFilter:
    operator_id: str = ""
    kinds: tuple[int, ...] = ()
    area: tuple[float, float, float, float] | None = None  # south, west, north, east


def _conditions(f: FacilityFilter) -> list[Any]:
    conditions: list[Any] = []
    if f.operator_id:
        conditions.append(col(Facility.operator_id) == f.operator_id)
    if f.kinds:
        conditions.append(col(Facility.kind).in_(f.kinds))
    if f.area:
        south, west, north, east = f.area
        conditions += [col(Facility.latitude).between(south, north), col(Facility.longitude).between(west, east)]
    return conditions


def _filtered(query: Any, f: FacilityFilter) -> Any:
    return query.where(*_conditions(f))


def list_facilities(engine: Engine, *, f: FacilityFilter, after_id: str, limit: int) -> list[Facility]:
    with Session(engine) as session:
        query = _filtered(select(Facility), f).where(Facility.id > after_id).order_by(Facility.id).limit(limit)
        return list(session.execute(query).scalars())


def all_facilities(engine: Engine, f: FacilityFilter) -> list[Facility]:
    with Session(engine) as session:
        return list(session.execute(_filtered(select(Facility), f).order_by(Facility.id)).scalars())


def occupancy_snapshot(engine: Engine, f: FacilityFilter, ids: set[str] | None) -> Snapshot[Facility]:
    """The facilities `f` and `ids` select, and every facility's version, in one statement."""
    conditions = _conditions(f)
    if ids is not None:
        conditions.append(col(Facility.id).in_(ids))
    shown = and_(true(), *conditions).label("shown")
    with Session(engine) as session:
        rows = session.execute(select(Facility, shown).order_by(Facility.id)).all()
    return Snapshot(
        items=[row for row, selected in rows if selected], versions={row.id: row.version for row, _ in rows}
    )


def history(
    engine: Engine, *, facility_id: str, start: datetime, end: datetime, max_rows: int
) -> tuple[Facility, int | None, list[tuple[datetime, int]]]:
    """The facility, the count in force at `start`, and the changes in [start, end)."""
    with Session(engine) as session:
        row = session.get(Facility, facility_id)
        if row is None:
            raise NotFound(f"facility {facility_id!r} not found")
        s = OccupancySample
        prior = session.execute(
            select(col(s.occupied))
            .where(col(s.facility_id) == facility_id, col(s.source_time) < start)
            .order_by(col(s.source_time).desc(), col(s.id).desc())
            .limit(1)
        ).scalar_one_or_none()
        samples = session.execute(
            select(col(s.source_time), col(s.occupied))
            .where(col(s.facility_id) == facility_id, col(s.source_time) >= start, col(s.source_time) < end)
            .order_by(col(s.source_time), col(s.id))
            .limit(max_rows + 1)
        ).all()
        if len(samples) > max_rows:
            raise InvalidArgument(f"more than {max_rows} changes in the range; ask for a shorter range")
        return row, prior, [(t, o) for t, o in samples]


def occupancy_at(engine: Engine, when: dict[str, datetime]) -> dict[str, tuple[int, datetime]]:
    """Per facility, the count in force at its time and when it was measured (absent: none yet)."""
    s = OccupancySample
    out: dict[str, tuple[int, datetime]] = {}
    with Session(engine) as session:
        for facility_id, at in when.items():
            found = session.execute(
                select(col(s.occupied), col(s.source_time))
                .where(col(s.facility_id) == facility_id, col(s.source_time) <= at)
                .order_by(col(s.source_time).desc(), col(s.id).desc())
                .limit(1)
            ).first()
            if found is not None:
                out[facility_id] = (found[0], found[1])
    return out


def expire_history(session: Session, items: Sequence[Expire]) -> list[Any]:
    """Per item, how many history rows of the operator's facilities it deleted."""
    deleted = []
    for item in items:
        facilities = select(col(Facility.id)).where(col(Facility.operator_id) == item.partner_id)
        result = session.execute(
            delete(OccupancySample).where(
                col(OccupancySample.facility_id).in_(facilities), col(OccupancySample.source_time) < item.before
            )
        )
        deleted.append(result.rowcount)  # type: ignore[attr-defined]
    return deleted
