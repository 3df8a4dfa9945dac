"""The optimizer's guidance in a what-if run: the optimizer in this process (its strategy the plan's),
told what the services would tell it (the garages and their counts, the closures), and the equipped
share of drivers reporting to it and following its advice, as in the twin's coordinated mode."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from almere.incidents.v1 import incidents_pb2 as ipb
from almere.optimizer.v1 import optimizer_pb2 as opb
from almere.whatif.v1 import whatif_pb2

from services.optimizer.inprocess import InProcessOptimizer
from services.optimizer.logic import default_strategy
from services.optimizer.routing import RoadGraph
from sim import observe
from sim.decision_applier import DecisionApplier
from sim.navigation import Navigation
from sim.scenarios.almere_centrum.layout import Facility

COUNT_S = 60.0  # the garages' counters report once a minute, as in the twin
PREFIX = "whatif:"


def plan_strategy(plan: whatif_pb2.ResponsePlan, in_force: opb.Strategy | None) -> opb.Strategy:
    """The strategy in force (else the optimizer's default) with the plan's fields (those its mask
    names) over it."""
    strategy = opb.Strategy()
    strategy.CopyFrom(in_force if in_force is not None else default_strategy())
    if plan.strategy_mask.paths:
        plan.strategy_mask.MergeMessage(plan.strategy, strategy)
    return strategy


class Guidance:
    def __init__(
        self,
        ls: Any,
        *,
        network: Path,
        facilities: Sequence[Facility],
        walks: dict[str, tuple[float, float]],
        strategy: opb.Strategy,
        seed: int,
        log: Path,
    ) -> None:
        self.optimizer = InProcessOptimizer(RoadGraph.from_net(network), strategy)
        locations = observe.facility_locations(ls, list(facilities))
        for f in facilities:
            self.optimizer.add_facility(
                facility_id=f.facility_id, capacity=f.capacity, entrance_edge=f.edge, location=locations[f.facility_id]
            )
        self._facilities = [f.facility_id for f in facilities]
        self.applier = DecisionApplier(log, plans=False, guidance=True, vehicle_prefix=PREFIX)
        self.navigation = Navigation(
            report_vehicles=self.optimizer.ReportVehicles,
            metadata=(),
            equipped=strategy.equipped_share,
            seed=seed,
            prefix=PREFIX,
            walks=walks,
            areas=set(self._facilities),
        )
        self._interval_s = max(1.0, strategy.decision_interval_seconds)
        self._edges = [e for e in ls.edge.getIDList() if not e.startswith(":")]

    def start(self, ls: Any, now: float, closures: Iterable[whatif_pb2.Closure]) -> None:
        """The counts now and the closures reported: the reroutes they cause are applied at once."""
        self._count(ls)
        for index, closure in enumerate(closures):
            impact = ipb.Impact(
                closed_lanes=closure.closed_lanes,
                full_closure=closure.full_closure,
                speed_limit_kmh=closure.speed_limit_kmh,
            )
            for decision in self.optimizer.incident(f"closure-{index}", edge=closure.edge_id, impact=impact):
                self.applier.decide(ls, now, decision)

    def step(self, ls: Any, now: float) -> None:
        self.applier.retry(ls, now)
        if now % COUNT_S == 0:
            self._count(ls)
        if now % self._interval_s == 0:
            for decision in self.navigation.report(ls, now, self._edges):
                self.applier.decide(ls, now, decision)

    def close(self) -> None:
        self.applier.close()

    def _count(self, ls: Any) -> None:
        self.optimizer.count({f: ls.parkingarea.getVehicleCount(f) for f in self._facilities})
