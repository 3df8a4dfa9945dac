"""A SUMO state of "now" rebuilt from what the services know (the live picture), for a what-if run when
the twin cannot save its own: the scenario from its begin time, vehicles seeded on each detector's
lane at the measured density and speed, the garages filled to their counts, the closures applied.
`picture_from_sumo` reads that picture off a running SUMO, so reconstructions can be measured
against the run they came from."""

from __future__ import annotations

import random
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Iterable, Sequence
from importlib import import_module
from pathlib import Path
from typing import Any

from almere.whatif.v1 import runs_pb2, whatif_pb2

from libs.sumo_tools import sumo_binary
from sim.incidents import ScriptedIncidents
from sim.scenarios.almere_centrum.layout import Facility
from sim.scenarios.registry import RunnableScenario
from sim.whatif.levers import closures_as_incidents

VEHICLE_LENGTH_M = 5.0
JAM_SPACING_M = 7.5  # a car and its gap in a standing queue
HALTED_MPS = 0.5
MAX_INSERT_STEPS = 120


def picture_from_sumo(
    ls: Any,
    *,
    scenario: str,
    facilities: Sequence[Facility],
    interval_s: float = 60.0,
    closures: Iterable[whatif_pb2.Closure] = (),
    adaptive_tls_ids: Iterable[str] = (),
    begin_s: float = 0.0,
) -> runs_pb2.LivePicture:
    """What the services would know now: garage counts and each loop's last interval (as
    sim.observe.publish_detectors reads them), plus the closures and adaptive lights given."""
    picture = runs_pb2.LivePicture(
        scenario=scenario,
        sim_time_seconds=float(ls.simulation.getTime()) - begin_s,
        closures=list(closures),
        adaptive_tls_ids=list(adaptive_tls_ids),
    )
    picture.capture_time.GetCurrentTime()
    for facility in facilities:
        picture.facilities.add(
            facility_id=facility.facility_id,
            occupied=ls.parkingarea.getVehicleCount(facility.facility_id),
            capacity=facility.capacity,
        )
    for loop in ls.inductionloop.getIDList():
        lane = ls.inductionloop.getLaneID(loop)
        edge, index = lane.rsplit("_", 1)
        picture.detectors.add(
            detector_id=loop,
            edge_id=edge,
            lane_index=int(index),
            interval_seconds=interval_s,
            vehicle_count=ls.inductionloop.getLastIntervalVehicleNumber(loop),
            mean_speed_mps=max(0.0, ls.inductionloop.getLastIntervalMeanSpeed(loop)),
            occupancy_percent=ls.inductionloop.getLastIntervalOccupancy(loop),
        )
    return picture


def lane_vehicles(reading: runs_pb2.DetectorReading, lane_length_m: float) -> int:
    """Vehicles on the reading's lane: density = flow / speed; a halted lane's from its occupancy
    (the share of time a car stood on the loop, over a car's length), at most a standing queue."""
    if reading.interval_seconds <= 0:
        return 0
    flow = reading.vehicle_count / reading.interval_seconds  # veh/s
    if reading.mean_speed_mps > HALTED_MPS and flow > 0:
        density = flow / reading.mean_speed_mps
    else:
        density = reading.occupancy_percent / 100.0 / VEHICLE_LENGTH_M
    return min(round(density * lane_length_m), int(lane_length_m // JAM_SPACING_M))


def _scenario_demand(routes: Path) -> tuple[list[list[str]], dict[str, list[float]]]:
    """The route file's routes, and each parking area's stay durations."""
    paths: list[list[str]] = []
    stays: dict[str, list[float]] = defaultdict(list)
    for _, element in ET.iterparse(routes):  # noqa: S314 (the scenario files we built)
        if element.tag == "route" and element.get("edges"):
            paths.append(element.get("edges", "").split())
        elif element.tag == "stop" and element.get("parkingArea"):
            stays[element.get("parkingArea", "")].append(float(element.get("duration", "0")))
    return paths, stays


def routes_file(built: Any) -> Path:
    routes = getattr(built, "routes", None)
    if routes is not None:
        return Path(routes)
    config = ET.parse(built.config).getroot()  # noqa: S314
    value = config.find("input/route-files")
    assert value is not None, "the scenario's config names no route file"
    return Path(built.config).parent / value.get("value", "").split(",")[0]


def state_from_picture(picture: runs_pb2.LivePicture, *, built: RunnableScenario, seed: int, out: Path) -> Path:
    """Start the built scenario at the picture's time (earlier departures are not loaded), seed the
    measured traffic, the parked cars and the closures, and save the state as `out`."""
    start = built.begin_s + picture.sim_time_seconds
    paths, stays = _scenario_demand(routes_file(built))
    rng = random.Random(seed)
    import_module("sumo")  # sets SUMO_HOME before libsumo is imported
    import libsumo as ls

    args = ["-c", str(built.config), "--seed", str(seed), "--begin", f"{start:.0f}", "--no-step-log", "--no-warnings"]
    if additional := built.additional_files("none"):
        args += ["--additional-files", ",".join(str(a) for a in additional)]
    ls.start([sumo_binary("sumo"), *args])
    try:
        ScriptedIncidents(ls, closures_as_incidents(picture.closures, now=start)).step(start)
        _seed_parked(ls, picture, stays, rng)  # first: the moving cars queue behind them otherwise
        _seed_traffic(ls, picture, paths, rng)
        # The seeded vehicles enter the network: SUMO inserts a few per place and step, so step until
        # none waits (bounded: a blocked insertion must not hold the state back).
        for _ in range(MAX_INSERT_STEPS):
            ls.simulationStep()
            if not ls.simulation.getPendingVehicles():
                break
        ls.simulation.saveState(str(out))
    finally:
        ls.close()
    return out


def _seed_traffic(ls: Any, picture: runs_pb2.LivePicture, paths: list[list[str]], rng: random.Random) -> None:
    """Each lane's vehicles spread along it at the measured speed, on a route of the scenario through
    that edge (its rest), else to an edge some route of the scenario ends on."""
    through: dict[str, list[list[str]]] = defaultdict(list)
    for path in paths:
        for i, edge in enumerate(path):
            through[edge].append(path[i:])
    ends = sorted({p[-1] for p in paths})
    for n, (reading, length, count) in enumerate(_lane_estimates(ls, picture.detectors)):
        for k in range(count):
            route = _route_from(ls, reading.edge_id, through, ends, rng)
            if route is None:
                break
            # Named by lane, not by the detector (its id carries the reporter's namespace, with characters
            # a vehicle id may not have).
            vid = f"seeded-{n}-{k}"
            ls.route.add(f"r-{vid}", route)
            ls.vehicle.add(
                vid,
                f"r-{vid}",
                typeID="through",
                depart="now",
                departLane=str(reading.lane_index),
                departPos=f"{length * (k + 0.5) / count:.1f}",
                departSpeed=f"{max(0.0, reading.mean_speed_mps):.1f}",
            )


def _lane_estimates(
    ls: Any, readings: Iterable[runs_pb2.DetectorReading]
) -> list[tuple[runs_pb2.DetectorReading, float, int]]:
    """Per lane, the reading that gives the fewest vehicles, with the lane's length and that count: a
    lane with two loops has one at its stop line (a light's own), where the queue stands, and one
    upstream; the queue's density holds only for its stretch, not for the whole lane."""
    best: dict[tuple[str, int], tuple[runs_pb2.DetectorReading, float, int]] = {}
    for reading in readings:
        key = (reading.edge_id, reading.lane_index)
        length = ls.lane.getLength(f"{reading.edge_id}_{reading.lane_index}")
        count = lane_vehicles(reading, length)
        if key not in best or count < best[key][2]:
            best[key] = (reading, length, count)
    return list(best.values())


def _route_from(
    ls: Any, edge: str, through: dict[str, list[list[str]]], ends: list[str], rng: random.Random
) -> list[str] | None:
    if through.get(edge):
        return rng.choice(through[edge])
    for _ in range(5):
        found = ls.simulation.findRoute(edge, rng.choice(ends)).edges if ends else ()
        if found:
            return list(found)
    return None


def _seed_parked(ls: Any, picture: runs_pb2.LivePicture, stays: dict[str, list[float]], rng: random.Random) -> None:
    """The garages' counts as parked cars, each staying a share of a stay drawn from the scenario."""
    for facility in picture.facilities:
        area = facility.facility_id
        lane = ls.parkingarea.getLaneID(area)
        edge = lane.rsplit("_", 1)[0]
        durations = stays.get(area) or [3600.0]
        for k in range(facility.occupied):
            vid = f"parked-{area}-{k}"
            ls.route.add(f"r-{vid}", [edge])
            # Inserted in the parking area itself (departPos "stop": the first stop's place), parked at once.
            ls.vehicle.add(vid, f"r-{vid}", typeID="visitor", depart="now", departPos="stop")
            stay = rng.choice(durations) * rng.random()
            # At least the insertion's steps: a car counted now is still there when the state is saved.
            ls.vehicle.setParkingAreaStop(vid, area, duration=max(MAX_INSERT_STEPS + 1.0, stay))
