"""The incident use cases: group-commit batch handlers (who may change what, field-mask merge,
history rows and events, one result per item) and the reads behind the servicer."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from almere.incidents.v1 import incidents_pb2 as pb
from google.protobuf import field_mask_pb2
from sqlalchemy import Engine, and_, case, or_, select
from sqlmodel import Session, col

from contract.bus import INCIDENT_REPORTED, INCIDENT_STATE_CHANGED, INCIDENT_UPDATED
from services.common import tracing
from services.common.auth import Identity, Role
from services.common.batch import Locked, each, lock
from services.common.changes import Changes
from services.common.clock import from_timestamp, to_timestamp
from services.common.errors import AlreadyExists, FailedPrecondition, NotFound
from services.common.feed import Snapshot
from services.common.geo import Area
from services.common.history import AuditTrail
from services.common.network import RoadNetwork
from services.common.retention import Expire
from services.common.tracing import Traced
from services.incidents import events, logic
from services.incidents.locate import locate
from services.incidents.models import HistoryRow, IncidentRow, IncidentsOutbox, PlannedEventRow

SCHEDULER = Identity("scheduler", Role.SIM)  # planned closures move by themselves


def new_incident_id() -> str:
    return f"inc-{uuid.uuid4().hex[:20]}"


def incident_name(incident_id: str) -> str:
    return f"incidents/{incident_id}"


def _document(row: IncidentRow) -> pb.Incident:
    return pb.Incident.FromString(row.document)


def _columns(incident: pb.Incident) -> dict[str, Any]:
    """The query columns of an incident document."""
    impact = incident.impact
    return {
        "type": incident.type,
        "agency": incident.reporting_agency,
        "state": incident.state,
        "partner_id": logic.partner_of(incident) or None,
        "pending": logic.is_pending(incident) or None,
        "latitude": incident.location.latitude if incident.HasField("location") else None,
        "longitude": incident.location.longitude if incident.HasField("location") else None,
        "expected_start": from_timestamp(impact.expected_start_time)
        if impact.HasField("expected_start_time")
        else None,
        "expected_end": from_timestamp(impact.expected_end_time) if impact.HasField("expected_end_time") else None,
        "version": incident.version,
        "update_time": from_timestamp(incident.update_time),
        "document": incident.SerializeToString(),
    }


class _Changes(Changes):
    """History rows and outbox events of one batch."""

    def __init__(self) -> None:
        super().__init__(HistoryRow, IncidentsOutbox)

    def record(
        self,
        incident: pb.Incident,
        *,
        identity: Identity,
        action: str,
        event: str,
        now: datetime,
        previous_state: int = 0,
        changed: Sequence[str] = (),
        reason: str = "",
    ) -> None:
        self.history.append(
            {
                "incident_id": incident.name.removeprefix("incidents/"),
                "version": incident.version,
                "time": now,
                "actor": identity.caller,
                "actor_role": identity.role_name,
                "action": action,
                "changed_fields": list(changed),
                "from_state": previous_state or incident.state,
                "to_state": incident.state,
                "reason": reason,
            }
        )
        self.outbox.append(
            events.incident_event(
                event=event,
                incident=incident,
                actor=identity.caller,
                now=now,
                previous_state=previous_state,
                changed=list(changed),
            )
        )


def _stamp(incident: pb.Incident, now: datetime) -> None:
    incident.version += 1
    incident.update_time.CopyFrom(to_timestamp(now))


def _authorized(identity: Identity) -> Callable[[IncidentRow], tuple[IncidentRow, pb.Incident]]:
    def check(row: IncidentRow) -> tuple[IncidentRow, pb.Incident]:
        incident = _document(row)
        if not logic.may_see(identity, incident):
            raise NotFound(f"incident {row.id!r} not found")  # as for a read: its existence is not the caller's
        logic.authorize_change(identity, incident)
        return row, incident

    return check


def _incidents(session: Session, ids: set[str]) -> Locked[IncidentRow]:
    return lock(session, noun="incident", query=select(IncidentRow), id_column=col(IncidentRow.id), ids=ids)


def _insert(session: Session, incident: pb.Incident, *, reporter: str, request_id: str, planned: str | None) -> None:
    session.add(
        IncidentRow(
            id=incident.name.removeprefix("incidents/"),
            reporter=reporter,
            request_id=request_id,
            planned_event_id=planned,
            create_time=from_timestamp(incident.create_time),
            **_columns(incident),
        )
    )


def _save(row: IncidentRow, incident: pb.Incident) -> None:
    for column, value in _columns(incident).items():
        setattr(row, column, value)


# --- reports -------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Report(Traced):
    identity: Identity
    request_id: str
    incident: pb.Incident  # complete, validated and located; version 1


def report_incidents(session: Session, items: Sequence[Report]) -> list[Any]:
    """Returns (incident, duplicate) per item."""
    keys = {(i.identity.caller, i.request_id) for i in items}
    existing = {
        (r.reporter, r.request_id): _document(r)
        for r in session.execute(
            select(IncidentRow).where(col(IncidentRow.request_id).in_({k[1] for k in keys}))
        ).scalars()
    }
    changes = _Changes()

    def apply(item: Report) -> tuple[pb.Incident, bool]:
        key = (item.identity.caller, item.request_id)
        if key in existing:
            return existing[key], True
        now = from_timestamp(item.incident.create_time)
        _insert(session, item.incident, reporter=item.identity.caller, request_id=item.request_id, planned=None)
        existing[key] = item.incident
        changes.record(item.incident, identity=item.identity, action="reported", event=INCIDENT_REPORTED, now=now)
        return item.incident, False

    return each(session, items, apply, changes)


# --- updates and transitions ---------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Update(Traced):
    identity: Identity
    incident_id: str
    patch: pb.Incident
    paths: tuple[str, ...]
    network: RoadNetwork | None
    now: datetime


def update_incidents(session: Session, items: Sequence[Update]) -> list[Any]:
    rows = _incidents(session, {i.incident_id for i in items})
    changes = _Changes()

    def apply(item: Update) -> pb.Incident:
        row, incident = rows.writable(item.incident_id, _authorized(item.identity))
        logic.authorize_type_change(item.identity, incident=incident, patch=item.patch, paths=item.paths)
        if incident.state not in logic.OPEN_STATES:
            raise FailedPrecondition(f"{incident.name} is {logic.state_name(incident.state)}; it can no longer change")
        merged = pb.Incident()
        merged.CopyFrom(incident)
        field_mask_pb2.FieldMask(paths=item.paths).MergeMessage(
            item.patch, merged, replace_message_field=True, replace_repeated_field=True
        )
        # A moved incident is placed anew from whichever of its two locations the caller changed.
        if "location" in item.paths and "network_location" not in item.paths:
            merged.ClearField("network_location")
        if "network_location" in item.paths and "location" not in item.paths:
            merged.ClearField("location")
        logic.validate_incident(merged)
        locate(merged, item.network)
        _stamp(merged, item.now)
        _save(row, merged)
        changes.record(
            merged,
            identity=item.identity,
            action="updated",
            event=INCIDENT_UPDATED,
            now=item.now,
            changed=sorted(item.paths),
        )
        return merged

    return each(session, items, apply, changes)


@dataclass(frozen=True, kw_only=True)
class Transition(Traced):
    identity: Identity
    incident_id: str
    state: int
    reason: str
    now: datetime


def transition_incidents(session: Session, items: Sequence[Transition]) -> list[Any]:
    rows = _incidents(session, {i.incident_id for i in items})
    changes = _Changes()

    def apply(item: Transition) -> pb.Incident:
        row, incident = rows.writable(item.incident_id, _authorized(item.identity))
        logic.check_transition(incident.state, item.state)
        if item.state == pb.INCIDENT_STATE_REJECTED:
            incident.partner_report.rejection_reason = item.reason
        if logic.is_pending(incident) and item.state in logic.VERIFIED_STATES:
            incident.partner_report.verify_time.CopyFrom(to_timestamp(item.now))
        _move(
            row,
            incident,
            state=item.state,
            identity=item.identity,
            reason=item.reason,
            now=item.now,
            changes=changes,
        )
        return incident

    return each(session, items, apply, changes)


def _move(
    row: IncidentRow,
    incident: pb.Incident,
    *,
    state: int,
    identity: Identity,
    reason: str,
    now: datetime,
    changes: _Changes,
) -> None:
    previous = incident.state
    incident.state = state  # type: ignore[assignment]
    _stamp(incident, now)
    _save(row, incident)
    changes.record(
        incident,
        identity=identity,
        action="transitioned",
        event=INCIDENT_STATE_CHANGED,
        now=now,
        previous_state=previous,
        reason=reason,
    )


# --- planned events ------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class CreatePlanned(Traced):
    identity: Identity
    event_id: str
    planned: pb.PlannedEvent  # incidents already named
    incidents: list[pb.Incident]
    now: datetime


def create_planned_events(session: Session, items: Sequence[CreatePlanned]) -> list[Any]:
    existing = set(
        session.execute(
            select(col(PlannedEventRow.id)).where(col(PlannedEventRow.id).in_({i.event_id for i in items}))
        ).scalars()
    )
    changes = _Changes()

    def apply(item: CreatePlanned) -> pb.PlannedEvent:
        if item.event_id in existing:
            raise AlreadyExists(f"planned event {item.event_id!r} already exists")
        existing.add(item.event_id)
        session.add(
            PlannedEventRow(
                id=item.event_id,
                creator=item.identity.caller,
                create_time=item.now,
                document=item.planned.SerializeToString(),
            )
        )
        for incident in item.incidents:
            request_id = f"{item.event_id}/{incident.name}"
            _insert(session, incident, reporter=item.identity.caller, request_id=request_id, planned=item.event_id)
            changes.record(incident, identity=item.identity, action="reported", event=INCIDENT_REPORTED, now=item.now)
        return item.planned

    return each(session, items, apply, changes)


@dataclass(frozen=True, kw_only=True)
class CancelPlanned(Traced):
    identity: Identity
    event_id: str
    reason: str
    now: datetime


def cancel_planned_events(session: Session, items: Sequence[CancelPlanned]) -> list[Any]:
    changes = _Changes()

    def apply(item: CancelPlanned) -> pb.PlannedEvent:
        # Locked: of two replicas cancelling at once, the second sees the first's cancellation.
        planned_row = session.get(PlannedEventRow, item.event_id, with_for_update=True)
        if planned_row is None:
            raise NotFound(f"planned event {item.event_id!r} not found")
        if planned_row.cancelled:
            raise FailedPrecondition(f"planned event {item.event_id!r} is already cancelled")
        rows = list(
            session.execute(
                select(IncidentRow).where(col(IncidentRow.planned_event_id) == item.event_id).with_for_update()
            ).scalars()
        )
        for row in rows:
            logic.authorize_change(item.identity, _document(row))
        planned_row.cancelled = True
        planned = pb.PlannedEvent.FromString(planned_row.document)
        planned.cancelled = True
        planned_row.document = planned.SerializeToString()
        for row in rows:
            incident = _document(row)
            if incident.state in logic.OPEN_STATES:
                over = pb.INCIDENT_STATE_CANCELLED
                if pb.INCIDENT_STATE_CANCELLED not in logic.TRANSITIONS[incident.state]:
                    over = pb.INCIDENT_STATE_CLEARED
                reason = item.reason or "planned event cancelled"
                _move(row, incident, state=over, identity=item.identity, reason=reason, now=item.now, changes=changes)
        return planned

    return each(session, items, apply, changes)


def advance_schedule(session: Session, items: Sequence[datetime]) -> list[Any]:
    """Start planned closures whose time has come and end those that are over. Leader-only (the
    replica leading the schedulers), and FOR UPDATE all the same: a caller's transition of the same
    incident on another replica, or a leader handing over, waits for this one (PostgreSQL then
    re-checks the WHERE against the committed row) instead of overwriting it."""
    tracing.bind(None)  # a new trace for what the schedule does
    now = max(items)
    due = session.execute(
        select(IncidentRow)
        .where(
            col(IncidentRow.planned_event_id).is_not(None),
            or_(
                and_(col(IncidentRow.state) == pb.INCIDENT_STATE_CONFIRMED, col(IncidentRow.expected_start) <= now),
                and_(
                    col(IncidentRow.state).in_([pb.INCIDENT_STATE_ACTIVE, pb.INCIDENT_STATE_CLEARING]),
                    col(IncidentRow.expected_end) <= now,
                ),
            ),
        )
        .with_for_update()
    ).scalars()
    changes = _Changes()
    for row in due:
        incident = _document(row)
        ended = from_timestamp(incident.impact.expected_end_time) <= now
        if incident.state == pb.INCIDENT_STATE_CONFIRMED:
            _move(
                row,
                incident,
                state=pb.INCIDENT_STATE_ACTIVE,
                identity=SCHEDULER,
                reason="scheduled start",
                now=now,
                changes=changes,
            )
        if ended:
            _move(
                row,
                incident,
                state=pb.INCIDENT_STATE_CLEARED,
                identity=SCHEDULER,
                reason="scheduled end",
                now=now,
                changes=changes,
            )
    changes.flush(session)
    return [None] * len(items)


def expire_reports(session: Session, items: Sequence[Expire]) -> list[Any]:
    """Per item, how many of the partner's reports, over and older than `before`, lost the partner's
    words and who reported it. The incident stays in the city's record; what was the partner's goes."""
    over = (pb.INCIDENT_STATE_CLEARED, pb.INCIDENT_STATE_CANCELLED, pb.INCIDENT_STATE_REJECTED)
    cleared = []
    for item in items:
        rows = session.execute(
            select(IncidentRow)
            .where(
                col(IncidentRow.partner_id) == item.partner_id,
                col(IncidentRow.create_time) < item.before,
                col(IncidentRow.state).in_(over),
            )
            .with_for_update()  # a transition on another replica must not overwrite this, nor this it
        ).scalars()
        count = 0
        for row in rows:
            incident = _document(row)
            if not (incident.partner_report.description or incident.reporter):
                continue  # expired before
            incident.partner_report.ClearField("description")
            incident.ClearField("reporter")
            row.document = incident.SerializeToString()
            count += 1
        cleared.append(count)
    return cleared


# --- reads ---------------------------------------------------------------------------------------


def get_incident(engine: Engine, incident_id: str) -> pb.Incident:
    with Session(engine) as session:
        row = session.get(IncidentRow, incident_id)
        if row is None:
            raise NotFound(f"incident {incident_id!r} not found")
        return _document(row)


@dataclass(frozen=True, kw_only=True)
class IncidentFilter:
    states: tuple[int, ...] = ()
    types: tuple[int, ...] = ()
    agencies: tuple[int, ...] = ()
    area: Area | None = None
    start: datetime | None = None
    end: datetime | None = None
    # Only this partner's reports (a partner reading).
    partner_id: str | None = None
    # Without partners' reports awaiting or refused verification (anyone but public safety).
    hide_pending: bool = False


def _conditions(f: IncidentFilter) -> list[Any]:
    r = IncidentRow
    conditions: list[Any] = []
    if f.states:
        conditions.append(col(r.state).in_(f.states))
    if f.types:
        conditions.append(col(r.type).in_(f.types))
    if f.agencies:
        conditions.append(col(r.agency).in_(f.agencies))
    if f.area:
        south, west, north, east = f.area
        conditions += [col(r.latitude).between(south, north), col(r.longitude).between(west, east)]
    if f.start:
        conditions.append(col(r.create_time) >= f.start)
    if f.end:
        conditions.append(col(r.create_time) < f.end)
    if f.partner_id is not None:
        conditions.append(col(r.partner_id) == f.partner_id)
    if f.hide_pending:
        conditions.append(col(r.pending).is_(None))
    return conditions


def _filtered(query: Any, f: IncidentFilter) -> Any:
    return query.where(*_conditions(f))


def list_incidents(
    engine: Engine, *, f: IncidentFilter, after: tuple[datetime, str] | None, limit: int
) -> list[tuple[datetime, str, pb.Incident]]:
    """Newest first; `after` is the (create_time, id) of the last incident of the previous page."""
    r = IncidentRow
    query = _filtered(select(col(r.create_time), col(r.id), col(r.document)), f)
    if after:
        query = query.where(
            or_(col(r.create_time) < after[0], and_(col(r.create_time) == after[0], col(r.id) < after[1]))
        )
    query = query.order_by(col(r.create_time).desc(), col(r.id).desc()).limit(limit)
    with Session(engine) as session:
        return [(t, i, pb.Incident.FromString(d)) for t, i, d in session.execute(query)]


def open_incidents(engine: Engine, f: IncidentFilter) -> Snapshot[pb.Incident]:
    """The open incidents that match `f`, oldest first, and every incident's version, in one statement
    (one moment of the table, on SQLite too)."""
    r = IncidentRow
    shown = case((and_(col(r.state).in_(logic.OPEN_STATES), *_conditions(f)), col(r.document)), else_=None)
    query = select(col(r.id), col(r.version), shown).order_by(col(r.create_time))
    with Session(engine) as session:
        rows = session.execute(query).all()
    return Snapshot(
        items=[pb.Incident.FromString(d) for _, _, d in rows if d is not None],
        versions={incident_name(i): v for i, v, _ in rows},
    )


HISTORY = AuditTrail(noun="incident", entities=IncidentRow, rows=HistoryRow, entity_column="incident_id")


def get_planned(engine: Engine, event_id: str) -> pb.PlannedEvent:
    with Session(engine) as session:
        row = session.get(PlannedEventRow, event_id)
        if row is None:
            raise NotFound(f"planned event {event_id!r} not found")
        return pb.PlannedEvent.FromString(row.document)


def list_planned(engine: Engine, after_id: str, limit: int) -> list[tuple[str, pb.PlannedEvent]]:
    query = select(col(PlannedEventRow.id), col(PlannedEventRow.document)).where(col(PlannedEventRow.id) > after_id)
    with Session(engine) as session:
        rows = session.execute(query.order_by(col(PlannedEventRow.id)).limit(limit))
        return [(i, pb.PlannedEvent.FromString(d)) for i, d in rows]
