"""The equipped vehicles' navigation systems, as the twin plays them: every decision interval they
report where they are, where they go and what they measured to the optimizer (ReportVehicles), and
receive its decisions. Which vehicles are equipped is a fixed draw per vehicle and seed; mode sumo
gives the same vehicles SUMO's rerouting device instead."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from almere.optimizer.v1 import decisions_pb2
from almere.optimizer.v1 import optimizer_pb2 as pb
from almere.type.v1 import geo_pb2

# The optimizer's ReportVehicles: the gRPC stub's method, or an in-process optimizer's for batch runs.
ReportVehicles = Callable[..., pb.ReportVehiclesResponse]


def equipped(seed: int, vehicle: str, share: float) -> bool:
    """Whether a vehicle has route guidance: a fixed draw per seed and vehicle, so every mode equips
    the same vehicles (SUMO's rerouting device in mode sumo, a navigation system in coordinated)."""
    return random.Random(f"{seed}:{vehicle}").random() < share


class ReroutingDevices:
    """Mode sumo: SUMO's rerouting device on the same vehicles coordinated mode gives a navigation
    system (`equipped`'s draw), so the two modes compare the same drivers."""

    def __init__(self, sumo: Any, seed: int, share: float) -> None:
        self._sumo, self._seed, self._share = sumo, seed, share
        self.equipped = 0

    def step(self) -> None:
        """After each step: equip the vehicles that have just departed."""
        for vehicle in self._sumo.simulation.getDepartedIDList():
            if equipped(self._seed, vehicle, self._share):
                self._sumo.vehicle.setParameter(vehicle, "has.rerouting.device", "true")
                self.equipped += 1


class Navigation:
    def __init__(
        self,
        *,
        report_vehicles: ReportVehicles,
        metadata: tuple[tuple[str, str], ...],
        equipped: float,
        seed: int,
        prefix: str,
        walks: dict[str, tuple[float, float]],
        areas: set[str],
    ) -> None:
        """`prefix`: prepended to SUMO ids so the optimizer sees ids unique across runs; `walks`: where
        each parker's driver walks to (lat, lon), as a navigation app knows its user's destination."""
        self._report_vehicles = report_vehicles
        self._metadata = metadata
        self.share = equipped
        self._seed = seed
        self.prefix = prefix
        self._walks = walks
        self._areas = areas
        self._draws: dict[str, bool] = {}
        self.reports = 0
        self.vehicles_reported = 0

    def is_equipped(self, vehicle: str) -> bool:
        draw = self._draws.get(vehicle)
        if draw is None:
            draw = self._draws[vehicle] = equipped(self._seed, vehicle, self.share)
        return draw

    def _state(self, sumo: Any, vehicle: str) -> pb.VehicleState:
        route = sumo.vehicle.getRoute(vehicle)
        index = max(0, sumo.vehicle.getRouteIndex(vehicle))
        state = pb.VehicleState(vehicle_id=self.prefix + vehicle, edge_id=route[index], route=route[index:])
        stops = sumo.vehicle.getStops(vehicle, 1)
        area = stops[0].stoppingPlaceID if stops else ""
        if area not in self._areas:
            state.purpose = pb.VEHICLE_PURPOSE_THROUGH
        elif sumo.vehicle.isStoppedParking(vehicle):
            state.purpose, state.parked_at = pb.VEHICLE_PURPOSE_PARKED, area
        else:
            state.purpose, state.parking_area_id = pb.VEHICLE_PURPOSE_PARKING, area
            walk = self._walks.get(vehicle)
            if walk:
                state.walk_destination.CopyFrom(geo_pb2.LatLng(latitude=walk[0], longitude=walk[1]))
        return state

    def report(self, sumo: Any, sim_s: float, edges: list[str]) -> list[decisions_pb2.Decision]:
        """One decision round: the equipped vehicles on the road and every edge's current travel time."""
        vehicles = [self._state(sumo, v) for v in sumo.vehicle.getIDList() if self.is_equipped(v)]
        times = [pb.EdgeTravelTime(edge_id=e, travel_time_seconds=max(0.1, sumo.edge.getTraveltime(e))) for e in edges]
        request = pb.ReportVehiclesRequest(vehicles=vehicles, edge_travel_times=times, sim_time_seconds=sim_s)
        request.observe_time.GetCurrentTime()
        reply = self._report_vehicles(request, metadata=self._metadata, timeout=30)
        self.reports += 1
        self.vehicles_reported += len(vehicles)
        return list(reply.decisions)
