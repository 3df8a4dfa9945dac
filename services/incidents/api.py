"""The gRPC servicer of almere.incidents.v1.IncidentService: proto <-> domain, status codes, roles."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from almere.incidents.v1 import incidents_pb2 as pb
from almere.incidents.v1 import incidents_pb2_grpc
from almere.partners.v1 import partners_pb2 as ppb
from grpc import aio
from sqlalchemy import Engine

from services.common import paging
from services.common.access import OPEN_DATA, allow
from services.common.agreements import Governance
from services.common.auth import PUBLIC_SAFETY, Identity, Role, current_identity
from services.common.clock import from_timestamp, to_timestamp, utcnow
from services.common.db import GroupCommitter
from services.common.errors import InvalidArgument, NotFound, PermissionDenied
from services.common.feed import Change, EventFeed
from services.common.geo import Area, area_of, inside
from services.common.names import id_from_name, validate_id
from services.common.network import RoadNetwork
from services.incidents import events, logic, usecases
from services.incidents.locate import locate

Context = aio.ServicerContext[Any, Any]
OUTPUT_ONLY = (
    "name",
    "reporting_agency",
    "state",
    "reporter",
    "planned_event",
    "version",
    "create_time",
    "update_time",
)


# An incident with every restricted field set: what a caller sees of it tells whether it may see
# more than the bus carries.
_PROBE = pb.Incident(type=pb.INCIDENT_TYPE_COLLISION, notes="notes", reporter="reporter")


def _incident_id(name: str, field: str = "name") -> str:
    return id_from_name(name, "incidents", field)


def _enum_values(values: Any, enum: Any, field: str) -> tuple[int, ...]:
    unknown = [v for v in values if v not in enum.values() or v == 0]
    if unknown:
        raise InvalidArgument(f"{field} holds unknown value {unknown[0]}")
    return tuple(sorted(set(values)))


def _version_of(change: Change) -> tuple[str, int]:
    incident = change[1].incident
    return incident.name, incident.version


def _matches(incident: pb.Incident, types: tuple[int, ...], area: Area | None) -> bool:
    if types and incident.type not in types:
        return False
    loc = incident.location
    return area is None or (incident.HasField("location") and inside(area, loc.latitude, loc.longitude))


def _filter_for(identity: Identity, **query: Any) -> usecases.IncidentFilter:
    """A read's filter with what the caller may know of (logic.may_see) added."""
    partner = identity.subject if identity.role is Role.PARTNER else None
    hide_pending = identity.role not in PUBLIC_SAFETY and partner is None
    return usecases.IncidentFilter(partner_id=partner, hide_pending=hide_pending, **query)


class IncidentApi(incidents_pb2_grpc.IncidentServiceServicer):
    def __init__(
        self,
        engine: Engine,
        *,
        committer: GroupCommitter,
        feed: EventFeed,
        network: RoadNetwork | None,
        governance: Governance,
    ) -> None:
        self._engine = engine
        self._committer = committer
        self._feed = feed
        self._network = network
        self._governance = governance

    def _shaped(self, identity: Identity, incidents: list[pb.Incident], *, method: str) -> list[pb.Incident]:
        """The incidents as the caller may see them, partners' reports under their agreements (the
        reads audited once per partner)."""
        theirs = [p for i in incidents if (p := logic.partner_of(i)) and not logic.is_own_report(identity, i)]
        accesses = {}
        if theirs:
            dataset = ppb.DATASET_INCIDENT_REPORTS
            accesses = self._governance.read(theirs, dataset=dataset, method=method, now=utcnow())
        return [logic.shown(logic.visible(identity, i), accesses.get(logic.partner_of(i))) for i in incidents]

    def _changed(self, identity: Identity, incident: pb.Incident) -> pb.Incident:
        """A Watch's change as the caller may see it (its reads were audited when the watch began)."""
        partner = logic.partner_of(incident)
        access = None
        if partner and not logic.is_own_report(identity, incident):
            access = self._governance.access(partner, dataset=ppb.DATASET_INCIDENT_REPORTS, now=utcnow())
        return logic.shown(logic.visible(identity, incident), access)

    def _partner_report(self, partner_id: str, incident: pb.Incident) -> None:
        """Marks a partner's report: whose, how trusted, waiting for the police."""
        book = self._governance.book
        if not book.known(partner_id):
            raise PermissionDenied(f"partner {partner_id!r} is not registered with the city (partners/{partner_id})")
        description = incident.partner_report.description
        incident.partner_report.Clear()
        incident.partner_report.partner = f"partners/{partner_id}"
        incident.partner_report.trust_level = book.trust(partner_id)  # type: ignore[assignment]
        incident.partner_report.description = description
        incident.state = pb.INCIDENT_STATE_UNVERIFIED

    # --- incidents -------------------------------------------------------------------------------

    @allow(logic.REPORTERS, notes=logic.REPORTS_AS)
    async def ReportIncident(self, request: pb.ReportIncidentRequest, context: Context) -> pb.ReportIncidentResponse:
        identity = current_identity.get()
        if not request.request_id or len(request.request_id) > 128:
            raise InvalidArgument("request_id is required (at most 128 characters); reuse it when you retry")
        if not request.HasField("incident"):
            raise InvalidArgument("incident is required")
        incident = pb.Incident()
        incident.CopyFrom(request.incident)
        agency = logic.reporting_agency(identity, incident.reporting_agency)
        for output_only in OUTPUT_ONLY:
            incident.ClearField(output_only)  # type: ignore[arg-type]
        if incident.severity == pb.SEVERITY_UNSPECIFIED:
            incident.severity = pb.SEVERITY_MODERATE
        logic.validate_incident(incident)
        logic.validate_partner_report(identity, incident)
        locate(incident, self._network)
        now = utcnow()
        incident.name = usecases.incident_name(usecases.new_incident_id())
        incident.reporting_agency = agency  # type: ignore[assignment]
        incident.state = pb.INCIDENT_STATE_REPORTED
        if identity.role is Role.PARTNER:
            self._partner_report(identity.subject or "", incident)
        incident.reporter = identity.caller
        incident.version = 1
        incident.create_time.CopyFrom(to_timestamp(now))
        incident.update_time.CopyFrom(to_timestamp(now))
        item = usecases.Report(identity=identity, request_id=request.request_id, incident=incident)
        stored, duplicate = await self._committer.submit(usecases.report_incidents, item)
        return pb.ReportIncidentResponse(incident=logic.visible(identity, stored), duplicate=duplicate)

    @allow(OPEN_DATA | logic.READERS, notes=logic.OPEN_VISIBILITY)
    async def GetIncident(self, request: pb.GetIncidentRequest, context: Context) -> pb.GetIncidentResponse:
        identity = current_identity.get()
        incident = await asyncio.to_thread(usecases.get_incident, self._engine, _incident_id(request.name))
        if not logic.may_see(identity, incident):
            raise NotFound(f"incident {request.name} not found")  # as if unknown: its existence is not theirs
        [shown] = self._shaped(identity, [incident], method="GetIncident")
        return pb.GetIncidentResponse(incident=shown)

    @allow(OPEN_DATA | logic.READERS, notes=logic.OPEN_VISIBILITY)
    async def ListIncidents(self, request: pb.ListIncidentsRequest, context: Context) -> pb.ListIncidentsResponse:
        identity = current_identity.get()
        size = paging.page_size(request.page_size)
        start = from_timestamp(request.start_time) if request.HasField("start_time") else None
        end = from_timestamp(request.end_time) if request.HasField("end_time") else None
        if start and end and end <= start:
            raise InvalidArgument("end_time must be after start_time")
        states, types = logic.narrowed_for(
            identity,
            states=_enum_values(request.states, pb.IncidentState, "states"),
            types=_enum_values(request.types, pb.IncidentType, "types"),
        )
        if not (states and types) and identity.role is Role.PUBLIC:
            return pb.ListIncidentsResponse()
        query = _filter_for(
            identity,
            states=states,
            types=types,
            agencies=_enum_values(request.agencies, pb.Agency, "agencies"),
            area=area_of(request.area) if request.HasField("area") else None,
            start=start,
            end=end,
        )
        fingerprint = paging.fingerprint(query)
        after = paging.decode(request.page_token, fingerprint)
        position = None
        if after:
            when, _, last_id = after.partition("|")
            try:
                position = (datetime.fromisoformat(when), last_id)
            except ValueError:
                raise InvalidArgument("page_token is malformed") from None
        rows = await asyncio.to_thread(usecases.list_incidents, self._engine, f=query, after=position, limit=size + 1)
        next_token = ""
        if len(rows) > size:
            last_time, last_id, _ = rows[size - 1]
            next_token = paging.encode(f"{last_time.isoformat()}|{last_id}", fingerprint)
        shown = self._shaped(identity, [i for _, _, i in rows[:size]], method="ListIncidents")
        return pb.ListIncidentsResponse(incidents=shown, next_page_token=next_token)

    @allow(logic.EDITORS, notes=logic.OWN_AGENCY)
    async def UpdateIncident(self, request: pb.UpdateIncidentRequest, context: Context) -> pb.UpdateIncidentResponse:
        identity = current_identity.get()
        incident_id = _incident_id(request.incident.name, "incident.name")
        paths = tuple(dict.fromkeys(request.update_mask.paths))
        if not paths:
            raise InvalidArgument("update_mask is required: name the fields to change")
        unknown = sorted(set(paths) - logic.UPDATABLE_FIELDS)
        if unknown:
            raise InvalidArgument(
                f"update_mask names fields that cannot be updated: {', '.join(unknown)} "
                f"(updatable: {', '.join(sorted(logic.UPDATABLE_FIELDS))})"
            )
        item = usecases.Update(
            identity=identity,
            incident_id=incident_id,
            patch=request.incident,
            paths=paths,
            network=self._network,
            now=utcnow(),
        )
        updated = await self._committer.submit(usecases.update_incidents, item)
        [shown] = self._shaped(identity, [updated], method="UpdateIncident")
        return pb.UpdateIncidentResponse(incident=shown)

    @allow(logic.MOVERS, notes=logic.OWN_INCIDENTS)
    async def TransitionIncident(
        self, request: pb.TransitionIncidentRequest, context: Context
    ) -> pb.TransitionIncidentResponse:
        identity = current_identity.get()
        incident_id = _incident_id(request.name)
        if len(request.reason) > logic.MAX_REASON:
            raise InvalidArgument(f"reason is longer than {logic.MAX_REASON} characters")
        logic.check_target(request.state)
        logic.check_partner_move(identity, request.state)
        logic.check_rejection(request.state, request.reason)
        item = usecases.Transition(
            identity=identity, incident_id=incident_id, state=request.state, reason=request.reason, now=utcnow()
        )
        moved = await self._committer.submit(usecases.transition_incidents, item)
        [shown] = self._shaped(identity, [moved], method="TransitionIncident")
        return pb.TransitionIncidentResponse(incident=shown)

    @allow(logic.READERS, notes=logic.VISIBILITY)
    async def WatchIncidents(
        self, request: pb.WatchIncidentsRequest, context: Context
    ) -> AsyncIterator[pb.WatchIncidentsResponse]:
        identity = current_identity.get()
        types = _enum_values(request.types, pb.IncidentType, "types")
        area = area_of(request.area) if request.HasField("area") else None
        read = functools.partial(usecases.open_incidents, self._engine, _filter_for(identity, types=types, area=area))
        # The bus carries incidents without their restricted fields: a caller allowed more reads them
        # from the store (it may be newer than the event: then that version is what it gets). A
        # partner's own description is one of them.
        from_store = identity.role is Role.PARTNER or (
            logic.visible(identity, _PROBE) != logic.visible(events.BUS_READER, _PROBE)
        )
        sent: dict[str, int] = {}
        async with self._feed.watch_from(read, _version_of) as (snapshot, changes):
            for incident in self._shaped(identity, snapshot.items, method="WatchIncidents"):
                yield pb.WatchIncidentsResponse(incident=incident, snapshot=True)
            async for _, event in changes:
                if not logic.may_see(identity, event.incident):
                    continue
                incident = event.incident
                if from_store:
                    incident = await asyncio.to_thread(usecases.get_incident, self._engine, event.incident_id)
                    if incident.version <= sent.get(incident.name, 0):
                        continue
                    sent[incident.name] = incident.version
                if _matches(incident, types, area) and logic.may_see(identity, incident):
                    yield pb.WatchIncidentsResponse(incident=self._changed(identity, incident), snapshot=False)

    @allow(logic.HISTORY_READERS, notes={Role.ENGINEER: "no actors or reasons of police actions"})
    async def ListIncidentHistory(
        self, request: pb.ListIncidentHistoryRequest, context: Context
    ) -> pb.ListIncidentHistoryResponse:
        identity = current_identity.get()
        row, rows, next_token = await usecases.HISTORY.page_with_entity(
            self._engine,
            entity_id=_incident_id(request.name),
            page_size=request.page_size,
            page_token=request.page_token,
        )
        incident = pb.Incident.FromString(row.document)  # its type now decides, as for Get
        if not logic.may_see(identity, incident):
            raise NotFound(f"incident {request.name} not found")
        [shown] = self._shaped(identity, [incident], method="ListIncidentHistory")
        withheld = shown.partner_report.withheld
        return pb.ListIncidentHistoryResponse(
            entries=[
                logic.visible_entry(
                    identity,
                    incident,
                    pb.IncidentHistoryEntry(
                        version=r.version,
                        time=to_timestamp(r.time),
                        actor=r.actor,
                        actor_role=r.actor_role,
                        action=r.action,
                        changed_fields=r.changed_fields,
                        from_state=r.from_state,
                        to_state=r.to_state,
                        reason=r.reason,
                    ),
                    partner_withheld=withheld,
                )
                for r in rows
            ],
            next_page_token=next_token,
        )

    # --- planned events --------------------------------------------------------------------------

    @allow(logic.PLANNERS)
    async def CreatePlannedEvent(
        self, request: pb.CreatePlannedEventRequest, context: Context
    ) -> pb.CreatePlannedEventResponse:
        identity = current_identity.get()
        event_id = validate_id(request.planned_event_id, "planned_event_id")
        planned = pb.PlannedEvent()
        planned.CopyFrom(request.planned_event)
        if not planned.display_name.strip() or len(planned.display_name) > logic.MAX_TITLE:
            raise InvalidArgument(f"display_name is required (at most {logic.MAX_TITLE} characters)")
        if not 1 <= len(planned.closures) <= logic.MAX_CLOSURES:
            raise InvalidArgument(f"a planned event needs 1 to {logic.MAX_CLOSURES} closures")
        if planned.type == pb.INCIDENT_TYPE_UNSPECIFIED:
            planned.type = pb.INCIDENT_TYPE_PLANNED_EVENT
        now = utcnow()
        agency = logic.reporting_agency(identity, 0)
        incidents = []
        for index, closure in enumerate(planned.closures):
            logic.validate_closure(closure, index, now)
            incident = pb.Incident(
                type=planned.type,
                severity=closure.severity or pb.SEVERITY_MAJOR,
                title=closure.title or planned.display_name,
                network_location=closure.network_location,
                impact=closure.impact,
                reporting_agency=agency,  # type: ignore[arg-type]
                reporter=identity.caller,
                planned_event=f"plannedEvents/{event_id}",
                state=pb.INCIDENT_STATE_CONFIRMED,
                version=1,
                create_time=to_timestamp(now),
                update_time=to_timestamp(now),
            )
            if closure.HasField("location"):
                incident.location.CopyFrom(closure.location)
            try:
                logic.validate_incident(incident)
                locate(incident, self._network)
            except InvalidArgument as err:
                raise InvalidArgument(f"closures[{index}]: {err.message}") from None
            incident.name = usecases.incident_name(usecases.new_incident_id())
            incidents.append(incident)
        planned.name = f"plannedEvents/{event_id}"
        planned.cancelled = False
        planned.create_time.CopyFrom(to_timestamp(now))
        planned.ClearField("incidents")
        planned.incidents.extend(i.name for i in incidents)
        item = usecases.CreatePlanned(
            identity=identity, event_id=event_id, planned=planned, incidents=incidents, now=now
        )
        created = await self._committer.submit(usecases.create_planned_events, item)
        # Closures whose start has already come are started by the schedule right away.
        await self._committer.submit(usecases.advance_schedule, utcnow())
        return pb.CreatePlannedEventResponse(planned_event=created)

    @allow(OPEN_DATA)
    async def GetPlannedEvent(self, request: pb.GetPlannedEventRequest, context: Context) -> pb.GetPlannedEventResponse:
        event_id = id_from_name(request.name, "plannedEvents")
        planned = await asyncio.to_thread(usecases.get_planned, self._engine, event_id)
        return pb.GetPlannedEventResponse(planned_event=planned)

    @allow(OPEN_DATA)
    async def ListPlannedEvents(
        self, request: pb.ListPlannedEventsRequest, context: Context
    ) -> pb.ListPlannedEventsResponse:
        size = paging.page_size(request.page_size)
        after = paging.decode(request.page_token, "planned")
        rows = await asyncio.to_thread(usecases.list_planned, self._engine, after, size + 1)
        next_token = paging.encode(rows[size - 1][0], "planned") if len(rows) > size else ""
        return pb.ListPlannedEventsResponse(planned_events=[p for _, p in rows[:size]], next_page_token=next_token)

    @allow(logic.PLANNERS, notes={Role.POLICE: logic.OWN_AGENCY[Role.POLICE]})
    async def CancelPlannedEvent(
        self, request: pb.CancelPlannedEventRequest, context: Context
    ) -> pb.CancelPlannedEventResponse:
        identity = current_identity.get()
        event_id = id_from_name(request.name, "plannedEvents")
        if len(request.reason) > logic.MAX_REASON:
            raise InvalidArgument(f"reason is longer than {logic.MAX_REASON} characters")
        item = usecases.CancelPlanned(identity=identity, event_id=event_id, reason=request.reason, now=utcnow())
        cancelled = await self._committer.submit(usecases.cancel_planned_events, item)
        return pb.CancelPlannedEventResponse(planned_event=cancelled)
