"""The KPIs of a what-if horizon, measured while SUMO steps (the twin's observed window and every run
use this same class, so a forecast and what the city did are comparable):

* arrived: trips that ended in the window;
* network_delay_h: time lost by every vehicle in the window against driving at its allowed speed
  (SUMO's timeLoss, sampled), plus the time vehicles waited to enter the network;
* through_travel_time_s: mean trip time of through traffic on the road in the window (trips still
  running at its end count with their time so far);
* visitor_door_to_door_s: visitors' and event-goers' drive and search until parked, plus the walk from
  the garage to where they go (those still looking at the end count with their time so far);
* incident_queue_veh: mean vehicles on the incident edges (crawling past it or standing) plus those
  halting on the edges leading into them;
* emergency_access_s: mean time an emergency vehicle would need now from its stations to the incident
  (along the free-flow fastest route, each edge at its fastest lane's current mean speed: responders
  use the closed lane and pass on the free one). Without an incident in force it is left out.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from libs.geo import WALK_SPEED_MPS, walking_m
from sim.observe import facility_locations
from sim.scenarios.almere_centrum.layout import Facility
from sim.variants import Responder

SAMPLE_S = 10.0
OCCUPANCY_S = 60.0
THROUGH = ("through",)
VISITORS = ("visitor", "event")
EMERGENCY_TYPE = "whatif-emergency"
MIN_SPEED_MPS = 1.0  # a standing queue still moves: an edge's time is capped at its length over this
STATIONS = 4  # entry edges an emergency vehicle may come from when the scenario names no responders

LatLon = tuple[float, float]


@dataclass(kw_only=True)
class WindowKpis:
    """Stepped after each SUMO step from start_s until start_s + horizon_s; `result()` at the end."""

    ls: Any
    start_s: float
    horizon_s: float
    watched_edges: Sequence[str]
    facilities: Sequence[Facility]
    responders: Sequence[Responder] = ()
    walks: Mapping[str, LatLon] = field(default_factory=dict)  # {visitor: where their driver walks to}
    done: bool = False
    _departs: dict[str, float] = field(default_factory=dict)
    _loss_at_start: dict[str, float] = field(default_factory=dict)
    _loss: dict[str, float] = field(default_factory=dict)
    _through_s: list[float] = field(default_factory=list)
    _visitor_s: list[float] = field(default_factory=list)
    _searching: set[str] = field(default_factory=set)
    _ignored: set[str] = field(default_factory=set)
    _arrived: int = 0
    _waiting_s: float = 0.0
    _queue: list[int] = field(default_factory=list)
    _access: list[float] = field(default_factory=list)
    _occupancy: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    def __post_init__(self) -> None:
        ls = self.ls
        self._places = facility_locations(ls, list(self.facilities))
        for vid in ls.vehicle.getIDList():
            self._loss_at_start[vid] = self._loss[vid] = ls.vehicle.getTimeLoss(vid)
            if ls.vehicle.isStoppedParking(vid):
                continue  # parked before the window: their trip is over
            self._departs[vid] = ls.vehicle.getDeparture(vid)
            if vid.startswith(VISITORS):
                self._searching.add(vid)
        self._upstream = _upstream(ls, self.watched_edges)
        self._routes = _access_routes(ls, self.watched_edges, self.responders)
        self._next_sample = self.start_s + SAMPLE_S
        self._next_count = self.start_s

    @property
    def end_s(self) -> float:
        return self.start_s + self.horizon_s

    def step(self, now: float) -> None:
        if self.done:
            return
        ls = self.ls
        for vid in ls.simulation.getDepartedIDList():
            self._departs[vid] = now
            if vid.startswith(VISITORS):
                self._searching.add(vid)
        for vid in ls.simulation.getArrivedIDList():
            if vid in self._ignored:
                continue
            self._arrived += 1
            depart = self._departs.pop(vid, None)
            if depart is not None and vid.startswith(THROUGH):
                self._through_s.append(now - depart)
            self._searching.discard(vid)
        for vid in ls.simulation.getParkingStartingVehiclesIDList():
            if vid in self._searching:
                self._parked(vid, now)
        if now >= self._next_count:
            self._count()
            self._next_count += OCCUPANCY_S
        if now >= self._next_sample:
            self._sample()
            self._next_sample += SAMPLE_S
        if now >= self.end_s:
            self._sample()
            self.done = True

    def forget(self, vehicle_ids: Iterable[str]) -> None:
        """Vehicles taken off the road by a lever (a cancelled event's): not trips of the window."""
        for vid in vehicle_ids:
            self._departs.pop(vid, None)
            self._searching.discard(vid)
            self._ignored.add(vid)

    def _parked(self, vid: str, now: float) -> None:
        self._searching.discard(vid)
        stops = self.ls.vehicle.getStops(vid, 1)
        area = stops[0].stoppingPlaceID if stops else ""
        walk_s = 0.0
        if area in self._places and vid in self.walks:
            walk_s = walking_m(*self._places[area], *self.walks[vid]) / WALK_SPEED_MPS
        self._visitor_s.append(now - self._departs.get(vid, now) + walk_s)

    def _count(self) -> None:
        for facility in self.facilities:
            self._occupancy[facility.facility_id].append(self.ls.parkingarea.getVehicleCount(facility.facility_id))

    def _sample(self) -> None:
        ls = self.ls
        for vid in ls.vehicle.getIDList():
            self._loss[vid] = ls.vehicle.getTimeLoss(vid)
        self._waiting_s += len(ls.simulation.getPendingVehicles()) * SAMPLE_S
        if self.watched_edges:
            on = sum(ls.edge.getLastStepVehicleNumber(e) for e in self.watched_edges)
            self._queue.append(on + sum(ls.edge.getLastStepHaltingNumber(e) for e in self._upstream))
        if self._routes:
            times = [_route_time(ls, route) for route in self._routes]
            self._access.append(sum(times) / len(times))

    def result(self) -> dict[str, float]:
        """The window's KPIs (unfinished trips at their time so far)."""
        end = self.end_s
        delay_s = sum(loss - self._loss_at_start.get(vid, 0.0) for vid, loss in self._loss.items())
        through = self._through_s + [end - d for v, d in self._departs.items() if v.startswith(THROUGH)]
        visitors = self._visitor_s + [end - self._departs.get(v, end) for v in self._searching]
        out = {
            "arrived": float(self._arrived),
            "network_delay_h": (delay_s + self._waiting_s) / 3600.0,
            "through_travel_time_s": _mean(through),
            "visitor_door_to_door_s": _mean(visitors),
        }
        if self.watched_edges:
            out["incident_queue_veh"] = _mean(self._queue)
        if self._access:
            out["emergency_access_s"] = _mean(self._access)
        return out

    def occupancy(self) -> dict[str, list[float]]:
        """Each facility's parked count, one value a minute from the window's start."""
        return dict(self._occupancy)


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else 0.0


def _upstream(ls: Any, edges: Iterable[str]) -> list[str]:
    """The edges leading into these (where a queue behind an incident stands)."""
    out: set[str] = set()
    for edge in edges:
        start, end = ls.edge.getFromJunction(edge), ls.edge.getToJunction(edge)
        out.update(
            e
            for e in ls.junction.getIncomingEdges(start)
            if not e.startswith(":") and ls.edge.getFromJunction(e) != end  # not the way back
        )
    return sorted(out - set(edges))


def _access_routes(ls: Any, targets: Sequence[str], responders: Sequence[Responder]) -> list[list[str]]:
    """Free-flow fastest routes from the responders' origins (else the network's first entry edges)
    to each incident edge."""
    if not targets:
        return []
    origins = sorted({r.from_edge for r in responders}) or _entry_edges(ls)[:STATIONS]
    if EMERGENCY_TYPE not in ls.vehicletype.getIDList():  # routes over closed lanes, as responders may
        ls.vehicletype.copy("DEFAULT_VEHTYPE", EMERGENCY_TYPE)
        ls.vehicletype.setVehicleClass(EMERGENCY_TYPE, "emergency")
    routes = []
    for origin in origins:
        for target in targets:
            found = ls.simulation.findRoute(origin, target, vType=EMERGENCY_TYPE)
            if found.edges:
                routes.append(list(found.edges))
    return routes


def _entry_edges(ls: Any) -> list[str]:
    """Edges traffic enters the network by: their start junction has no other way in."""
    entries = []
    for edge in sorted(ls.edge.getIDList()):
        if edge.startswith(":"):
            continue
        start = ls.edge.getFromJunction(edge)
        incoming = [e for e in ls.junction.getIncomingEdges(start) if not e.startswith(":")]
        if all(ls.edge.getFromJunction(e) == ls.edge.getToJunction(edge) for e in incoming):
            entries.append(edge)
    return entries


def _route_time(ls: Any, route: Sequence[str]) -> float:
    total = 0.0
    for edge in route:
        lanes = ls.edge.getLaneNumber(edge)
        speed = max(ls.lane.getLastStepMeanSpeed(f"{edge}_{i}") for i in range(lanes))
        total += ls.lane.getLength(f"{edge}_0") / max(speed, MIN_SPEED_MPS)
    return total
