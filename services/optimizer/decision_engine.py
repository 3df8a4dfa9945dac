"""The optimizer's decisions: keeps the live picture up to date from what it consumes and is reported,
and runs the levers the strategy has on. It decides; the service persists and publishes them
(usecases, events)."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from almere.detectors.v1 import detectors_pb2
from almere.incidents.v1 import events_pb2 as ievents
from almere.incidents.v1 import incidents_pb2 as ipb
from almere.optimizer.v1 import decisions_pb2 as dpb
from almere.optimizer.v1 import optimizer_pb2 as pb
from almere.parking.v1 import events_pb2 as pevents
from almere.parking.v1 import parking_pb2 as ppb
from almere.partners.v1.partners_pb2 import TRUST_LEVEL_TRUSTED

from services.common.clock import from_timestamp, to_timestamp
from services.common.opening_hours import DEFAULT_TIME_ZONE, is_open, windows
from services.optimizer import logic
from services.optimizer.levers import congestion, incident, parking
from services.optimizer.levers.routes import Reroute, replan
from services.optimizer.routing import FloatArray, RoadGraph
from services.optimizer.state import DECISION_MEMORY, SMOOTHING, Facility, Incident, Reservation, TravelTimes, Vehicle
from services.optimizer.usecases import Loaded, Taken, Writes

AFFECTING = (ipb.INCIDENT_STATE_ACTIVE, ipb.INCIDENT_STATE_CLEARING)
STALE = timedelta(minutes=10)
FORGET_EVERY = timedelta(hours=1)
UNAVAILABLE = (ppb.FACILITY_STATE_CLOSED,)


@dataclass(kw_only=True)
class Fleet:
    """One reporter's equipped vehicles and its clock (simulated seconds, or wall-clock seconds)."""

    vehicles: dict[str, Vehicle] = field(default_factory=dict)
    clock_s: float = float("-inf")
    sim_s: float = 0.0
    last_round_s: float = float("-inf")
    # Drivers parking without guidance, per facility (vehicles per second on this clock, smoothed),
    # from the counts between rounds minus the guided vehicles seen arriving.
    inflow: dict[str, float] = field(default_factory=dict)
    counted: dict[str, tuple[float, int]] = field(default_factory=dict)
    guided_arrivals: Counter[str] = field(default_factory=Counter)


class DecisionEngine:
    def __init__(self, graph: RoadGraph, loaded: Loaded) -> None:
        self.graph = graph
        self.times = TravelTimes(graph)
        self.restore(loaded)
        # What each reporter (the twin, a navigation backend) last said, on its own clock.
        self.fleets: dict[str, Fleet] = {}
        # Per vehicle, the routes it had and was given when answered for an incident (in memory: after
        # a restart nobody is answered twice on a guess).
        self.incident_routes: dict[str, list[list[str]]] = {}
        self.freeing: dict[str, int] = {}
        self.consumed: Counter[str] = Counter()  # messages per stream
        self.per_lever: Counter[str] = Counter()  # decisions taken
        self.last_report: datetime | None = None
        self._forgotten_at: datetime | None = None

    @property
    def vehicles(self) -> dict[str, Vehicle]:
        return {v.id: v for fleet in self.fleets.values() for v in fleet.vehicles.values()}

    @property
    def sim_s(self) -> float:
        """Simulated time of the latest simulation report (0 without one)."""
        return max((f.sim_s for f in self.fleets.values()), default=0.0)

    def restore(self, loaded: Loaded) -> None:
        """Take the durable state as stored (at start, and after a write failed: memory must not run
        ahead of the database)."""
        self.strategy = loaded.strategy or logic.default_strategy()
        self.incidents = {i.id: i for i in loaded.incidents}
        self.facilities = {f.id: f for f in loaded.facilities}
        self.reservations = {r.vehicle_id: r for r in loaded.reservations}
        self.decided = dict(loaded.decided)
        # When each vehicle last got a decision, on its reporter's clock (damping; kept in the table).
        self.last_rerouted: dict[str, float] = dict(loaded.last_rerouted)

    # -- what is consumed --------------------------------------------------------------------------

    def on_facility(self, event: pevents.FacilityChangedEvent) -> Writes:
        known = self.facilities.get(event.facility_id)
        if known is not None and event.version <= known.version:
            return Writes()
        f = event.facility
        edges = [e for e in f.entrance_edge_ids if e in self.graph.index]
        facility = Facility(
            id=event.facility_id,
            version=event.version,
            capacity=f.capacity,
            occupied=f.occupancy.occupied_spaces if f.HasField("occupancy") else (known.occupied if known else 0),
            counted=not f.occupancy.sharing.counts_withheld
            if f.HasField("occupancy")
            else (known is None or known.counted),
            available=f.state not in UNAVAILABLE,
            edge_id=edges[0] if edges else "",
            latitude=f.location.latitude,
            longitude=f.location.longitude,
            report_time=known.report_time if known else None,
            opening_hours=windows(f.opening_hours),
            time_zone=f.time_zone or DEFAULT_TIME_ZONE,
            operator_id=f.operator_id,
        )
        self.facilities[facility.id] = facility
        return Writes(facilities=[facility])

    def on_occupancy(self, event: pevents.OccupancyChangedEvent) -> Writes:
        facility = self.facilities.get(event.facility_id)
        if facility is None or event.version <= facility.version:
            return Writes()
        reported = from_timestamp(event.occur_time)  # read everything before changing anything
        facility.counted = not event.occupancy.sharing.counts_withheld
        occupied = event.occupancy.occupied_spaces if facility.counted else facility.occupied
        self.freeing[facility.id] = max(0, facility.occupied - occupied)
        facility.version, facility.occupied = event.version, occupied
        facility.capacity = event.occupancy.capacity or facility.capacity
        facility.report_time = reported
        # A parked vehicle's promise ends once a count made after it parked includes it.
        counted = [
            r.vehicle_id
            for r in self.reservations.values()
            if r.facility_id == facility.id and r.arrived is not None and r.arrived <= facility.report_time
        ]
        for vehicle in counted:
            del self.reservations[vehicle]
        return Writes(facilities=[facility], released=counted)

    def _steers(self, incident: ipb.Incident, *, report_shared: bool) -> bool:
        """Whether an incident acts on traffic: once active; a trusted partner's unverified report
        already when the strategy says so and its agreement shares reports with the optimizer."""
        if incident.state in AFFECTING:
            return True
        return (
            incident.state == ipb.INCIDENT_STATE_UNVERIFIED
            and report_shared
            and self.strategy.trusted_reports_steer
            and incident.partner_report.trust_level == TRUST_LEVEL_TRUSTED
        )

    def on_incident(self, event: ievents.IncidentEvent, now: datetime, *, report_shared: bool = False) -> Writes:
        known = self.incidents.get(event.incident_id)
        if known is not None and event.version <= known.version:
            return Writes()
        i = event.incident
        updated = Incident(
            id=event.incident_id,
            version=event.version,
            edge_id=i.network_location.edge_id,
            active=self._steers(i, report_shared=report_shared),
            full_closure=i.impact.full_closure,
            closed_lanes=list(i.impact.closed_lanes),
            speed_limit_kmh=i.impact.speed_limit_kmh,
        )
        self.incidents[updated.id] = updated
        writes = Writes(incidents=[updated])
        if updated.active and self.strategy.incident_rerouting:  # at once, not at the next round
            writes.decisions = self._route_decisions(self._incident_reroutes(), dpb.LEVER_INCIDENT_REROUTING, now)
        return writes

    def on_detector(self, measurement: detectors_pb2.Measurement, now: datetime) -> None:
        """A loop's last interval; measurements older than STALE (a backlog after downtime) are not
        today's traffic and are skipped."""
        fresh = from_timestamp(measurement.interval_end) >= now - STALE
        timed = measurement.mean_speed_mps >= 0  # a partner's counter counts, it does not time
        if measurement.vehicle_count > 0 and fresh and timed:
            self.times.observe_speed(measurement.edge_id, measurement.mean_speed_mps)

    # -- reports and decision rounds ---------------------------------------------------------------

    def on_report(self, request: pb.ReportVehiclesRequest, now: datetime, reporter: str = "") -> Writes:
        """One reporter's vehicles (those it no longer lists have left); a decision round for them when
        the interval has passed on its clock (simulated time in a simulation, else wall time)."""
        self.last_report = now
        self._forget(now)
        fleet = self.fleets.setdefault(reporter, Fleet())
        fleet.sim_s = request.sim_time_seconds
        clock = request.sim_time_seconds or now.timestamp()
        if clock < fleet.clock_s:  # a new simulation run: its clock starts again
            fleet.last_round_s = float("-inf")
            fleet.counted.clear()
        fleet.clock_s = clock
        for measured in request.edge_travel_times:
            self.times.observe(measured.edge_id, measured.travel_time_seconds)
        writes = self._update_vehicles(fleet, reporter=reporter, states=request.vehicles, now=now)
        if fleet.clock_s - fleet.last_round_s < self.strategy.decision_interval_seconds:
            return writes
        fleet.last_round_s = fleet.clock_s
        self._measure_inflow(fleet)
        if self.strategy.parking_guidance:
            writes.decisions += self._guide(fleet, writes, now)
        if self.strategy.incident_rerouting:
            writes.decisions += self._route_decisions(self._incident_reroutes(fleet), dpb.LEVER_INCIDENT_REROUTING, now)
        if self.strategy.congestion_rerouting:
            damping = congestion.Damping(
                self.strategy.min_gain_seconds, self.strategy.min_relative_gain, self.strategy.reroute_hold_seconds
            )
            found = congestion.reroutes(
                self.graph,
                self.cost(),
                vehicles=self._routable(fleet),
                via=self._via(),
                now_s=fleet.clock_s,
                last_rerouted=self.last_rerouted,
                damping=damping,
            )
            writes.decisions += self._route_decisions(found, dpb.LEVER_CONGESTION_REROUTING, now)
        return writes

    def _forget(self, now: datetime) -> None:
        """Drop answers older than DECISION_MEMORY (as the table does), at most hourly: the scan is
        over everything remembered, so not on every report."""
        if self._forgotten_at is not None and now - self._forgotten_at < FORGET_EVERY:
            return
        self._forgotten_at = now
        for key in [k for k, when in self.decided.items() if when < now - DECISION_MEMORY]:
            del self.decided[key]

    def _measure_inflow(self, fleet: Fleet) -> None:
        for f in self.facilities.values():
            last = fleet.counted.get(f.id)
            if last is not None and fleet.clock_s > last[0]:
                others = max(0, f.occupied - last[1] - fleet.guided_arrivals[f.id])
                rate = others / (fleet.clock_s - last[0])
                known = fleet.inflow.get(f.id, rate)
                fleet.inflow[f.id] = known + SMOOTHING * (rate - known)
            fleet.counted[f.id] = (fleet.clock_s, f.occupied)
        fleet.guided_arrivals.clear()

    def _update_vehicles(
        self, fleet: Fleet, *, reporter: str, states: Iterable[pb.VehicleState], now: datetime
    ) -> Writes:
        seen: dict[str, Vehicle] = {}
        writes = Writes()
        for s in states:
            walk = (
                (s.walk_destination.latitude, s.walk_destination.longitude) if s.HasField("walk_destination") else None
            )
            seen[s.vehicle_id] = Vehicle(
                id=s.vehicle_id,
                edge_id=s.edge_id,
                route=list(s.route) or [s.edge_id],
                parking=s.purpose == pb.VEHICLE_PURPOSE_PARKING,
                parked_at=s.parked_at,
                parking_area_id=s.parking_area_id,
                walk_to=walk,
                fleet=reporter,
            )
            reservation = self.reservations.get(s.vehicle_id)
            if reservation is not None and s.parked_at and reservation.arrived is None:
                reservation.arrived = now
                writes.reservations.append(reservation)
                fleet.guided_arrivals[reservation.facility_id] += 1
        left = [v for v in fleet.vehicles if v not in seen]
        for vehicle in left:
            self.incident_routes.pop(vehicle, None)
            self.last_rerouted.pop(vehicle, None)
        # Promises of this reporter's vehicles that left without parking end now (also those made
        # before a restart, which the reservation rows remember by reporter).
        gone = [v for v, r in self.reservations.items() if r.reporter == reporter and v not in seen]
        for vehicle in gone:
            del self.reservations[vehicle]
        writes.released += gone
        fleet.vehicles = seen
        return writes

    def cost(self) -> FloatArray:
        return self.times.cost(list(self.incidents.values()))

    def promised(self) -> Counter[str]:
        return Counter(r.facility_id for r in self.reservations.values())

    def _routable(self, fleet: Fleet | None = None) -> list[Vehicle]:
        """Vehicles on the road (of one fleet, or of all)."""
        vehicles = fleet.vehicles.values() if fleet is not None else self.vehicles.values()
        return [v for v in vehicles if not v.parked_at and v.edge_id in self.graph.index]

    def _via(self) -> dict[str, str]:
        """The parking edge each parking vehicle still has to reach."""
        out = {}
        for v in self.vehicles.values():
            facility = self.facilities.get(v.parking_area_id)
            if v.parking and facility is not None and facility.edge_id:
                out[v.id] = facility.edge_id
        return out

    def _incident_reroutes(self, fleet: Fleet | None = None) -> list[Reroute]:
        active = [i for i in self.incidents.values() if i.active]
        if not active:
            return []
        return incident.reroutes(
            self.graph,
            self.cost(),
            vehicles=self._routable(fleet),
            via=self._via(),
            incidents=active,
            decided=self.decided,
            known=self.incident_routes,
        )

    def _route_decisions(self, reroutes: list[Reroute], lever: int, now: datetime) -> list[Taken]:
        out = []
        for r in reroutes:
            if (r.vehicle.id, r.cause) in self.decided:
                continue
            advice = dpb.RouteAdvice(
                vehicle_id=r.vehicle.id, edges=r.route, reason=r.reason, decide_time=to_timestamp(now)
            )
            out.append(
                self._take(
                    r.vehicle,
                    cause=r.cause,
                    lever=lever,
                    reason=r.reason,
                    trigger=r.trigger,
                    expected_s=r.saved_s,
                    now=now,
                    route_advice=advice,
                )
            )
            if lever == dpb.LEVER_INCIDENT_REROUTING:
                self.incident_routes.setdefault(r.vehicle.id, []).extend([r.vehicle.route, r.route])
            r.vehicle.route = r.route
        return out

    def _overbooked(self) -> set[str]:
        """Vehicles whose promised space others have taken since (drivers without guidance park too):
        the latest promises of a facility with more promises than free spaces go elsewhere."""
        out: set[str] = set()
        promised = self.promised()
        for facility in self.facilities.values():
            excess = promised[facility.id] - max(0, facility.capacity - facility.occupied)
            if excess > 0:
                on_the_way = [
                    r for r in self.reservations.values() if r.facility_id == facility.id and r.arrived is None
                ]
                on_the_way.sort(key=lambda r: r.decided, reverse=True)
                out.update(r.vehicle_id for r in on_the_way[:excess])
        return out

    def _guide(self, fleet: Fleet, writes: Writes, now: datetime) -> list[Taken]:
        """Parking guidance for this fleet's drivers looking for a space: a facility with room for
        each, promised to it, and the route there."""
        waiting = self._needing_guidance(fleet, writes)
        if not waiting:
            return []
        promised = self.promised()
        offers = self._offers(fleet, promised, now)
        cost = self.cost()
        assignments = [
            a
            for a in parking.assign(self.graph, cost, vehicles=waiting, available=offers)
            if (a.vehicle.id, _guidance_cause(a)) not in self.decided
        ]
        routes = replan(
            self.graph,
            cost,
            vehicles=[a.vehicle for a in assignments],
            via=[a.facility.edge_id for a in assignments],
        )
        return [
            self._promise(a, route=route, promised=promised, writes=writes, now=now)
            for a, route in zip(assignments, routes, strict=True)
        ]

    def _needing_guidance(self, fleet: Fleet, writes: Writes) -> list[Vehicle]:
        """The fleet's drivers looking for a space without a promise that still holds; promises that
        no longer hold (full, closed, overbooked, sent elsewhere on arrival) are released."""
        waiting = []
        overbooked = self._overbooked()
        for v in self._routable(fleet):
            if not v.parking:
                continue
            held = self.reservations.get(v.id)
            if (
                held is not None
                and held.facility_id == v.parking_area_id
                and self.facilities[held.facility_id].available
                and v.id not in overbooked
            ):
                continue
            if held is not None:  # full, closed, or the vehicle was sent elsewhere on arrival: guide again
                del self.reservations[v.id]
                writes.released.append(v.id)
            if v.walk_to is None and v.parking_area_id in self.facilities:
                # Destination unknown: the driver's own choice of facility says where it lies.
                chosen = self.facilities[v.parking_area_id]
                v.walk_to = (chosen.latitude, chosen.longitude)
            waiting.append(v)
        for vehicle in overbooked - {v.id for v in waiting}:  # this fleet's, parked or off the road: drop it
            if vehicle in fleet.vehicles and self.reservations.pop(vehicle, None) is not None:
                writes.released.append(vehicle)
        return waiting

    def _offers(self, fleet: Fleet, promised: Counter[str], now: datetime) -> list[parking.Offer]:
        """What each facility can still be promised; only those open when a guided driver gets there
        (within minutes) offer anything."""
        arriving = now + parking.ARRIVAL
        facilities = [f for f in self.facilities.values() if is_open(f.opening_hours, f.time_zone, arriving)]
        return parking.offers(
            facilities,
            promised=promised,
            freeing=self.freeing,
            reserve=int(self.strategy.reserve_spaces),
            inflow=fleet.inflow,
        )

    def _promise(
        self,
        a: parking.Assignment,
        *,
        route: list[str] | None,
        promised: Counter[str],
        writes: Writes,
        now: datetime,
    ) -> Taken:
        """The guidance decision for an assignment, and the space it promises the vehicle."""
        reason = f"{a.facility.id}: {a.drive_s:.0f} s drive + {a.search_s:.0f} s search + {a.walk_s:.0f} s walk"
        free = a.facility.capacity - a.facility.occupied - promised[a.facility.id]
        trigger = {"facility": a.facility.id, "free_spaces": str(free), "promised": str(promised[a.facility.id])}
        guidance = dpb.ParkingGuidance(
            vehicle_id=a.vehicle.id,
            parking_area_id=a.facility.id,
            reason=reason,
            decide_time=to_timestamp(now),
            edges=route or [],
        )
        taken = self._take(
            a.vehicle,
            cause=_guidance_cause(a),
            lever=dpb.LEVER_PARKING_GUIDANCE,
            reason=reason,
            trigger=trigger,
            expected_s=a.expected_s,
            now=now,
            parking_guidance=guidance,
        )
        promised[a.facility.id] += 1
        reservation = Reservation(
            vehicle_id=a.vehicle.id, facility_id=a.facility.id, decided=now, reporter=a.vehicle.fleet
        )
        self.reservations[a.vehicle.id] = reservation
        writes.reservations.append(reservation)
        a.vehicle.parking_area_id = a.facility.id
        if route:
            a.vehicle.route = route
        return taken

    def _take(
        self,
        vehicle: Vehicle,
        *,
        cause: str,
        lever: int,
        reason: str,
        trigger: dict[str, str],
        expected_s: float,
        now: datetime,
        **action: dpb.RouteAdvice | dpb.ParkingGuidance,
    ) -> Taken:
        decision = dpb.Decision(
            name=f"decisions/{uuid.uuid4()}",
            lever=lever,  # type: ignore[arg-type]
            reason=reason,
            trigger=trigger,
            decide_time=to_timestamp(now),
            sim_time_seconds=self.fleets[vehicle.fleet].sim_s,
            expected_seconds=round(expected_s, 1),
            **action,  # type: ignore[arg-type]
        )
        clock = self.fleets[vehicle.fleet].clock_s
        self.decided[(vehicle.id, cause)] = now
        self.last_rerouted[vehicle.id] = clock
        self.per_lever[dpb.Lever.Name(lever)] += 1  # type: ignore[arg-type]
        return Taken(decision=decision, vehicle_id=vehicle.id, cause=cause, clock=clock)


def _guidance_cause(a: parking.Assignment) -> str:
    return f"guidance/{a.facility.id}"
