"""Emergency priority as an ambulance's on-board unit asks for it and the street's controllers give
it: while a responder drives, it asks the signal service (role ems) for green at the next signalised
intersection on its route, REQUEST_S before it gets there; on a grant the light turns to the granted
phase through a yellow (never straight from green to a conflicting green), holds it until the
responder has crossed, then goes back to its program. Every crossing is logged with the state the
responder met, when it asked and when it got there."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import grpc
from almere.signals.v1 import signals_pb2 as spb
from almere.signals.v1 import signals_pb2_grpc
from google.protobuf.timestamp_pb2 import Timestamp

from libs.signal_control.phases import transition_steps
from sim.variants import Responder

REQUEST_S = 25.0  # ask this long before the stop line
RESPONDER_TYPE = "responder"
YELLOW_S = 3.0
SLOWEST_MPS = 5.0  # for the ETA of a responder crawling in traffic
MAX_HOLD_S = 60.0  # a grant held for a responder that never comes ends this long after its ETA


@dataclass
class _Hold:
    target: str
    program: str  # the program to go back to
    green_at: float  # simulated time the target state starts (after the yellow)
    until: float  # simulated time the grant ends at the latest
    back_at: float = float("inf")  # simulated time the program resumes (after the yellow out)


class PriorityLights:
    """Lights held for priority grants, whoever asked: into the granted state through a yellow for the
    movements losing green, held until released (or the grant's end), back to the program through
    a yellow again. Never straight from a green to a conflicting one. `passive`: the optimizer drives
    the lights (coordinated mode) and serves grants itself, through its adaptive steps: a second
    master here would show states its steps were not validated against."""

    def __init__(self) -> None:
        self._holds: dict[str, _Hold] = {}
        self.passive = False

    def hold(self, sumo: Any, now: float, *, tls: str, target: str, until: float) -> None:
        if self.passive:
            return
        current = sumo.trafficlight.getRedYellowGreenState(tls)
        held = self._holds.get(tls)
        program = held.program if held is not None else sumo.trafficlight.getProgram(tls)
        yellow = transition_steps(current, target, YELLOW_S)
        if yellow:
            sumo.trafficlight.setRedYellowGreenState(tls, yellow[0][0])
        self._holds[tls] = _Hold(target, program, now + sum(seconds for _, seconds in yellow), until)

    def release(self, sumo: Any, now: float, tls: str) -> None:
        hold = self._holds.get(tls)
        if hold is None or hold.back_at != float("inf"):
            return
        logics = {logic.programID: logic for logic in sumo.trafficlight.getAllProgramLogics(tls)}
        resume = logics[hold.program].phases[0].state if hold.program in logics else hold.target
        yellow = transition_steps(hold.target, resume, YELLOW_S)
        if yellow:
            sumo.trafficlight.setRedYellowGreenState(tls, yellow[0][0])
            hold.back_at = now + yellow[0][1]
        else:
            del self._holds[tls]
            sumo.trafficlight.setProgram(tls, hold.program)

    def step(self, sumo: Any, now: float) -> None:
        """Every step: the green after its yellow, the end of grants, the program after the yellow out."""
        for tls, hold in list(self._holds.items()):
            if now >= hold.back_at:
                del self._holds[tls]
                sumo.trafficlight.setProgram(tls, hold.program)
            elif hold.back_at == float("inf") and now >= hold.until:
                self.release(sumo, now, tls)
            elif hold.back_at == float("inf") and now >= hold.green_at:
                sumo.trafficlight.setRedYellowGreenState(tls, hold.target)


class EmergencyPriority:
    def __init__(
        self, signals: signals_pb2_grpc.SignalServiceStub, *, auth: Any, log_path: Path, lights: PriorityLights
    ) -> None:
        self._signals = signals
        self._auth = auth
        self._lights = lights
        self._log: IO[str] = log_path.open("a")
        self._intersections: dict[str, str] | None = None  # SUMO tls id -> intersections/{id}
        self._asked: set[tuple[str, str]] = set()  # (vehicle, tls)
        self._grants: dict[str, tuple[str, str]] = {}  # tls -> (vehicle, grant name) held for our responders
        self._arrivals: dict[tuple[str, str], tuple[float, str]] = {}  # (vehicle, tls) -> (asked at, grant)
        self._last: dict[tuple[str, str], tuple[float, str]] = {}  # (vehicle, tls) -> (time, its link's state)
        self.responders: set[str] = set()
        self.granted = 0

    def close(self) -> None:
        self._log.close()

    def _names(self) -> dict[str, str]:
        if self._intersections is None:
            reply = self._signals.ListIntersections(spb.ListIntersectionsRequest(page_size=1000), metadata=self._auth)
            self._intersections = {i.sumo_tls_id: i.name for i in reply.intersections}
        return self._intersections

    def step(self, sumo: Any, now: float) -> None:
        present = set(sumo.vehicle.getIDList())
        for vehicle in sorted(self.responders & present):
            upcoming = sumo.vehicle.getNextTLS(vehicle)
            for tls, link, distance, state in upcoming[:1]:
                seconds = distance / max(sumo.vehicle.getSpeed(vehicle), SLOWEST_MPS)
                if seconds <= REQUEST_S and (vehicle, tls) not in self._asked:
                    self._ask(sumo, now, vehicle=vehicle, tls=tls, link=link, seconds=seconds)
                self._last[(vehicle, tls)] = (now, state)
            ahead = {tls for tls, *_ in upcoming}
            for key in [k for k in self._arrivals if k[0] == vehicle and k[1] not in ahead]:
                self._crossed(key)
            for tls, (holder, _) in list(self._grants.items()):
                if holder == vehicle and tls not in ahead:
                    self._end(sumo, now, tls)
        for key in [k for k in self._arrivals if k[0] not in present]:  # arrived at the scene
            self._crossed(key)
        for tls, (holder, _) in list(self._grants.items()):
            if holder not in present:  # arrived with the light still held
                self._end(sumo, now, tls)

    def _crossed(self, key: tuple[str, str]) -> None:
        """The responder has crossed the stop line: log the state it met in its last step before."""
        asked, decision = self._arrivals.pop(key)
        at, state = self._last.pop(key, (asked, ""))
        self._record(at, vehicle=key[0], tls=key[1], state=state, asked_s=asked, decision=decision)

    def _ask(self, sumo: Any, now: float, *, vehicle: str, tls: str, link: int, seconds: float) -> None:
        self._asked.add((vehicle, tls))
        name = self._names().get(tls)
        if name is None:
            return
        eta = Timestamp()
        eta.FromNanoseconds(time.time_ns() + int(seconds * 1e9))
        # The road into the junction (the vehicle may be crossing another junction just now).
        incoming_lane = sumo.trafficlight.getControlledLinks(tls)[link][0][0]
        approach = incoming_lane.rsplit("_", 1)[0]
        try:
            reply = self._signals.RequestPriority(
                spb.RequestPriorityRequest(
                    parent=name,
                    priority=spb.Priority(
                        priority_class=spb.PRIORITY_CLASS_EMERGENCY,
                        vehicle_id=vehicle,
                        approach_edge_id=approach,
                        eta=eta,
                    ),
                ),
                metadata=self._auth,
            )
        except grpc.RpcError as err:  # no priority here: the responder drives on as it would anyway
            self._arrivals[(vehicle, tls)] = (now, f"{err.code().name}: {err.details()}")
            return
        grant = reply.priority
        decision = spb.PriorityDecision.Name(grant.decision)
        self._arrivals[(vehicle, tls)] = (now, decision)
        if grant.decision != spb.PRIORITY_DECISION_GRANTED:
            return
        self.granted += 1
        self._grants[tls] = (vehicle, grant.name)
        self._lights.hold(sumo, now, tls=tls, target=grant.target_state, until=now + seconds + MAX_HOLD_S)

    def _end(self, sumo: Any, now: float, tls: str) -> None:
        """The responder has crossed: end the grant and give the light back to its program."""
        _, name = self._grants.pop(tls)
        self._signals.CancelPriority(spb.CancelPriorityRequest(name=name), metadata=self._auth)
        self._lights.release(sumo, now, tls)

    def _record(self, sim_s: float, **fields: Any) -> None:
        self._log.write(json.dumps({"sim_s": sim_s, **fields}) + "\n")
        self._log.flush()


class Responders:
    """The variant's responders, sent off at their time (SUMO vehicles of class emergency), with
    signal priority when the run has the services."""

    def __init__(self, sumo: Any, scripted: tuple[Responder, ...]) -> None:
        self._sumo = sumo
        self._pending = sorted(scripted, key=lambda r: r.depart_s)
        self.ids = {r.vehicle_id for r in scripted}
        self.priority: EmergencyPriority | None = None
        if scripted and RESPONDER_TYPE not in sumo.vehicletype.getIDList():  # a saved state has it already
            sumo.vehicletype.copy("DEFAULT_VEHTYPE", RESPONDER_TYPE)
            sumo.vehicletype.setVehicleClass(RESPONDER_TYPE, "emergency")
            sumo.vehicletype.setColor(RESPONDER_TYPE, (255, 255, 255, 255))

    def step(self, now: float) -> None:
        while self._pending and self._pending[0].depart_s <= now:
            r = self._pending.pop(0)
            route = self._sumo.simulation.findRoute(r.from_edge, r.to_edge, vType=RESPONDER_TYPE)
            self._sumo.route.add(f"route-{r.vehicle_id}", route.edges)
            self._sumo.vehicle.add(r.vehicle_id, f"route-{r.vehicle_id}", typeID=RESPONDER_TYPE, departLane="best")
        if self.priority is not None:
            self.priority.responders = self.ids
            self.priority.step(self._sumo, now)

    def close(self) -> None:
        if self.priority is not None:
            self.priority.close()
