"""A response plan's levers on a running SUMO (the optimizer's strategy is the caller's: it lives in
the services): closures as scripted incidents, lights fixed or adaptive, a planned event moved or
cancelled."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from almere.whatif.v1 import whatif_pb2

from libs.signal_control import layout
from libs.signal_control.controller import PressureActuated
from sim.light_driver import DirectControl
from sim.variants import WALKING_PACE, ScriptedIncident

EVENT_TYPE = "event"  # the twin's event demand: its visitors' vehicle type
ACTUATED_PROGRAM = "actuated"  # the scenarios' actuated copies of the fixed programs


def closures_as_incidents(closures: Iterable[whatif_pb2.Closure], *, now: float) -> tuple[ScriptedIncident, ...]:
    """Closures starting now, each until its expected end (none given: past any horizon)."""
    return tuple(
        ScriptedIncident(
            edge=c.edge_id,
            start_s=now,
            end_s=now + c.expected_end_seconds if c.expected_end_seconds > 0 else math.inf,
            closed_lanes=tuple(c.closed_lanes),
            full_closure=c.full_closure,
            title=c.incident or f"closure of {c.edge_id}",
            speed_limit_mps=c.speed_limit_kmh / 3.6 if c.speed_limit_kmh > 0 else WALKING_PACE,
        )
        for c in closures
    )


def adaptive_lights(ls: Any, *, adaptive_now: Iterable[str], areas: Sequence[whatif_pb2.SignalArea]) -> set[str]:
    """The lights adaptive under the plan: those adaptive now, changed area by area (an area without
    ids is every light); the lights an area fixes go back to their fixed program at once."""
    every = set(ls.trafficlight.getIDList())
    adaptive = set(adaptive_now) & every
    for area in areas:
        chosen = set(area.sumo_tls_ids) & every if area.sumo_tls_ids else every
        if area.control == whatif_pb2.SIGNAL_CONTROL_ADAPTIVE:
            adaptive |= chosen
        else:
            adaptive -= chosen
            for tls in sorted(chosen):
                ls.trafficlight.setProgram(tls, _fixed_program(ls, tls))
    return adaptive


def adaptive_control(network: Path, tls_ids: Iterable[str]) -> DirectControl:
    """The optimizer's adaptive policy (pressure-actuated) in this process for the given lights."""
    return DirectControl(PressureActuated(i) for i in layout.intersections(network, tls_ids=sorted(tls_ids)))


def _fixed_program(ls: Any, tls: str) -> str:
    programs: list[str] = [logic.programID for logic in ls.trafficlight.getAllProgramLogics(tls)]
    return next((p for p in programs if p not in (ACTUATED_PROGRAM, "online")), programs[0])


@dataclass(frozen=True, kw_only=True)
class EventTrip:
    vehicle_id: str
    depart_s: float
    edges: tuple[str, ...]  # a route, or a trip's from and to
    parking_area: str
    park_s: float


def event_trips(routes: Path) -> list[EventTrip]:
    """The event-goers' trips in a scenario's route file."""
    trips = []
    for _, element in ET.iterparse(routes):  # noqa: S314 (the scenario files we built)
        if element.tag not in ("trip", "vehicle") or element.get("type") != EVENT_TYPE:
            continue
        route = element.find("route")
        edges = route.get("edges", "").split() if route is not None else [element.get("from"), element.get("to")]
        stop = element.find("stop")
        trips.append(
            EventTrip(
                vehicle_id=element.get("id", ""),
                depart_s=float(element.get("depart", "0")),
                edges=tuple(e for e in edges if e),
                parking_area=stop.get("parkingArea", "") if stop is not None else "",
                park_s=float(stop.get("duration", "0")) if stop is not None else 0.0,
            )
        )
    return trips


class EventChanges:
    """The planned event moved (its visitors leave `shift` later, or earlier) or cancelled: each of its
    scheduled vehicles is taken off as it departs, and a moved one set off again at its new time."""

    def __init__(self, ls: Any, trips: Sequence[EventTrip], *, now: float, shift_s: float, cancel: bool) -> None:
        self._ls = ls
        self._removed = 0
        self._planned = {t.vehicle_id for t in trips if t.depart_s > now}
        later = [] if cancel else [t for t in trips if t.depart_s + shift_s > now]
        self._later = sorted(later, key=lambda t: t.depart_s)
        self._shift_s = shift_s

    @classmethod
    def of_plan(cls, ls: Any, plan: whatif_pb2.ResponsePlan, *, routes: Path, now: float) -> EventChanges | None:
        if not plan.events:
            return None
        change = plan.events[0]  # a twin has one event (validation allows one change per event)
        return cls(ls, event_trips(routes), now=now, shift_s=change.shift_minutes * 60, cancel=change.cancel)

    @property
    def removed(self) -> int:
        return self._removed

    def step(self, now: float) -> list[str]:
        """After a step: the vehicles taken off (they did not really travel)."""
        removed = [vid for vid in self._ls.simulation.getDepartedIDList() if vid in self._planned]
        for vid in removed:
            self._ls.vehicle.remove(vid)
        self._removed += len(removed)
        while self._later and self._later[0].depart_s + self._shift_s <= now + 1:
            self._set_off(self._later.pop(0))
        return removed

    def _set_off(self, trip: EventTrip) -> None:
        ls, vid = self._ls, f"{trip.vehicle_id}-moved"
        edges = list(trip.edges)
        if len(edges) == 2 and edges[0] != edges[1]:  # a trip: its route as SUMO would find it
            edges = list(ls.simulation.findRoute(edges[0], edges[1]).edges) or edges
        ls.route.add(f"r-{vid}", edges)
        ls.vehicle.add(vid, f"r-{vid}", typeID=EVENT_TYPE, depart="now", departLane="best")
        if trip.parking_area:
            ls.vehicle.setParkingAreaStop(vid, trip.parking_area, duration=trip.park_s)
