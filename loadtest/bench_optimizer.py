"""Speed of the optimizer's decisions, each against a baseline measured in the same run:

1. One decision for 1,000 vehicles: an incident on the Stadsdreef that all of them are heading into,
   answered by the engine (find the affected vehicles, spread them over alternatives, build the
   decisions), against sumolib's per-vehicle router doing only the routing for the same vehicles.
2. Incident reported -> first reroute applied in SUMO, wall clock, with the twin in real time: the
   whole stack runs; police report incidents on roads the equipped vehicles are heading for; the
   optimizer hears them from JetStream and publishes route advice, which the twin applies the moment
   it arrives. Baseline: the police's own gRPC calls (report + activate). An observer on the bus
   times each hop (police's calls, incident event on JetStream, optimizer's decision, decision on the
   bus, applied in SUMO). bench_reroute_under_load.py runs this beside the locust user mix.

Run: `.venv/bin/python loadtest/bench_optimizer.py [--vehicles 1000] [--incidents 25]` (make bench-optimizer)."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import sumolib
from almere.incidents.v1 import events_pb2 as ievents
from almere.incidents.v1 import incidents_pb2 as ipb
from bus_clock import BusClock  # loadtest/, beside this script

from apps.coupled import twin_callers
from apps.stack import Stack, dev_callers
from libs.sumo_tools import sumo_binary
from services.common.clock import utcnow
from services.common.config import Settings
from services.optimizer.inprocess import InProcessOptimizer
from services.optimizer.routing import RoadGraph
from sim.bus_listener import BusListener, hold_until, twin_identity
from sim.decision_applier import GUIDANCE_SUBJECTS, DecisionApplier
from sim.devices import FieldDevices
from sim.observe import geo
from sim.runner import RunSpec, prepare, sumo_args
from sim.scenarios.almere_centrum import layout
from sim.variants import ScriptedIncident

STADSDREEF = layout.edge_id("j22", "j32")
DECISION_TARGET_MS = 200.0
LATENCY_TARGET_MS = 100.0


def _collision(edge: str, version: int) -> ievents.IncidentEvent:
    incident = ipb.Incident(state=ipb.INCIDENT_STATE_ACTIVE)
    incident.network_location.edge_id = edge
    incident.impact.closed_lanes.append(1)
    incident.impact.speed_limit_kmh = 5
    return ievents.IncidentEvent(incident_id=f"bench-{version}", version=1, incident=incident)


def decision_speed(net_file: Path, vehicles: int, repeats: int) -> dict[str, float]:
    graph = RoadGraph.from_net(net_file)
    rng = np.random.default_rng(1)
    upstream = [e for e in graph.edge_ids if not e.startswith(("j3", "j4", "j5")) and "ext-" not in e.split("-", 1)[1]]
    exits = [e for e in graph.edge_ids if e.endswith(("ext-e", "ext-se"))]
    starts, targets, routes = [], [], []
    while len(routes) < vehicles:  # vehicles from the west half heading east over the Stadsdreef
        start, target = str(rng.choice(upstream)), str(rng.choice(exits))
        route = graph.route_many([start], [target], graph.free_time)[0]
        if route and STADSDREEF in route[1:]:
            starts.append(start), targets.append(target), routes.append(route)
    from almere.optimizer.v1 import optimizer_pb2 as pb

    states = [
        pb.VehicleState(vehicle_id=f"v{i}", edge_id=s, route=r)
        for i, (s, r) in enumerate(zip(starts, routes, strict=True))
    ]
    times, decided = [], 0
    for n in range(repeats):
        optimizer = InProcessOptimizer(graph)
        optimizer.ReportVehicles(pb.ReportVehiclesRequest(vehicles=states, sim_time_seconds=1))
        start = time.perf_counter()
        decided = len(optimizer.decisions.on_incident(_collision(STADSDREEF, n), utcnow()).decisions)
        times.append(time.perf_counter() - start)
    net = sumolib.net.readNet(str(net_file), withInternal=False, maxcache=0)
    start = time.perf_counter()
    for s, t in zip(starts, targets, strict=True):  # only the routing, one vehicle after another
        net.getFastestPath(net.getEdge(s), net.getEdge(t), vClass="passenger")
    baseline = time.perf_counter() - start
    ours = 1000 * statistics.median(times)
    print(f"\n1. one decision for {vehicles} vehicles heading into an incident ({decided} rerouted)")
    print(f"   engine (detect, spread, decide)    {ours:8.1f} ms   median of {repeats}")
    print(f"   sumolib routing alone (baseline)   {1000 * baseline:8.1f} ms   {baseline * 1000 / ours:.1f}x ours")
    print(f"   target < {DECISION_TARGET_MS:.0f} ms: {'met' if ours < DECISION_TARGET_MS else 'NOT met'}")
    return {"decision_ms": ours, "sumolib_ms": 1000 * baseline, "rerouted": decided}


def _busiest(sumo: Any, equipped: list[str], taken: set[str]) -> str:
    """The road most equipped vehicles still have ahead (an incident there has someone to reroute)."""
    ahead: Counter[str] = Counter()
    for v in equipped:
        ahead.update(e for e in sumo.vehicle.getRoute(v)[sumo.vehicle.getRouteIndex(v) + 2 :] if "ext" not in e)
    return next(e for e, _ in ahead.most_common() if e not in taken)


# Started beside the real-time part with the stack's data dir (endpoints, credentials); its callers.
Beside = Callable[[Path], AbstractContextManager[object]]
BESIDE_CALLERS = ("operator", "police", "optimizer")  # loadtest/locustfile.py's


def incident_latency(tmp: Path, incidents: int, gap_s: float, *, beside: Beside | None = None) -> dict[str, Any]:
    """`beside`: a load (bench_reroute_under_load.py: locust) running while the incidents are reported."""
    import libsumo as sumo

    spec = RunSpec(scenario="almere-centrum", mode="coordinated", seed=1, out_root=tmp / "sim", end_s=3600, scale=0.7)
    scenario = prepare(spec)
    stack = Stack(
        settings=Settings(data_dir=tmp / "stack", network_file=scenario.network, log_level="WARNING"),
        callers={**twin_callers(f.operator_id for f in layout.FACILITIES), **dev_callers(*BESIDE_CALLERS)},
    )
    stack.start()
    run_dir = tmp / "run"
    run_dir.mkdir()
    clock = BusClock(stack.endpoints["nats"], stack.bus_options("observer"))
    try:
        sumo.start([sumo_binary("sumo"), *sumo_args(spec, scenario, run_dir)])
        devices = FieldDevices(stack.data_dir, "bench")
        devices.register(layout.FACILITIES, {f.facility_id: layout.position(2, 2) for f in layout.FACILITIES})
        applier = DecisionApplier(run_dir / "applied.jsonl", plans=False, vehicle_prefix="bench:")
        navigation = devices.navigation(seed=1, prefix="bench:", walks={}, equipped=1.0)
        bus = BusListener(
            stack.endpoints["nats"],
            replayed=[],
            live=list(GUIDANCE_SUBJECTS),
            identity=twin_identity(stack.bus_keys),
        )
        edges = [e for e in sumo.edge.getIDList() if not e.startswith(":")]
        now = 0.0
        while now < 600:  # warm up in lockstep: traffic on every road
            sumo.simulationStep()
            now = sumo.simulation.getTime()
            if now % 30 == 0:
                for decision in navigation.report(sumo, now, edges):
                    applier.decide(sumo, now, decision)
        reported: list[str] = []
        reports = Reports(reported=devices.reported_wall_s, police_done={})
        with beside(stack.data_dir) if beside else nullcontext():  # only the measured part is loaded
            started, start_sim = time.monotonic(), now
            next_at = now + 2
            while len(reported) < incidents or now < next_at + 5:
                for subject, payload in bus.drain():
                    applier.apply(sumo, now, subject=subject, payload=payload)
                sumo.simulationStep()
                now = sumo.simulation.getTime()
                hold_until(
                    started + now - start_sim,
                    bus,
                    lambda subject, payload, at=now: applier.apply(sumo, at, subject=subject, payload=payload),
                )
                applier.retry(sumo, now)
                if now % 30 == 0:
                    reports.rounds.append(time.time())
                    for decision in navigation.report(sumo, now, edges):
                        applier.decide(sumo, now, decision)
                if now >= next_at and len(reported) < incidents:
                    equipped = [v for v in sumo.vehicle.getIDList() if navigation.is_equipped(v)]
                    edge = _busiest(sumo, equipped, set(reported))
                    shape = sumo.lane.getShape(f"{edge}_0")
                    collision = ScriptedIncident(edge=edge, start_s=now, end_s=now + 60, closed_lanes=(0,))
                    devices.incident_started(collision, geo(sumo, *shape[0]))
                    reported.append(edge)
                    reports.police_done[edge] = time.time()
                    next_at = now + gap_s
        bus.close()
        applier.close()
        devices.close()
        sumo.close()
    finally:
        clock.close()
        stack.stop()
    return _latencies(run_dir / "applied.jsonl", reports, clock, incidents)


@dataclass(kw_only=True)
class Reports:
    """What the twin did in the measured part, in wall-clock seconds."""

    reported: dict[str, float]  # incident edge -> the police's report call started
    police_done: dict[str, float]  # incident edge -> report and activation answered
    rounds: list[float] = field(default_factory=list)  # the navigation's report rounds started

    def next_round(self, edge: str) -> float:
        return min((r for r in self.rounds if r > self.police_done[edge]), default=float("inf"))


def _latencies(applied: Path, reports: Reports, clock: BusClock, incidents: int) -> dict[str, Any]:
    """Each incident's first reroute applied in SUMO after its report, and the hops on the way. An
    incident the optimizer had nobody to reroute for at once is answered by a later report round (its
    vehicles' new positions): that is the decision interval, not latency, and is counted apart."""
    reported = reports.reported
    first: dict[str, dict[str, float]] = {}
    for line in applied.read_text().splitlines():
        entry = json.loads(line)
        trigger = entry.get("trigger", {})
        edge = trigger.get("edge")
        if entry.get("lever") != "LEVER_INCIDENT_REROUTING" or edge not in reported or edge in first:
            continue
        if entry["wall_s"] < reported[edge]:
            continue  # another caller's incident on the same road (the load's police), answered earlier
        first[edge] = {
            "applied": entry["wall_s"],
            "decided": entry["wall_s"] - entry["apply_latency_s"],
            **clock.times(trigger.get("incident", "").removeprefix("incidents/")),
        }
    # No advice for it on the bus before the next round: the optimizer had nobody to reroute at once.
    by_round = {e for e, t in first.items() if t.get("decision_on_bus", float("inf")) >= reports.next_round(e)}
    at_once = {e: t for e, t in first.items() if e not in by_round}
    latencies = sorted(1000 * (t["applied"] - reported[e]) for e, t in at_once.items())
    p50 = float(np.percentile(latencies, 50)) if latencies else float("nan")
    p99 = float(np.percentile(latencies, 99)) if latencies else float("nan")
    police = [1000 * (done - reported[e]) for e, done in reports.police_done.items()]
    print(f"\n2. incident reported -> first reroute applied in SUMO (real time): {len(latencies)} of {incidents}")
    print(f"   p50 {p50:6.1f} ms   p99 {p99:6.1f} ms   max {max(latencies, default=float('nan')):6.1f} ms")
    print(f"   each (ms): {', '.join(f'{v:.0f}' for v in latencies)}")
    later = sorted(1000 * (first[e]["applied"] - reported[e]) for e in by_round)
    print(f"   answered only by a later report round (nobody to reroute at once): {len(later)}", end="")
    print(f", after {', '.join(f'{v:.0f}' for v in later)} ms" if later else "")
    print(f"   police report + activate (baseline, gRPC)   median {statistics.median(police):6.1f} ms")
    hops = _hops(at_once, reports)
    print("   where the time goes, ms (p50 / p99 / max over the incidents answered at once):")
    for hop, values in hops.items():
        print(f"     {hop:<44} {_spread(values)}")
    print(f"   target p99 < {LATENCY_TARGET_MS:.0f} ms: {'met' if p99 < LATENCY_TARGET_MS else 'NOT met'}")
    return {
        "p50_ms": p50,
        "p99_ms": p99,
        "answered": len(latencies),
        "by_later_round": len(later),
        "police_ms": statistics.median(police),
        "each_ms": latencies,
        "hops_ms": hops,
    }


HOPS = (  # (name, from, to): wall-clock marks of one incident, in order
    ("police: report + activate (gRPC)", "reported", "police_done"),
    ("incidents: activation on JetStream (outbox)", "police_done", "active_on_bus"),
    # decide_time is taken as the optimizer's handler starts: fetch, the lock, the batch before it.
    ("optimizer: fetched, its handler starts", "active_on_bus", "decided"),
    ("optimizer: decide, commit, publish (outbox)", "decided", "decision_on_bus"),
    ("twin: bus -> applied in SUMO", "decision_on_bus", "applied"),
)


def _hops(first: dict[str, dict[str, float]], reports: Reports) -> dict[str, list[float]]:
    hops: dict[str, list[float]] = {name: [] for name, _, _ in HOPS}
    for edge, marks in first.items():
        marks = {**marks, "reported": reports.reported[edge], "police_done": reports.police_done[edge]}
        for name, start, end in HOPS:
            if start in marks and end in marks:
                hops[name].append(1000 * (marks[end] - marks[start]))
    return hops


def _spread(values: list[float]) -> str:
    if not values:
        return "-"
    p50, p99 = np.percentile(values, 50), np.percentile(values, 99)
    return f"{p50:7.1f} / {p99:7.1f} / {max(values):7.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vehicles", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--incidents", type=int, default=25)
    parser.add_argument("--gap", type=float, default=4.0, help="simulated (= wall) seconds between incidents")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    import sumo  # noqa: F401  - SUMO_HOME before libsumo

    with tempfile.TemporaryDirectory() as tmp:
        spec = RunSpec(
            scenario="almere-centrum", mode="coordinated", seed=1, out_root=Path(tmp) / "sim", end_s=600, scale=0.1
        )
        results = {"decision": decision_speed(prepare(spec).network, args.vehicles, args.repeats)}
        results["latency"] = incident_latency(Path(tmp), args.incidents, args.gap)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
