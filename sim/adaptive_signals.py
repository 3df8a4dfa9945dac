"""The twin's side of adaptive signal control through the services: one OptimizerService.ControlSignals
stream per run; each second it sends the readings of the lanes the optimizer asks for that changed
since the second before, waits for the answer (lockstep: the same phase sequences as the
controllers in-process) and shows the adaptive steps the signal service applied: phase 0 at once,
the next ones after their durations, the last one held until the light's next step. The
controllers run in the optimizer, not here.

When the stream breaks (the optimizer died, the link is cut) the twin goes on: each light plays out
the step it has and holds it, until the signal service hands it back to its timing plan (its
adaptive lease runs out) and the decision applier installs that plan (`release`)."""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Iterator
from typing import Any

import grpc
from almere.optimizer.v1 import optimizer_pb2 as opb
from almere.optimizer.v1 import optimizer_pb2_grpc

from sim.light_driver import SubscribedLanes, show

log = logging.getLogger(__name__)
Reading = tuple[int, int, tuple[tuple[float, float], ...]]  # vehicles, halting, approaching (distance, speed)
EMPTY: Reading = (0, 0, ())


class ServiceControl:
    """A `light_driver.Control`: the lights driven by the optimizer through the signal service."""

    def __init__(self, optimizer: optimizer_pb2_grpc.OptimizerServiceStub, auth: tuple[tuple[str, str], ...]) -> None:
        self._optimizer = optimizer
        self._auth = auth
        self._requests: queue.SimpleQueue[opb.ControlSignalsRequest | None] = queue.SimpleQueue()
        self._responses: Iterator[opb.ControlSignalsResponse] | None = None
        self._lanes: list[str] = []
        self._reader: SubscribedLanes | None = None
        self._sent: dict[str, Reading] = {}  # what the optimizer holds for each lane
        self._playing: dict[str, list[tuple[str, float]]] = {}  # tls -> (state, from) still to come
        self._since: dict[str, float] = {}  # tls -> wall time (time.time) its takeover was first shown
        self._takeovers: dict[str, int] = {}  # tls -> the takeover (plan version) its steps follow
        self.lost_at: float | None = None  # simulated time the stream broke
        self.awaiting_approval: list[str] = []
        self.refused: list[str] = []
        self.steps = 0

    def _outgoing(self) -> Iterator[opb.ControlSignalsRequest]:
        while (request := self._requests.get()) is not None:
            yield request

    def start(self, ls: Any, now: float, record: bool) -> None:
        self.close()
        self._sent, self.lost_at = {}, None
        self._lanes, self._reader = [], SubscribedLanes(ls)
        self._responses = iter(self._optimizer.ControlSignals(self._outgoing(), metadata=self._auth))
        self._round(ls, now, [])

    def close(self) -> None:
        """End the stream (the run is over); a new `start` opens another."""
        if self._responses is not None:
            responses, self._responses = self._responses, None
            self._requests.put(None)
            try:
                for _ in responses:  # the optimizer ends its side once ours is done
                    pass
            except grpc.RpcError as err:  # it ended already (and said why to the step that saw it)
                log.debug("the ControlSignals stream ended with %s", err.code())

    def step(self, ls: Any, now: float) -> int:
        self._play(ls, now)
        if self._responses is None:  # the stream broke: the lights hold until handed back
            return 0
        assert self._reader is not None, "start() opens the stream"
        snap = self._reader.read(now)
        readings = []
        for lane in self._lanes:
            vehicles = snap.vehicles[lane]
            reading = (vehicles, snap.halting[lane], snap.positions.get(lane, ())) if vehicles else EMPTY
            if self._sent.get(lane, EMPTY) != reading:  # only changes: the optimizer keeps the rest
                self._sent[lane] = reading
                readings.append(
                    opb.LaneReading(
                        lane_id=lane,
                        vehicles=reading[0],
                        halting=reading[1],
                        approaching=[opb.ApproachingVehicle(distance_m=d, speed_mps=v) for d, v in reading[2]],
                    )
                )
        return self._round(ls, now, readings)

    def _round(self, ls: Any, now: float, readings: list[opb.LaneReading]) -> int:
        assert self._responses is not None, "start() opens the stream"
        self._requests.put(opb.ControlSignalsRequest(sim_time_seconds=now, lanes=readings))
        try:
            reply = next(self._responses)
        except grpc.RpcError as err:
            log.warning("the ControlSignals stream broke (%s); the lights hold until handed back", err.code())
            self._responses, self.lost_at = None, now
            self._requests.put(None)  # ends the request iterator
            return 0
        if reply.HasField("lanes"):
            assert self._reader is not None
            self._lanes = list(reply.lanes.lane_ids)
            self._reader.select(self._lanes, reply.lanes.near_lane_ids)
        if reply.HasField("status"):
            self.awaiting_approval, self.refused = list(reply.status.awaiting_approval), list(reply.status.refused)
        for step in reply.steps:
            start, phases = now, []
            for phase in step.phases:
                phases.append((phase.state, start))
                start += phase.duration
            self._playing[step.sumo_tls_id] = phases
            if self._takeovers.get(step.sumo_tls_id) != step.plan_version:
                self._takeovers[step.sumo_tls_id] = step.plan_version
                self._since[step.sumo_tls_id] = time.time()
            show(ls, step.sumo_tls_id, phases[0][0])
        self.steps += len(reply.steps)
        return len(reply.steps)

    def release(self, tls: str, occurred: float) -> bool:
        """A timing plan was activated for `tls` at `occurred` (wall time, from the event): if that
        ended the takeover whose steps this light plays (not an older one, replayed from the bus),
        stop playing them and return True: whoever installs the plan owns the light now."""
        if tls not in self._playing or occurred < self._since[tls]:
            return False
        del self._playing[tls], self._takeovers[tls], self._since[tls]
        return True

    @property
    def controlled(self) -> list[str]:
        """The lights the optimizer's steps drive now."""
        return sorted(self._playing)

    def _play(self, ls: Any, now: float) -> None:
        """Advance the running steps: a transition's next state once the one before has run out."""
        for tls, phases in self._playing.items():
            changed = False
            while len(phases) > 1 and now >= phases[1][1]:
                phases.pop(0)
                changed = True
            if changed:
                show(ls, tls, phases[0][0])
