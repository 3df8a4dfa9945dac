"""The city's field systems as the twin plays them, over the services' public gRPC APIs, each with
the token such a device has in the city (credentials.json): garage counters report occupancy to
ParkingService with their operator's (every `every_s` and on change), police on the scene report
scripted incidents to IncidentService and clear them when they end (the twin's `sim`, as police),
navigation systems and lane counts go to the optimizer (`sim`), responders ask for priority (`ems`).
Registering the scenario's facilities is an engineer's job, done with the engineer's token."""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import grpc
from almere.incidents.v1 import incidents_pb2 as ipb
from almere.incidents.v1 import incidents_pb2_grpc
from almere.optimizer.v1 import optimizer_pb2 as opb
from almere.optimizer.v1 import optimizer_pb2_grpc
from almere.parking.v1 import parking_pb2 as ppb
from almere.parking.v1 import parking_pb2_grpc
from almere.signals.v1 import signals_pb2_grpc
from almere.type.v1 import geo_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from sim.adaptive_signals import ServiceControl
from sim.channels import open_channel
from sim.navigation import Navigation
from sim.priority import EmergencyPriority, PriorityLights
from sim.scenarios.almere_centrum.layout import Facility
from sim.variants import ScriptedIncident

log = logging.getLogger(__name__)
KINDS = {
    "garage": ppb.FACILITY_KIND_GARAGE,
    "on_street": ppb.FACILITY_KIND_ON_STREET_ZONE,
    "park_and_ride": ppb.FACILITY_KIND_PARK_AND_RIDE,
}


def _bearer(credentials: dict[str, dict[str, str]], caller: str) -> tuple[tuple[str, str]]:
    if caller not in credentials:
        raise KeyError(f"credentials.json has no {caller!r} caller (almere up --caller {caller})")
    return (("authorization", f"Bearer {credentials[caller]['token']}"),)


def _now() -> Timestamp:
    ts = Timestamp()
    ts.GetCurrentTime()
    return ts


class FieldDevices:
    def __init__(self, services_dir: Path, run_id: str, every_s: float = 60) -> None:
        self._services_dir = services_dir
        endpoints = json.loads((services_dir / "endpoints.json").read_text())
        credentials = json.loads((services_dir / "credentials.json").read_text())
        self._auth = _bearer(credentials, "sim")
        # Only registering a facility the parking service lacks is an engineer's act.
        self._engineer = _bearer(credentials, "engineer") if "engineer" in credentials else None
        # Each garage's counter reports with its operator's token, as in the city.
        self._operator_auth = {
            name.removeprefix("operator-"): (("authorization", f"Bearer {c['token']}"),)
            for name, c in credentials.items()
            if name.startswith("operator-")
        }
        self._operator_of: dict[str, str] = {}
        self._endpoints = endpoints
        self._channels = [open_channel(endpoints, "parking"), open_channel(endpoints, "incidents")]
        self.parking = parking_pb2_grpc.ParkingServiceStub(self._channels[0])
        self.incidents = incidents_pb2_grpc.IncidentServiceStub(self._channels[1])
        self._optimizer_address = endpoints.get("optimizer")
        # Wall time each scripted incident was reported (by edge), to time the optimizer's answer.
        self.reported_wall_s: dict[str, float] = {}
        self._run_id = run_id
        self._every_s = every_s
        self._last: dict[str, tuple[float, int]] = {}
        self._open: dict[str, str] = {}
        # Calls that need not hold the street up (occupancy reports, report rounds) go out from threads
        # of their own: the twin steps on while the services commit. Threads rather than gRPC's own
        # futures: starting one of those costs the stepping thread more than the hand-over.
        self._background = ThreadPoolExecutor(max_workers=3, thread_name_prefix="field-devices")
        # Occupancy reports in flight; a failed one still fails the run, at the next count or close.
        self._in_flight: list[Future[ppb.ReportOccupancyResponse]] = []
        self.reports = 0

    def close(self) -> None:
        try:
            self._settle(wait=True)
        finally:
            self._background.shutdown(cancel_futures=True)
            for channel in self._channels:
                channel.close()

    def _settle(self, *, wait: bool) -> None:
        """Forget the reports that are in; raise the first that failed, as a blocking call would have."""
        in_flight = []
        for future in self._in_flight:
            if wait or future.done():
                future.result()
            else:
                in_flight.append(future)
        self._in_flight = in_flight

    def navigation(
        self, *, seed: int, prefix: str, walks: dict[str, tuple[float, float]], equipped: float | None = None
    ) -> Navigation:
        """The equipped vehicles' navigation systems, talking to the optimizer with the sim role. The
        share of equipped vehicles is the optimizer's strategy's, unless `equipped` overrides it."""
        if not self._optimizer_address:
            raise RuntimeError("no optimizer in the running stack (endpoints.json)")
        channel = open_channel(
            self._endpoints, "optimizer", options=[("grpc.max_send_message_length", 16 * 1024 * 1024)]
        )
        self._channels.append(channel)
        stub = optimizer_pb2_grpc.OptimizerServiceStub(channel)
        if equipped is None:
            equipped = stub.GetStrategy(opb.GetStrategyRequest(), metadata=self._auth).strategy.equipped_share
        return Navigation(
            report_vehicles=stub.ReportVehicles,
            in_background=self._background,
            metadata=self._auth,
            equipped=equipped,
            seed=seed,
            prefix=prefix,
            walks=walks,
            areas=set(self._operator_of),
        )

    def adaptive_signals(self) -> ServiceControl:
        """The lights as the optimizer drives them through the signal service (sim role)."""
        if not self._optimizer_address:
            raise RuntimeError("no optimizer in the running stack (endpoints.json)")
        channel = open_channel(self._endpoints, "optimizer")
        self._channels.append(channel)
        return ServiceControl(optimizer_pb2_grpc.OptimizerServiceStub(channel), self._auth)

    def emergency_priority(self, log_path: Path, lights: PriorityLights) -> EmergencyPriority:
        """The responders' on-board units, asking the signal service for priority as ems."""
        endpoints = json.loads((self._services_dir / "endpoints.json").read_text())
        credentials = json.loads((self._services_dir / "credentials.json").read_text())
        channel = open_channel(endpoints, "signals")
        self._channels.append(channel)
        ems = _bearer(credentials, "ems")
        return EmergencyPriority(
            signals_pb2_grpc.SignalServiceStub(channel), auth=ems, log_path=log_path, lights=lights
        )

    def register(self, facilities: list[Facility], location: dict[str, tuple[float, float]]) -> None:
        """Create the scenario's facilities the parking service lacks, as an engineer (once; later
        runs find them and need no engineer). Each needs its operator's counter token
        (`operator-<operator id>`)."""
        missing = sorted({f.operator_id for f in facilities} - self._operator_auth.keys())
        if missing:
            raise KeyError(f"credentials.json has no counter token for operators {', '.join(missing)} (operator-<id>)")
        for f in facilities:
            self._operator_of[f.facility_id] = f.operator_id
            lat, lon = location[f.facility_id]
            facility = ppb.Facility(
                display_name=f.display_name,
                kind=KINDS[f.kind],
                operator_id=f.operator_id,
                capacity=f.capacity,
                location=geo_pb2.LatLng(latitude=lat, longitude=lon),
                entrance_edge_ids=[f.edge],
                sumo_parking_area_id=f.facility_id,
            )
            try:
                self.parking.GetFacility(
                    ppb.GetFacilityRequest(name=f"facilities/{f.facility_id}"), metadata=self._auth
                )
                continue
            except grpc.RpcError as err:
                if err.code() != grpc.StatusCode.NOT_FOUND:
                    raise
            if self._engineer is None:
                raise KeyError(f"registering {f.facility_id} needs an 'engineer' caller in credentials.json")
            try:
                self.parking.CreateFacility(
                    ppb.CreateFacilityRequest(facility_id=f.facility_id, facility=facility), metadata=self._engineer
                )
            except grpc.RpcError as err:
                if err.code() != grpc.StatusCode.ALREADY_EXISTS:  # a second twin registered it meanwhile
                    raise

    def count(self, sim_s: float, counts: dict[str, int]) -> None:
        """The garage counters: report a count that changed, or every `every_s` anyway. The reports go
        out without waiting for their answers (a later report of the same facility has a higher sequence,
        so one overtaking another cannot put an older count back)."""
        self._settle(wait=False)
        for facility_id, occupied in counts.items():
            last = self._last.get(facility_id)
            if last is not None and last[1] == occupied and sim_s - last[0] < self._every_s:
                continue
            # Sequence numbers increase across runs too: the service keeps the last one per facility.
            sequence = time.time_ns() // 1000
            report = self._background.submit(
                self.parking.ReportOccupancy,
                ppb.ReportOccupancyRequest(
                    facility=f"facilities/{facility_id}",
                    occupied_spaces=occupied,
                    source_time=_now(),
                    sequence=sequence,
                ),
                metadata=self._operator_auth[self._operator_of[facility_id]],
            )
            self._in_flight.append(report)
            self._last[facility_id] = (sim_s, occupied)
            self.reports += 1

    def incident_started(self, incident: ScriptedIncident, lat_lon: tuple[float, float]) -> None:
        """A police officer on the scene reports it, as police would (lanes and speed, no edge id)."""
        impact = ipb.Impact(
            closed_lanes=list(incident.closed_lanes),
            full_closure=incident.full_closure,
            speed_limit_kmh=0 if incident.full_closure else 5,
        )
        self.reported_wall_s[incident.edge] = time.time()
        reply = self.incidents.ReportIncident(
            ipb.ReportIncidentRequest(
                request_id=f"{self._run_id}/{incident.edge}/{incident.start_s:g}",
                incident=ipb.Incident(
                    type=ipb.INCIDENT_TYPE_COLLISION,
                    severity=ipb.SEVERITY_MAJOR,
                    title=incident.title,
                    reporting_agency=ipb.AGENCY_POLICE,
                    network_location=ipb.NetworkLocation(
                        edge_id=incident.edge, lane_indices=list(incident.closed_lanes)
                    ),
                    location=geo_pb2.LatLng(latitude=lat_lon[0], longitude=lat_lon[1]),
                    impact=impact,
                ),
            ),
            metadata=self._auth,
        )
        name = reply.incident.name
        self.incidents.TransitionIncident(
            ipb.TransitionIncidentRequest(name=name, state=ipb.INCIDENT_STATE_ACTIVE, reason="police on site"),
            metadata=self._auth,
        )
        self._open[incident.edge] = name

    def incident_ended(self, incident: ScriptedIncident) -> None:
        name = self._open.pop(incident.edge, None)
        if name:
            self.incidents.TransitionIncident(
                ipb.TransitionIncidentRequest(name=name, state=ipb.INCIDENT_STATE_CLEARED, reason="road clear"),
                metadata=self._auth,
            )
