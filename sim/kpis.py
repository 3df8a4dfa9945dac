"""KPIs of a run from SUMO's outputs (tripinfo, stops, statistics). Unfinished and never-departed
vehicles are counted, not dropped."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from libs.geo import WALK_SPEED_MPS, walking_m

SEARCH_LIMIT_S = 300  # visitors taking longer than 5 minutes from arrival in town to a space

LatLon = tuple[float, float]


def door_to_door(
    stops: ET.Element,
    *,
    departs: dict[str, float],
    walks: dict[str, str],
    facilities: dict[str, LatLon],
    junctions: dict[str, LatLon],
    horizon_s: float,
) -> dict[str, Any]:
    """What a visitor lives through: drive + search + walk from where they parked to where they go.
    Visitors still looking when the run ends count with their time so far (and in never_parked)."""
    parked = {s.get("id"): s for s in stops.iter("stopinfo") if _parked(s) and s.get("id") in walks}
    walks_m, total_s, never = [], [], 0
    for vid, depart in departs.items():
        if vid not in walks:
            continue
        stop = parked.get(vid)
        if stop is None:
            never += 1
            total_s.append(horizon_s - depart)
            continue
        metres = walking_m(*facilities[stop.get("parkingArea", "")], *junctions[walks[vid]])
        walks_m.append(metres)
        total_s.append(float(stop.get("started", 0)) - depart + metres / WALK_SPEED_MPS)
    return {"door_to_door_s": _stats(total_s), "walk_m": _stats(walks_m), "never_parked": never}


def _parked(stop: ET.Element) -> bool:
    """A parking stop that really began (unfinished ones of cars still waiting say started="-0.00")."""
    return bool(stop.get("parkingArea")) and float(stop.get("started", "-1")) > 0


def _stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "p95": None}
    array = np.asarray(values)
    return {"mean": round(float(array.mean()), 2), "p95": round(float(np.percentile(array, 95)), 2)}


def parking_search(
    vehroutes: Path, *, zone: set[str], lengths: dict[str, float], area_edges: dict[str, str]
) -> dict[str, Any]:
    """For visitors: time and distance from entering the destination zone (the centre) to parked,
    along the route they really drove (SUMO's last route, with exit times)."""
    seconds, metres = [], []
    for vehicle in ET.parse(vehroutes).getroot().iter("vehicle"):  # noqa: S314
        if not vehicle.get("id", "").startswith(("visitor", "event")):
            continue
        route, stop = vehicle.find("route"), vehicle.find("stop")
        if route is None or stop is None or not _parked(stop):
            continue
        edges = route.get("edges", "").split()
        exits = [float(t) for t in route.get("exitTimes", "").split()]
        first = next((i for i, e in enumerate(edges) if e in zone), None)
        if first is None:
            continue
        entered = exits[first - 1] if first > 0 else float(vehicle.get("depart", 0))
        started, area_edge = float(stop.get("started", 0)), area_edges.get(stop.get("parkingArea", ""))
        parked_on = next(
            (
                i
                for i, (e, t) in enumerate(zip(edges, exits, strict=False))
                if e == area_edge and (t < 0 or t >= started)
            ),
            len(edges) - 1,
        )
        seconds.append(float(stop.get("started", 0)) - entered)
        metres.append(sum(lengths.get(e, 0.0) for e in edges[first : parked_on + 1]))
    return {"parking_search_s": _stats(seconds), "parking_search_m": _stats(metres)}


def travel_time(info: ET.Element) -> float:
    """Time on the road: a trip's duration without the time parked."""
    return float(info.get("duration", 0)) - float(info.get("stopTime", 0))


def delay(info: ET.Element) -> float:
    """RESCO's delay of one vehicle: time lost driving plus time waiting to be inserted."""
    return float(info.get("timeLoss", 0)) + float(info.get("departDelay", 0))


def compute(
    *,
    tripinfo: Path,
    stops: Path,
    statistics: Path,
    scheduled: int,
    horizon_s: float,
    met_incident: set[str],
    walks: dict[str, str],
    facilities: dict[str, LatLon],
    junctions: dict[str, LatLon],
    search: dict[str, Any] | None = None,
    responders: frozenset[str] = frozenset(),
    is_equipped: Callable[[str], bool] = lambda vehicle: False,
) -> dict[str, Any]:
    trips = ET.parse(tripinfo).getroot()  # noqa: S314
    every = trips.findall("tripinfo")  # with undeparted vehicles (depart -1)
    infos = [i for i in every if float(i.get("depart", "-1")) >= 0]
    finished = [i for i in infos if float(i.get("arrival", "-1")) >= 0]
    departs = {i.get("id", ""): float(i.get("depart", 0)) for i in infos}
    stop_root = ET.parse(stops).getroot()  # noqa: S314
    parkers = [v for v in departs if v.startswith(("visitor", "event"))]
    started = {s.get("id", ""): float(s.get("started", 0)) for s in stop_root.iter("stopinfo") if _parked(s)}
    to_park = [started[v] - departs[v] for v in parkers if v in started]
    # Visitors still looking at the end have been looking since they left: count them too.
    searching = [horizon_s - departs[v] for v in parkers if v not in started]
    teleports = ET.parse(statistics).getroot().find("teleports")  # noqa: S314
    return {
        "vehicles_scheduled": scheduled,
        "vehicles_departed": len(infos),
        "vehicles_finished": len(finished),
        "vehicles_unfinished": len(infos) - len(finished),
        "never_departed": max(0, scheduled - len(infos)),
        # Time on the road of every departed vehicle (unfinished ones up to the end of the run).
        "travel_time_s": _stats([travel_time(i) for i in infos]),
        # RESCO's delay: timeLoss + departDelay over every vehicle, never-inserted ones included.
        "delay_s": _stats([delay(i) for i in every]),
        "waiting_time_s": _stats([float(i.get("waitingTime", 0)) for i in infos]),
        "visitor_time_to_park_s": _stats(to_park),
        "visitors_parked": len(to_park),
        "visitors_over_5_min_to_park": sum(t > SEARCH_LIMIT_S for t in [*to_park, *searching]),
        "incident_vehicles": len(met_incident),
        "incident_vehicles_delay_s": _stats([delay(i) for i in infos if i.get("id") in met_incident]),
        # The same for the equipped ones alone: what route guidance itself did for them.
        "incident_equipped_delay_s": _stats(
            [delay(i) for i in infos if i.get("id") in met_incident and is_equipped(i.get("id", ""))]
        ),
        # Ambulances and the like: dispatch to the scene (still on the way at the end: so far).
        "responder_travel_time_s": _stats([travel_time(i) for i in infos if i.get("id") in responders]),
        "co2_kg": round(sum(float(e.get("CO2_abs", 0)) for e in trips.iter("emissions")) / 1e6, 1),
        **door_to_door(
            stop_root, departs=departs, walks=walks, facilities=facilities, junctions=junctions, horizon_s=horizon_s
        ),
        **(search or {}),
        "throughput_per_hour": round(len(finished) / (horizon_s / 3600), 1),
        "teleports": int(teleports.get("total", 0)) if teleports is not None else 0,
    }


def flatten(result: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"delay_s": {"mean": 1}} -> {"delay_s.mean": 1}, for CSV and report tables."""
    flat: dict[str, Any] = {}
    for key, value in result.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
