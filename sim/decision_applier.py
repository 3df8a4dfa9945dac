"""Applies the decisions that reach the twin to SUMO: the signal service's activated plans (through
yellow and all red from what the light shows, light_driver.switch_program) and granted priority,
and the optimizer's route advice and parking guidance, each once and never on a junction lane.
Every application is logged with its apply latency (wall time from the decision to SUMO)."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from almere.optimizer.v1 import decisions_pb2
from almere.signals.v1 import events_pb2
from almere.signals.v1 import signals_pb2 as spb
from google.protobuf.timestamp_pb2 import Timestamp

from contract import bus
from sim.adaptive_signals import ServiceControl
from sim.light_driver import switch_program
from sim.priority import PriorityLights

SIGNAL_SUBJECTS = (bus.SIGNALS.every(bus.PLAN_ACTIVATED), bus.SIGNALS.every(bus.PRIORITY_DECIDED))
GUIDANCE_SUBJECTS = (bus.OPTIMIZER.every(bus.ROUTE_ADVICE), bus.OPTIMIZER.every(bus.PARKING_GUIDANCE))
SUMO_TYPES = {spb.PLAN_TYPE_STATIC: 0, spb.PLAN_TYPE_ACTUATED: 3}
# How long a decision waits for its vehicle to leave a junction before it is dropped (simulated s).
RETRY_S = 10.0
# Levers the optimizer uses only in report rounds: their copies on the bus wait until the round's
# answer is due (`latency_s`), so when a car is told does not depend on how fast the bus was.
ROUND_LEVERS = frozenset({decisions_pb2.LEVER_PARKING_GUIDANCE, decisions_pb2.LEVER_CONGESTION_REROUTING})


def _latency(when: Timestamp) -> float:
    return round(time.time() - (when.seconds + when.nanos / 1e9), 3) if when.seconds else 0.0


class DecisionApplier:
    def __init__(self, log_path: Path, *, plans: bool = True, guidance: bool = True, vehicle_prefix: str = "") -> None:
        """`plans`: apply the signal service's plans (off when SUMO's own actuated control is the
        baseline); `guidance`: apply the optimizer's advice (only when coordinating)."""
        self._plans = plans
        self._guidance = guidance
        self.vehicle_prefix = vehicle_prefix
        self._log: IO[str] = log_path.open("a")
        self._seen: set[str] = set()
        # Decisions to apply: (decision, not before, given up after), in simulated s.
        self._pending: dict[str, tuple[decisions_pb2.Decision, float, float]] = {}
        # How long after its report a round's decisions are applied (the runner's decision_latency_s).
        self.latency_s = 0.0
        self._present_ids: set[str] = set()
        self._present_at = -1.0
        self._parking_areas: set[str] | None = None
        # Lights held for priority grants (the twin's own responders' and any other's).
        self.lights = PriorityLights()
        # Responders that ask for priority themselves (sim/priority.py): their grants are held already.
        self.own_priority: set[str] = set()
        # The optimizer's lights, when it drives them: a timing plan activated for one of them is a
        # hand-back (its adaptive lease ran out, or an engineer rolled it back), applied even when
        # `plans` is off.
        self.adaptive: ServiceControl | None = None
        self.applied = 0
        self.skipped = 0

    def close(self) -> None:
        self._log.close()

    def _record(self, sim_s: float, **fields: Any) -> None:
        self._log.write(json.dumps({"sim_s": sim_s, **fields}) + "\n")
        self._log.flush()  # readable while the run goes on (a live dashboard, a test)
        self.applied += 1

    def apply(self, sumo: Any, sim_s: float, *, subject: str, payload: bytes) -> None:
        """One message from the bus (SIGNAL_SUBJECTS, GUIDANCE_SUBJECTS); others are not for us."""
        kind = subject.split(".")[3]
        if kind == bus.PRIORITY_DECIDED or (kind == bus.PLAN_ACTIVATED and (self._plans or self.adaptive is not None)):
            event = events_pb2.SignalEvent.FromString(payload)
            if event.change.priority.vehicle_id not in self.own_priority:  # the twin's own: applied already
                self._signal(sumo, sim_s, event)
        elif kind in bus.DECISION_EVENTS and self._guidance:
            decision = decisions_pb2.Decision.FromString(payload)
            due = decision.sim_time_seconds + self.latency_s if decision.lever in ROUND_LEVERS else sim_s
            self.decide(sumo, sim_s, decision, not_before=due)

    def local_id(self, vehicle_id: str) -> str:
        """The SUMO id of a vehicle the optimizer knows as `<run tag>:<id>` (ids unique across runs)."""
        return vehicle_id.removeprefix(self.vehicle_prefix)

    def _signal(self, sumo: Any, sim_s: float, event: events_pb2.SignalEvent) -> None:
        tls, change = event.intersection.sumo_tls_id, event.change
        if change.event == bus.PLAN_ACTIVATED:
            plan = change.plan
            if plan.type == spb.PLAN_TYPE_ADAPTIVE:  # shown by who drives them, in lockstep (sim/adaptive_signals.py)
                return
            occurred = change.occur_time.seconds + change.occur_time.nanos / 1e9
            handed_back = self.adaptive is not None and self.adaptive.release(tls, occurred)
            if not (self._plans or handed_back):
                return
            phases = [(p.state, p.duration, p.min_duration or -1, p.max_duration or -1) for p in plan.phases]
            switch_program(sumo, tls, program=f"v{plan.version}", kind=SUMO_TYPES[plan.type], phases=phases)
            self._record(
                sim_s,
                tls=tls,
                event=change.event,
                plan_version=plan.version,
                reason=change.reason,
                handed_back=handed_back,
                wall_s=time.time(),
                apply_latency_s=_latency(change.occur_time),
            )
        elif change.priority.decision == spb.PRIORITY_DECISION_GRANTED and not self.lights.passive:
            hold = change.priority.hold_until.seconds - change.priority.eta.seconds + 10
            self.lights.hold(sumo, sim_s, tls=tls, target=change.priority.target_state, until=sim_s + hold)
            self._record(
                sim_s,
                tls=tls,
                event=change.event,
                priority=change.priority.vehicle_id,
                phase=change.priority.target_phase_index,
                apply_latency_s=_latency(change.occur_time),
            )

    def _where(self, sumo: Any, vehicle: str) -> str | None:
        """The edge a vehicle is on, "" while it crosses a junction (':' lanes: re-planning there breaks
        its stops), None when it has left."""
        if vehicle not in self._present(sumo):
            return None
        lane = sumo.vehicle.getLaneID(vehicle)
        return "" if lane.startswith(":") else str(sumo.vehicle.getRoadID(vehicle))

    def _areas(self, sumo: Any) -> set[str]:
        if self._parking_areas is None:
            self._parking_areas = set(sumo.parkingarea.getIDList())
        return self._parking_areas

    def _present(self, sumo: Any) -> set[str]:
        step = sumo.simulation.getTime()
        if self._present_at != step:
            self._present_ids, self._present_at = set(sumo.vehicle.getIDList()), step
        return self._present_ids

    def decide(
        self, sumo: Any, sim_s: float, decision: decisions_pb2.Decision, *, not_before: float | None = None
    ) -> None:
        """Apply one of the optimizer's decisions (once, however often it arrives), at `not_before` if
        that is later; a vehicle crossing a junction gets it on the next steps."""
        if decision.name in self._seen:
            return
        self._seen.add(decision.name)
        start = sim_s if not_before is None else max(sim_s, not_before)
        self._pending[decision.name] = (decision, start, start + RETRY_S)
        self.retry(sumo, sim_s)

    def retry(self, sumo: Any, sim_s: float) -> None:
        for name, (decision, start, until) in list(self._pending.items()):
            if sim_s < start:
                continue
            vehicle = self.local_id(decision.route_advice.vehicle_id or decision.parking_guidance.vehicle_id)
            edge = self._where(sumo, vehicle)
            if edge == "" and sim_s < until:
                continue
            del self._pending[name]
            if not edge or not self._follow(sumo, vehicle, edge=edge, decision=decision):
                self.skipped += 1
                continue
            self._record(
                sim_s,
                vehicle=vehicle,
                event=decision.WhichOneof("action"),
                lever=decisions_pb2.Lever.Name(decision.lever),
                trigger=dict(decision.trigger),
                parking_area=decision.parking_guidance.parking_area_id,
                wall_s=time.time(),
                apply_latency_s=_latency(decision.decide_time),
            )

    def _follow(self, sumo: Any, vehicle: str, *, edge: str, decision: decisions_pb2.Decision) -> bool:
        """Give the vehicle its new stop and route; False when the advice no longer fits where it is."""
        area = decision.parking_guidance.parking_area_id
        edges = list(decision.route_advice.edges or decision.parking_guidance.edges)
        if area and area not in self._areas(sumo):  # a facility the city has but this simulation lacks
            return False
        if area:
            stops = sumo.vehicle.getStops(vehicle, 1)
            if not stops or not stops[0].stoppingPlaceID or sumo.vehicle.isStoppedParking(vehicle):
                return False  # parked already, or no longer looking
            if stops[0].stoppingPlaceID != area:
                sumo.vehicle.rerouteParkingArea(vehicle, area)
        if decision.route_advice.destination_edge:
            sumo.vehicle.changeTarget(vehicle, decision.route_advice.destination_edge)
        if not edges and not area:  # no route given: re-plan by the travel times SUMO knows
            sumo.vehicle.rerouteTraveltime(vehicle)
            return True
        routed = False
        if edges and edge in edges:
            try:
                sumo.vehicle.setRoute(vehicle, edges[edges.index(edge) :])
                routed = True
            except sumo.TraCIException:  # the route misses a stop the vehicle still has
                pass
        elif not area and decision.lever == decisions_pb2.LEVER_INCIDENT_REROUTING:
            routed = self._around_incident(sumo, vehicle, decision.trigger)
        if not area:
            return routed
        area_edge = sumo.lane.getEdgeID(sumo.parkingarea.getLaneID(area))
        return area_edge in sumo.vehicle.getRoute(vehicle)[sumo.vehicle.getRouteIndex(vehicle) :]

    def _around_incident(self, sumo: Any, vehicle: str, trigger: Mapping[str, str]) -> bool:
        """The vehicle has driven past where the optimizer last saw it (it reports every decision
        interval) and off the start of the advised route, but the incident is still ahead: its
        navigation system plans from where it is, with the incident's road at the optimizer's cost
        (the advice's trigger), instead of dropping the advice until the next report round."""
        incident, cost = trigger.get("edge", ""), trigger.get("edge_seconds", "")
        if not incident or not cost or incident not in self._ahead(sumo, vehicle):
            return False
        sumo.vehicle.setAdaptedTraveltime(vehicle, incident, float(cost))
        try:
            sumo.vehicle.rerouteTraveltime(vehicle)
        except sumo.TraCIException:  # no way to its destination and stops from here
            return False
        finally:
            sumo.vehicle.setAdaptedTraveltime(vehicle, incident)  # only for this plan (FACTS: remove it)
        return incident not in self._ahead(sumo, vehicle)

    @staticmethod
    def _ahead(sumo: Any, vehicle: str) -> list[str]:
        return list(sumo.vehicle.getRoute(vehicle)[sumo.vehicle.getRouteIndex(vehicle) :])
