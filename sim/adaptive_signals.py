"""The twin's side of adaptive signal control through the services: each second it reports the lanes
the optimizer asks for (OptimizerService.ControlSignals) and shows the adaptive steps the signal
service activated: phase 0 at once, the next ones after their durations, the last one held until
the light's next step. The controllers run in the optimizer, not here."""

from __future__ import annotations

from typing import Any

from almere.optimizer.v1 import optimizer_pb2 as opb
from almere.optimizer.v1 import optimizer_pb2_grpc

from sim.light_driver import read_lanes, show

CALL_TIMEOUT_S = 60.0  # the first call of a run reads the network


class ServiceControl:
    """A `light_driver.Control`: the lights driven by the optimizer through the signal service."""

    def __init__(self, optimizer: optimizer_pb2_grpc.OptimizerServiceStub, auth: tuple[tuple[str, str], ...]) -> None:
        self._optimizer = optimizer
        self._auth = auth
        self._lanes: list[str] = []
        self._near: list[str] = []
        self._playing: dict[str, list[tuple[str, float]]] = {}  # tls -> (state, from) still to come
        self.awaiting_approval: list[str] = []
        self.refused: list[str] = []
        self.steps = 0

    def start(self, ls: Any, now: float, record: bool) -> None:
        self._round(ls, now, [])

    def step(self, ls: Any, now: float) -> int:
        self._play(ls, now)
        snap = read_lanes(ls, now, lanes=self._lanes, near=self._near)
        readings = [
            opb.LaneReading(
                lane_id=lane,
                vehicles=snap.vehicles[lane],
                halting=snap.halting[lane],
                approaching=[
                    opb.ApproachingVehicle(distance_m=d, speed_mps=v) for d, v in snap.positions.get(lane, ())
                ],
            )
            for lane in self._lanes
            if snap.vehicles[lane]  # empty lanes go unsaid: the optimizer counts what is not reported as 0
        ]
        return self._round(ls, now, readings)

    def _round(self, ls: Any, now: float, readings: list[opb.LaneReading]) -> int:
        reply = self._optimizer.ControlSignals(
            opb.ControlSignalsRequest(sim_time_seconds=now, lanes=readings), metadata=self._auth, timeout=CALL_TIMEOUT_S
        )
        if reply.HasField("lanes"):
            self._lanes, self._near = list(reply.lanes.lane_ids), list(reply.lanes.near_lane_ids)
        self.awaiting_approval, self.refused = list(reply.awaiting_approval), list(reply.refused)
        for step in reply.steps:
            start, phases = now, []
            for phase in step.plan.phases:
                phases.append((phase.state, start))
                start += phase.duration
            self._playing[step.sumo_tls_id] = phases
            show(ls, step.sumo_tls_id, phases[0][0])
        self.steps += len(reply.steps)
        return len(reply.steps)

    def _play(self, ls: Any, now: float) -> None:
        """Advance the running steps: a transition's next state once the one before has run out."""
        for tls, phases in self._playing.items():
            changed = False
            while len(phases) > 1 and now >= phases[1][1]:
                phases.pop(0)
                changed = True
            if changed:
                show(ls, tls, phases[0][0])
