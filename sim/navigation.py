"""The equipped vehicles' navigation systems, as the twin plays them: every decision interval they
report where they are, where they go and what they measured to the optimizer (ReportVehicles), and
receive its decisions. Which vehicles are equipped is a fixed draw per vehicle and seed; mode sumo
gives the same vehicles SUMO's rerouting device instead."""

from __future__ import annotations

import random
from collections.abc import Callable
from concurrent.futures import Executor, Future
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
        in_background: Executor | None = None,
        metadata: tuple[tuple[str, str], ...],
        equipped: float,
        seed: int,
        prefix: str,
        walks: dict[str, tuple[float, float]],
        areas: set[str],
    ) -> None:
        """`in_background`: where a round is sent from, so the twin can step on meanwhile (None: sent
        and answered before `send` returns, as an in-process optimizer does); `prefix`: prepended to
        SUMO ids so the optimizer sees ids unique across runs; `walks`: where each parker's driver
        walks to (lat, lon), as a navigation app knows its user's destination."""
        self._report_vehicles = report_vehicles
        self._in_background = in_background
        self._metadata = metadata
        self.share = equipped
        self._seed = seed
        self.prefix = prefix
        self._walks = walks
        self._areas = areas
        self._draws: dict[str, bool] = {}
        # Parked vehicles' last states by (route, route index): most equipped vehicles on the map are
        # parked, and their state stands until they leave (no protobuf built for them every round).
        self._parked: dict[str, tuple[tuple[tuple[str, ...], int], pb.VehicleState]] = {}
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
        parked = sumo.vehicle.isStoppedParking(vehicle)
        if parked:
            known = self._parked.get(vehicle)
            if known is not None and known[0] == (route, index):
                return known[1]
        state = pb.VehicleState(vehicle_id=self.prefix + vehicle, edge_id=route[index], route=route[index:])
        stops = sumo.vehicle.getStops(vehicle, 1)
        area = stops[0].stoppingPlaceID if stops else ""
        if area not in self._areas:
            state.purpose = pb.VEHICLE_PURPOSE_THROUGH
        elif parked:
            state.purpose, state.parked_at = pb.VEHICLE_PURPOSE_PARKED, area
        else:
            state.purpose, state.parking_area_id = pb.VEHICLE_PURPOSE_PARKING, area
            walk = self._walks.get(vehicle)
            if walk:
                state.walk_destination.CopyFrom(geo_pb2.LatLng(latitude=walk[0], longitude=walk[1]))
        if parked:
            self._parked[vehicle] = ((route, index), state)
        else:
            self._parked.pop(vehicle, None)
        return state

    def _equipped_on_road(self, sumo: Any) -> list[str]:
        """The equipped vehicles in the simulation (each vehicle's draw made once)."""
        present, draws = sumo.vehicle.getIDList(), self._draws
        for vehicle in present:
            if vehicle not in draws:
                self.is_equipped(vehicle)
        return [v for v in present if draws[v]]

    def send(self, sumo: Any, sim_s: float, edges: list[str]) -> Future[pb.ReportVehiclesResponse]:
        """One decision round: the equipped vehicles on the road and every edge's current travel time,
        read now and sent without waiting for the answer."""
        vehicles = [self._state(sumo, v) for v in self._equipped_on_road(sumo)]
        times = [pb.EdgeTravelTime(edge_id=e, travel_time_seconds=max(0.1, sumo.edge.getTraveltime(e))) for e in edges]
        request = pb.ReportVehiclesRequest(vehicles=vehicles, edge_travel_times=times, sim_time_seconds=sim_s)
        request.observe_time.GetCurrentTime()
        self.reports += 1
        self.vehicles_reported += len(vehicles)
        if self._in_background is not None:
            return self._in_background.submit(self._report_vehicles, request, metadata=self._metadata, timeout=30)
        answered: Future[pb.ReportVehiclesResponse] = Future()
        answered.set_result(self._report_vehicles(request, metadata=self._metadata, timeout=30))
        return answered

    def report(self, sumo: Any, sim_s: float, edges: list[str]) -> list[decisions_pb2.Decision]:
        """One decision round, waiting for its decisions."""
        return list(self.send(sumo, sim_s, edges).result().decisions)
