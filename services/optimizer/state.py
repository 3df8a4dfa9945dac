"""The optimizer's live picture: edge travel times (smoothed), incidents acting on edges, facilities
with their counts and promised spaces, and the equipped vehicles as last reported."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np

from libs.geo import WALK_SPEED_MPS, walking_m
from services.common.opening_hours import DEFAULT_TIME_ZONE
from services.optimizer.routing import FloatArray, RoadGraph

KMH = 1 / 3.6
# How long what a vehicle was answered is remembered (in memory and in the table): longer than any
# trip. A vehicle id names one trip (a navigation session), so nothing older can be repeated.
DECISION_MEMORY = timedelta(hours=48)
# Each new measurement moves an edge's planning time this far towards it: a few reports (minutes)
# to follow a jam, while one odd vehicle does not swing every route.
SMOOTHING = 0.3
# Longest travel time an edge is believed to take (a measurement above is a stopped queue, not a time).
MAX_EDGE_SECONDS = 1800.0


@dataclass(kw_only=True)
class Incident:
    id: str
    version: int
    edge_id: str = ""
    active: bool = False
    full_closure: bool = False
    closed_lanes: list[int] = field(default_factory=list)
    speed_limit_kmh: float = 0.0


@dataclass(kw_only=True)
class Facility:
    id: str
    version: int
    capacity: int
    occupied: int = 0
    # Whether the model knows its count: an operator's agreement may keep it from the optimizer (the
    # PARKING stream then carries the occupancy without counts). Unknown is not empty: no guidance.
    counted: bool = True
    available: bool = True
    edge_id: str = ""
    latitude: float = 0.0
    longitude: float = 0.0
    report_time: datetime | None = None
    # Weekly windows ({day_of_week, opens, closes}) in the facility's time zone; none: always open.
    opening_hours: list[dict[str, object]] = field(default_factory=list)
    time_zone: str = DEFAULT_TIME_ZONE
    # Whose the facility is: its occupancy is shown under the operator's agreement (None: not yet
    # known, a facility the model had before it kept operators).
    operator_id: str | None = None

    def walk_s(self, latitude: float, longitude: float) -> float:
        return walking_m(self.latitude, self.longitude, latitude, longitude) / WALK_SPEED_MPS


@dataclass(kw_only=True)
class Reservation:
    vehicle_id: str
    facility_id: str
    decided: datetime
    arrived: datetime | None = None
    reporter: str = ""  # who reports the vehicle: its promise ends when that reporter stops listing it


@dataclass(kw_only=True)
class Vehicle:
    """An equipped vehicle as its navigation system last reported it."""

    id: str
    edge_id: str
    route: list[str]  # from edge_id on
    parking: bool = False  # bound for the centre, looking for a space
    parked_at: str = ""
    parking_area_id: str = ""
    walk_to: tuple[float, float] | None = None  # (lat, lon)
    fleet: str = ""  # who reports it

    @property
    def destination(self) -> str:
        return self.route[-1] if self.route else self.edge_id


class TravelTimes:
    """Per-edge planning times: free flow at first, then smoothed measurements; incidents on top."""

    def __init__(self, graph: RoadGraph) -> None:
        self.graph = graph
        self.smoothed: FloatArray = graph.free_time.copy()

    def observe(self, edge_id: str, seconds: float) -> bool:
        index = self.graph.index.get(edge_id)
        if index is None or not np.isfinite(seconds) or seconds <= 0:
            return False
        measured = min(max(seconds, 0.5 * self.graph.free_time[index]), MAX_EDGE_SECONDS)
        self.smoothed[index] += SMOOTHING * (measured - self.smoothed[index])
        return True

    def observe_speed(self, edge_id: str, speed_mps: float) -> bool:
        index = self.graph.index.get(edge_id)
        if index is None or speed_mps <= 0:
            return False
        return self.observe(edge_id, float(self.graph.length[index]) / speed_mps)

    def incident_time(self, incident: Incident) -> float:
        """What the police report implies for the edge, before any vehicle has measured it: the speed
        limit on the remaining lanes, or free flow spread over fewer lanes. inf: closed."""
        index = self.graph.index[incident.edge_id]
        if incident.full_closure:
            return float("inf")
        length, free = float(self.graph.length[index]), float(self.graph.free_time[index])
        if incident.speed_limit_kmh > 0:
            return max(free, length / (incident.speed_limit_kmh * KMH))
        lanes = float(self.graph.lanes[index])
        open_lanes = max(1.0, lanes - len(incident.closed_lanes))
        return free * lanes / open_lanes

    def cost(self, incidents: list[Incident]) -> FloatArray:
        """The times to plan with now: measurements, and active incidents' edges at least as slow as
        their report says (the head start: the report arrives before any travel time shows it)."""
        out = self.smoothed.copy()
        for incident in incidents:
            if incident.active and incident.edge_id in self.graph.index:
                index = self.graph.index[incident.edge_id]
                out[index] = max(out[index], self.incident_time(incident))
        return out
