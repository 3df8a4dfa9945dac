"""What the twin reads off the running SUMO: WGS84 positions, the city's sample every minute and the
loop detectors' measurements as the street's detector stations would publish them."""

from __future__ import annotations

from typing import Any

from almere.detectors.v1 import detectors_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from contract.bus import DETECTORS, MEASUREMENT, detector_loop_id
from sim.bus_listener import BusListener
from sim.scenarios.almere_centrum.layout import Facility


def geo(sumo: Any, x: float, y: float) -> tuple[float, float]:
    """(lat, lon) of a network position."""
    lon, lat = sumo.simulation.convertGeo(x, y)
    return lat, lon


def facility_locations(sumo: Any, facilities: list[Facility]) -> dict[str, tuple[float, float]]:
    """WGS84 position of each parking area (middle of its lane stretch)."""
    out = {}
    for facility in facilities:
        lane = sumo.parkingarea.getLaneID(facility.facility_id)
        middle = (
            sumo.parkingarea.getStartPos(facility.facility_id) + sumo.parkingarea.getEndPos(facility.facility_id)
        ) / 2
        out[facility.facility_id] = geo(sumo, *sumo.simulation.convert2D(lane.rsplit("_", 1)[0], middle))
    return out


def walk_destinations(sumo: Any, walks: dict[str, str]) -> dict[str, tuple[float, float]]:
    """Where each parker's driver walks to (lat, lon): what a navigation app knows of its user."""
    places = {j: geo(sumo, *sumo.junction.getPosition(j)) for j in set(walks.values())}
    return {vehicle: places[junction] for vehicle, junction in walks.items()}


def sample(sumo: Any, now: float, *, edges: list[str], facilities: list[Facility]) -> dict[str, float]:
    """One row of the run's time series: vehicles, their mean speed, halting vehicles, parked per area."""
    vehicles = sumo.vehicle.getIDList()
    speeds = [sumo.vehicle.getSpeed(v) for v in vehicles if not sumo.vehicle.isStoppedParking(v)]
    row = {
        "time_s": now,
        "vehicles": len(vehicles),
        "mean_speed_mps": sum(speeds) / len(speeds) if speeds else 0.0,  # of vehicles not parked
        "halting": sum(sumo.edge.getLastStepHaltingNumber(e) for e in edges),
    }
    for facility in facilities:
        row[f"parked:{facility.facility_id}"] = sumo.parkingarea.getVehicleCount(facility.facility_id)
    return row


def detector_stations(sumo: Any, loops: list[str]) -> dict[str, tuple[str, str, int]]:
    """Each loop's subject, edge and lane index: fixed for the run, so read once, not every minute."""
    stations = {}
    for loop in loops:
        edge, index = sumo.inductionloop.getLaneID(loop).rsplit("_", 1)
        stations[loop] = (DETECTORS.subject(MEASUREMENT, detector_loop_id(loop)), edge, int(index))
    return stations


def publish_detectors(
    sumo: Any, bus: BusListener, stations: dict[str, tuple[str, str, int]], *, interval_s: float
) -> None:
    """The loop detectors' last interval, as the street's detector stations would send it."""
    start, end = Timestamp(), Timestamp()
    end.GetCurrentTime()
    start.FromNanoseconds(end.ToNanoseconds() - int(interval_s * 1e9))
    loops = sumo.inductionloop
    messages = [
        (
            subject,
            detectors_pb2.Measurement(
                detector_id=loop,
                edge_id=edge,
                lane_index=index,
                interval_start=start,
                interval_end=end,
                vehicle_count=loops.getLastIntervalVehicleNumber(loop),
                mean_speed_mps=loops.getLastIntervalMeanSpeed(loop),
                occupancy_percent=loops.getLastIntervalOccupancy(loop),
            ).SerializeToString(),
        )
        for loop, (subject, edge, index) in stations.items()
    ]
    bus.publish(messages)
