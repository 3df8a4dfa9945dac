"""Admission of the optimizer's calls: which roles may call what (the rules on OptimizerApi's
methods), and what a vehicle report or a travel-time question must look like (checked before
anything changes, so a bad request changes nothing)."""

from __future__ import annotations

import math
import re

from almere.optimizer.v1 import optimizer_pb2 as pb

from services.common.access import ANY_CALLER
from services.common.auth import PUBLIC_SAFETY, Role
from services.common.errors import InvalidArgument
from services.optimizer.routing import RoadGraph

READERS = frozenset({Role.ENGINEER, Role.OPTIMIZER, *PUBLIC_SAFETY})
# A navigation device needs the strategy's equipped share; the twin reads nothing else.
STRATEGY_READERS = frozenset({*READERS, Role.SIM})
STRATEGISTS = frozenset({Role.ENGINEER})
# The twin's navigation systems and lane counts, or a navigation backend.
REPORTERS = frozenset({Role.SIM, Role.OPTIMIZER})
# Every caller: travel times are what a navigation app shows anyone; and the parking service, which
# asks with its own token on behalf of whoever asked it for a facility (garage apps included).
TRAVEL_TIME_ASKERS = frozenset({*ANY_CALLER, Role.SERVICE})
MAX_VEHICLES = 20_000
MAX_ROUTE_EDGES = 2_000
MAX_DESTINATIONS = 1_000
# One shortest-path search each: bounded so one call cannot hold the optimizer.
MAX_DISTINCT_DESTINATIONS = 200
# Vehicle ids become NATS subject tokens (almere.optimizer.v1.route_advice.<id>).
VEHICLE_ID = re.compile(r"^[A-Za-z0-9_:\-]{1,128}$")


def check_edge(graph: RoadGraph, edge: str, where: str) -> None:
    if edge not in graph.index:
        raise InvalidArgument(f"{where}: unknown edge {edge[:128]!r} (not a road of the optimizer's network)")


def validate_report(graph: RoadGraph, request: pb.ReportVehiclesRequest) -> None:
    if len(request.vehicles) > MAX_VEHICLES:
        raise InvalidArgument(f"at most {MAX_VEHICLES} vehicles per report")
    if not (math.isfinite(request.sim_time_seconds) and request.sim_time_seconds >= 0):
        raise InvalidArgument("sim_time_seconds must be a finite number >= 0")
    seen: set[str] = set()
    known = graph.index
    for n, v in enumerate(request.vehicles):
        where = f"vehicles[{n}]"
        if not VEHICLE_ID.match(v.vehicle_id):
            raise InvalidArgument(f"{where}.vehicle_id must be 1-128 of A-Z a-z 0-9 _ : -")
        if v.vehicle_id in seen:
            raise InvalidArgument(f"{where}: vehicle {v.vehicle_id} is listed twice")
        seen.add(v.vehicle_id)
        check_edge(graph, v.edge_id, f"{where}.edge_id")
        if len(v.route) > MAX_ROUTE_EDGES:
            raise InvalidArgument(f"{where}.route has more than {MAX_ROUTE_EDGES} edges")
        if v.route and v.route[0] != v.edge_id:
            raise InvalidArgument(f"{where}.route must start with the vehicle's edge_id")
        if not known.keys() >= set(v.route):  # checked as a set: ~500 vehicles of ~20 edges each round
            for edge in v.route:
                check_edge(graph, edge, f"{where}.route")
        if v.HasField("walk_destination") and not (
            -90 <= v.walk_destination.latitude <= 90 and -180 <= v.walk_destination.longitude <= 180
        ):
            raise InvalidArgument(f"{where}.walk_destination is not a WGS84 position")
    for n, t in enumerate(request.edge_travel_times):
        check_edge(graph, t.edge_id, f"edge_travel_times[{n}].edge_id")
        if not (math.isfinite(t.travel_time_seconds) and t.travel_time_seconds > 0):
            raise InvalidArgument(f"edge_travel_times[{n}].travel_time_seconds must be a finite number > 0")


def validate_travel_times(graph: RoadGraph, request: pb.ComputeTravelTimesRequest) -> None:
    """The origin must be a road of the network; a destination that is not is answered -1 (a
    facility's entrance registered on a road the network lacks spoils no one else's answer)."""
    check_edge(graph, request.origin_edge_id, "origin_edge_id")
    if not 1 <= len(request.destination_edge_ids) <= MAX_DESTINATIONS:
        raise InvalidArgument(f"give 1 to {MAX_DESTINATIONS} destination_edge_ids")
    if len(set(request.destination_edge_ids)) > MAX_DISTINCT_DESTINATIONS:
        raise InvalidArgument(f"at most {MAX_DISTINCT_DESTINATIONS} distinct destination_edge_ids")
