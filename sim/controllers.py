"""What the twin applies to SUMO from the bus: the signal service's activated plans and granted
priority, and the optimizer's route advice and parking guidance. Every application is logged with
its apply latency (wall time from the decision to SUMO)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import IO, Any

from almere.optimizer.v1 import decisions_pb2
from almere.signals.v1 import events_pb2
from almere.signals.v1 import signals_pb2 as spb
from google.protobuf.timestamp_pb2 import Timestamp

SIGNAL_SUBJECTS = ("almere.signals.v1.plan_activated.*", "almere.signals.v1.priority_decided.*")
GUIDANCE_SUBJECTS = ("almere.optimizer.v1.route_advice.*", "almere.optimizer.v1.parking_guidance.*")
SUMO_TYPES = {spb.PLAN_TYPE_STATIC: 0, spb.PLAN_TYPE_ACTUATED: 3}


def _latency(when: Timestamp) -> float:
    return round(time.time() - (when.seconds + when.nanos / 1e9), 3) if when.seconds else 0.0


class Controllers:
    def __init__(self, log_path: Path, plans: bool = True, guidance: bool = True) -> None:
        """`plans`: apply the signal service's plans (off when SUMO's own actuated control is the
        baseline); `guidance`: apply the optimizer's advice (only when coordinating)."""
        self._plans = plans
        self._guidance = guidance
        self._log: IO[str] = log_path.open("a")
        self.applied = 0
        self.skipped = 0

    def close(self) -> None:
        self._log.close()

    def _record(self, sim_s: float, **fields: Any) -> None:
        self._log.write(json.dumps({"sim_s": sim_s, **fields}) + "\n")
        self.applied += 1

    def apply(self, sumo: Any, sim_s: float, subject: str, payload: bytes) -> None:
        kind = subject.split(".")[3]
        if kind == "priority_decided" or (kind == "plan_activated" and self._plans):
            self._signal(sumo, sim_s, events_pb2.SignalEvent.FromString(payload))
        elif kind == "route_advice" and self._guidance:
            self._route(sumo, sim_s, decisions_pb2.RouteAdvice.FromString(payload))
        elif kind == "parking_guidance" and self._guidance:
            self._parking(sumo, sim_s, decisions_pb2.ParkingGuidance.FromString(payload))

    def _signal(self, sumo: Any, sim_s: float, event: events_pb2.SignalEvent) -> None:
        tls, change = event.intersection.sumo_tls_id, event.change
        if change.event == "plan_activated":
            plan = change.plan
            phases = [
                sumo.trafficlight.Phase(p.duration, p.state, p.min_duration or -1, p.max_duration or -1)
                for p in plan.phases
            ]
            program = f"v{plan.version}"
            sumo.trafficlight.setProgramLogic(tls, sumo.trafficlight.Logic(program, SUMO_TYPES[plan.type], 0, phases))
            sumo.trafficlight.setProgram(tls, program)
            self._record(
                sim_s,
                tls=tls,
                event=change.event,
                plan_version=plan.version,
                apply_latency_s=_latency(change.occur_time),
            )
        elif change.priority.decision == spb.PRIORITY_DECISION_GRANTED:
            hold = change.priority.hold_until.seconds - change.priority.eta.seconds + 10
            sumo.trafficlight.setPhase(tls, change.priority.target_phase_index)
            sumo.trafficlight.setPhaseDuration(tls, hold)
            self._record(
                sim_s,
                tls=tls,
                event=change.event,
                priority=change.priority.vehicle_id,
                phase=change.priority.target_phase_index,
                apply_latency_s=_latency(change.occur_time),
            )

    def _movable(self, sumo: Any, vehicle: str) -> bool:
        """Vehicles that left, or are crossing a junction (':' lanes), are not re-planned (shared/FACTS.md)."""
        if vehicle not in sumo.vehicle.getIDList() or sumo.vehicle.getLaneID(vehicle).startswith(":"):
            self.skipped += 1
            return False
        return True

    def _route(self, sumo: Any, sim_s: float, advice: decisions_pb2.RouteAdvice) -> None:
        vehicle = advice.vehicle_id
        if not self._movable(sumo, vehicle):
            return
        if advice.destination_edge:
            sumo.vehicle.changeTarget(vehicle, advice.destination_edge)
        if advice.edges:
            sumo.vehicle.setRoute(vehicle, list(advice.edges))
        elif not advice.destination_edge:
            sumo.vehicle.rerouteTraveltime(vehicle)
        self._record(sim_s, vehicle=vehicle, event="route_advice", apply_latency_s=_latency(advice.decide_time))

    def _parking(self, sumo: Any, sim_s: float, guidance: decisions_pb2.ParkingGuidance) -> None:
        vehicle = guidance.vehicle_id
        if not self._movable(sumo, vehicle):
            return
        sumo.vehicle.rerouteParkingArea(vehicle, guidance.parking_area_id)
        area_edge = sumo.lane.getEdgeID(sumo.parkingarea.getLaneID(guidance.parking_area_id))
        route = sumo.vehicle.getRoute(vehicle)[sumo.vehicle.getRouteIndex(vehicle) :]
        if area_edge not in route:  # the stop was replaced but not the route: not applied (FACTS)
            self.skipped += 1
            return
        self._record(
            sim_s,
            vehicle=vehicle,
            event="parking_guidance",
            parking_area=guidance.parking_area_id,
            apply_latency_s=_latency(guidance.decide_time),
        )
