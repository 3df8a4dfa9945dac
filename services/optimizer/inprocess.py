"""The optimizer's decisions in-process, without bus, database or gRPC: the same decisions for batch
evaluation, what-if runs and tests, where starting the services would only measure the plumbing. It
is fed the events the services would publish (facilities, counts, incidents)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from almere.incidents.v1 import events_pb2 as ievents
from almere.incidents.v1 import incidents_pb2 as ipb
from almere.optimizer.v1 import decisions_pb2
from almere.optimizer.v1 import optimizer_pb2 as pb
from almere.parking.v1 import events_pb2 as pevents
from almere.parking.v1 import parking_pb2 as ppb

from services.common.clock import to_timestamp, utcnow
from services.optimizer import admission
from services.optimizer.decision_engine import DecisionEngine
from services.optimizer.routing import RoadGraph
from services.optimizer.usecases import Loaded


class InProcessOptimizer:
    def __init__(self, graph: RoadGraph, strategy: pb.Strategy | None = None) -> None:
        self.decisions = DecisionEngine(graph, Loaded(strategy=strategy))
        self._capacity: dict[str, int] = {}
        self._version = 1

    def ReportVehicles(self, request: pb.ReportVehiclesRequest, **_: Any) -> pb.ReportVehiclesResponse:
        """What the service's ReportVehicles does, minus persisting: validate, then decide."""
        admission.validate_report(self.decisions.graph, request)
        writes = self.decisions.on_report(request, utcnow())
        return pb.ReportVehiclesResponse(decisions=[t.decision for t in writes.decisions])

    def add_facility(
        self, *, facility_id: str, capacity: int, entrance_edge: str, location: tuple[float, float]
    ) -> None:
        """A facility as the parking service announces it."""
        doc = ppb.Facility(capacity=capacity, entrance_edge_ids=[entrance_edge])
        doc.location.latitude, doc.location.longitude = location
        self.decisions.on_facility(pevents.FacilityChangedEvent(facility_id=facility_id, version=1, facility=doc))
        self._capacity[facility_id] = capacity

    def count(self, occupied: Mapping[str, int]) -> None:
        """The facilities' counts, as the parking service publishes them."""
        self._version += 1
        for facility_id, count in occupied.items():
            capacity = self._capacity[facility_id]
            event = pevents.OccupancyChangedEvent(
                facility_id=facility_id,
                version=self._version,
                occur_time=to_timestamp(utcnow()),
                occupancy=ppb.Occupancy(occupied_spaces=min(count, capacity), capacity=capacity),
            )
            self.decisions.on_occupancy(event)

    def incident(
        self, incident_id: str, *, edge: str, impact: ipb.Impact, active: bool = True
    ) -> list[decisions_pb2.Decision]:
        """An incident reported (or, `active` off, cleared): the reroutes it causes at once."""
        state = ipb.INCIDENT_STATE_ACTIVE if active else ipb.INCIDENT_STATE_CLEARED
        incident = ipb.Incident(state=state, impact=impact)
        incident.network_location.edge_id = edge
        known = self.decisions.incidents.get(incident_id)
        version = known.version + 1 if known is not None else 1
        event = ievents.IncidentEvent(incident_id=incident_id, version=version, incident=incident)
        return [taken.decision for taken in self.decisions.on_incident(event, utcnow()).decisions]
