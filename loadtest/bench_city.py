"""The generated city (sim/scenarios/city) at three sizes, ~22, ~100 and ~500 traffic lights, with the
optimizer and the signal controllers IN-PROCESS (services/optimizer/inprocess.py, the decision engine
the optimizer service runs; libs/signal_control's PressureActuated, the controllers adaptive_control.py
runs in the service), no gRPC, bus or database. Per size, each part in its own process:

1. build: network, parking, demand (scale 1: 40 vehicles per light and hour, ~20,000/h at 500
   lights), routes (duarouter).
2. bare (baseline): libsumo stepping the scenario with the scripted collision, nothing else.
3. coupled: the same simulation while the controllers drive every light each second, the equipped
   half of the vehicles report to the optimizer every 30 s and get its route advice and parking
   guidance, the garages' counts reach it every minute and the police report the collision the
   moment it happens (at INCIDENT_S; the scenario's own collision is at 1200 s, moved earlier here
   to keep the benchmark short).
4. decision round (in the coupled process, after its run): the round right after the collision,
   REPEATS times on a fresh engine each: one ReportVehicles round (incident reroutes for every
   affected vehicle, parking guidance for every vehicle looking for a space, congestion rerouting)
   plus one signal-control decision for every light, on the lane counts read at that second (their
   pressure sums and spill-back checks for all lights at once, as the control loop computes them).

Prints the targets with their figures (decision round p99 < 1 s, coupled run >= 10x real time, both
at the largest size), RSS per process and how each cost grows with the size.

Run: `.venv/bin/python loadtest/bench_city.py [--sizes 22,100,500] [--repeats 20]` (make bench-city)."""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import resource
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from tqdm import tqdm

SIZES = (22, 100, 500)
HORIZON_S = 1200.0
INCIDENT_S = 900.0
DECISION_S = 30.0
COUNT_S = 60.0
EQUIPPED = 0.5
PREFIX = "bench:"
ROUND_TARGET_S = 1.0
SPEED_TARGET = 10.0  # simulated seconds per wall second


def _rss_mb() -> float:
    return float(psutil.Process().memory_info().rss) / 2**20


def _peak_mb(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # KiB on Linux


def _scenario(lights: int, out: Path) -> Any:
    from sim.scenarios import city

    return city.build(out / f"city-{lights}", lights=lights, seed=1, scale=1.0, horizon_s=HORIZON_S)


def _incident(lights: int) -> Any:
    from sim.scenarios import city

    return city.incident(city.layout.Grid.for_lights(lights), start_s=INCIDENT_S)


def _sumo_args(scenario: Any) -> list[str]:
    files = ",".join(str(f) for f in scenario.additional_files("coordinated"))
    return ["-c", str(scenario.config), "--additional-files", files, "--end", f"{HORIZON_S:.0f}", "--no-step-log",
            "--no-warnings", "--seed", "1"]  # fmt: skip


def build(lights: int, out: Path) -> dict[str, Any]:
    started = time.perf_counter()
    scenario = _scenario(lights, out)
    grid_lights = scenario.lights
    return {
        "lights": grid_lights,
        "facilities": len(scenario.parking_facilities()),
        "trips": scenario.trips,
        "per_hour": round(scenario.trips * 3600 / HORIZON_S),
        "build_s": time.perf_counter() - started,
        "build_rss_mb": _rss_mb(),
        "tools_peak_mb": _peak_mb(resource.RUSAGE_CHILDREN),  # netconvert, duarouter
    }


def bare(lights: int, out: Path) -> dict[str, Any]:
    from sim import light_driver
    from sim.incidents import ScriptedIncidents

    scenario = _scenario(lights, out)
    ls = light_driver.start(_sumo_args(scenario))
    loaded_mb = _rss_mb()
    incidents = ScriptedIncidents(ls, (_incident(lights),))
    now, started, started_cpu = 0.0, time.perf_counter(), time.process_time()
    with tqdm(total=int(HORIZON_S), desc=f"city-{lights} bare", unit="sim s", leave=False) as bar:
        while now < HORIZON_S:
            ls.simulationStep()
            now = ls.simulation.getTime()
            incidents.step(now)
            bar.update(1)
    wall, cpu = time.perf_counter() - started, time.process_time() - started_cpu
    vehicles = ls.vehicle.getIDCount()
    ls.close()
    return {"wall_s": wall, "speed": HORIZON_S / wall, "cpu_speed": HORIZON_S / cpu, "rss_loaded_mb": loaded_mb,
            "peak_mb": _peak_mb(), "vehicles_at_end": vehicles}  # fmt: skip


class _Optimizer:
    """The in-process optimizer, its facilities fed as the parking service would, and every call timed."""

    def __init__(self, graph: Any, facilities: list[Any], locations: dict[str, tuple[float, float]]) -> None:
        from services.optimizer.inprocess import InProcessOptimizer

        self.optimizer = InProcessOptimizer(graph)
        self.facilities = facilities
        self.locations = locations
        self.occupied: dict[str, int] = {}
        for f in facilities:
            self.optimizer.add_facility(
                facility_id=f.facility_id, capacity=f.capacity, entrance_edge=f.edge, location=locations[f.facility_id]
            )
        self.round_s: list[float] = []
        self.last_request: Any = None

    def count(self, occupied: dict[str, int]) -> None:
        self.occupied = occupied
        self.optimizer.count(occupied)

    def report(self, request: Any, **_: Any) -> Any:
        self.last_request = request
        started = time.perf_counter()
        reply = self.optimizer.ReportVehicles(request)
        self.round_s.append(time.perf_counter() - started)
        return reply


def _collision(optimizer: _Optimizer, edge: str) -> list[Any]:
    """The police report the collision: one lane closed, walking pace on the other."""
    from almere.incidents.v1 import incidents_pb2 as ipb

    impact = ipb.Impact(closed_lanes=[1], speed_limit_kmh=5)
    return optimizer.optimizer.incident("bench-collision", edge=edge, impact=impact)


def coupled(lights: int, out: Path, repeats: int) -> dict[str, Any]:
    from libs.signal_control import layout
    from libs.signal_control.controller import PressureActuated
    from services.optimizer.routing import RoadGraph
    from sim import light_driver, observe
    from sim.decision_applier import DecisionApplier
    from sim.incidents import ScriptedIncidents
    from sim.navigation import Navigation

    scenario = _scenario(lights, out)
    facilities = scenario.parking_facilities()
    ls = light_driver.start(_sumo_args(scenario))
    sumo_mb = _rss_mb()
    setup = time.perf_counter()
    graph = RoadGraph.from_net(scenario.network)
    optimizer = _Optimizer(graph, facilities, observe.facility_locations(ls, facilities))
    control = light_driver.DirectControl(PressureActuated(i) for i in layout.intersections(scenario.network))
    setup_s = time.perf_counter() - setup
    setup_mb = _rss_mb()
    applier = DecisionApplier(out / f"applied-{lights}.jsonl", plans=False, vehicle_prefix=PREFIX)
    navigation = Navigation(
        report_vehicles=optimizer.report,
        metadata=(),
        equipped=EQUIPPED,
        seed=1,
        prefix=PREFIX,
        walks=observe.walk_destinations(ls, scenario.walks_to()),
        areas={f.facility_id for f in facilities},
    )
    incident = _incident(lights)
    incidents = ScriptedIncidents(ls, (incident,))
    edges = [e for e in ls.edge.getIDList() if not e.startswith(":")]
    spent: Counter[str] = Counter()
    on_incident: dict[str, Any] = {}
    now, started, started_cpu = 0.0, time.perf_counter(), time.process_time()
    control.start(ls, now, False)
    with tqdm(total=int(HORIZON_S), desc=f"city-{lights} coupled", unit="sim s", leave=False) as bar:
        while now < HORIZON_S:
            t0 = time.perf_counter()
            ls.simulationStep()
            now = ls.simulation.getTime()
            incidents.step(now)
            applier.retry(ls, now)
            t1 = time.perf_counter()
            control.step(ls, now)
            t2 = time.perf_counter()
            spent["sumo"] += t1 - t0
            spent["signals"] += t2 - t1
            if now % COUNT_S == 0:
                optimizer.count({f.facility_id: ls.parkingarea.getVehicleCount(f.facility_id) for f in facilities})
            if now == INCIDENT_S:  # the police report it the moment it happens
                t3 = time.perf_counter()
                reroutes = _collision(optimizer, incident.edge)
                on_incident["on_incident_s"] = time.perf_counter() - t3
                on_incident["on_incident_reroutes"] = len(reroutes)
                for decision in reroutes:
                    applier.decide(ls, now, decision)
                lanes, near = control.loop.lanes()
                t4 = time.perf_counter()
                on_incident["snapshot"] = light_driver.read_lanes(ls, now, lanes=lanes, near=near)
                on_incident["read_all_lanes_s"] = time.perf_counter() - t4
                on_incident["controllers"] = copy.deepcopy(control.loop.controllers)
                on_incident["vehicles"] = ls.vehicle.getIDCount()
                on_incident["edge"] = incident.edge
                on_incident["occupied"] = dict(optimizer.occupied)
            if now % DECISION_S == 0:
                t5 = time.perf_counter()
                rounds_before = sum(optimizer.round_s)
                for decision in navigation.report(ls, now, edges):
                    applier.decide(ls, now, decision)
                optimizer_s = sum(optimizer.round_s) - rounds_before
                spent["optimizer"] += optimizer_s
                spent["twin: report and apply"] += time.perf_counter() - t5 - optimizer_s
                if now == INCIDENT_S:
                    on_incident["request"] = optimizer.last_request
            bar.update(1)
    wall, cpu = time.perf_counter() - started, time.process_time() - started_cpu
    load = os.getloadavg()[0]
    run_peak = _peak_mb()
    ls.close()
    applier.close()
    rounds = decision_rounds(graph, optimizer, on_incident, repeats)
    return {
        "wall_s": wall,
        "speed": HORIZON_S / wall,
        "cpu_speed": HORIZON_S / cpu,
        "run_load": load,
        "spent_s": dict(spent),
        "live_rounds_ms": [1000 * s for s in optimizer.round_s],
        "rss_sumo_mb": sumo_mb,
        "rss_setup_mb": setup_mb,
        "setup_s": setup_s,
        "peak_run_mb": run_peak,
        "peak_mb": _peak_mb(),
        "applied": applier.applied,
        "per_lever": dict(optimizer.optimizer.decisions.per_lever),
        "vehicles_at_incident": on_incident["vehicles"],
        "on_incident_ms": 1000 * on_incident["on_incident_s"],
        "on_incident_reroutes": on_incident["on_incident_reroutes"],
        "read_all_lanes_ms": 1000 * on_incident["read_all_lanes_s"],
        **rounds,
    }


def decision_rounds(graph: Any, live: _Optimizer, at: dict[str, Any], repeats: int) -> dict[str, Any]:
    """The round right after the collision, `repeats` times: a fresh engine that knows the facilities,
    their counts and the collision (not yet any vehicle), then ReportVehicles with the equipped
    vehicles as they were, plus one decision of every light's controller on the lane counts then.
    The worst case: every driver looking for a space is guided in this one round (in the live run
    most were guided in earlier rounds)."""
    from almere.optimizer.v1 import decisions_pb2 as dpb

    from libs.signal_control.pressure import PressureTable

    request, snap = at["request"], at["snapshot"]
    totals, cpu, optimizer_s, signals_s, levers = [], [], [], [], Counter[str]()
    for _ in tqdm(range(repeats), desc="decision rounds", leave=False):
        fresh = _Optimizer(graph, live.facilities, live.locations)
        fresh.count(at["occupied"])
        _collision(fresh, at["edge"])
        controllers = copy.deepcopy(at["controllers"])
        table = PressureTable(controllers)  # the control loop's, built once per set of lights
        gc.collect()  # the set-up's garbage (copies of 500 controllers) is not the round's to collect
        started, started_cpu = time.perf_counter(), time.process_time()
        reply = fresh.optimizer.ReportVehicles(request)
        middle = time.perf_counter()
        pressures = table.on(snap)  # what every light asks of the snapshot, at once (as ControlLoop does)
        for c in controllers:
            c.decide(snap, pressures)
        ended = time.perf_counter()
        cpu.append(time.process_time() - started_cpu)
        optimizer_s.append(middle - started)
        signals_s.append(ended - middle)
        totals.append(ended - started)
        levers = Counter(dpb.Lever.Name(d.lever) for d in reply.decisions)

    def pct(values: list[float], q: float) -> float:
        return 1000 * float(np.percentile(values, q))

    return {
        "round_p50_ms": pct(totals, 50),
        "round_p99_ms": pct(totals, 99),
        "round_cpu_p50_ms": pct(cpu, 50),
        "round_cpu_p99_ms": pct(cpu, 99),
        "round_load": os.getloadavg()[0],
        "round_optimizer_p50_ms": pct(optimizer_s, 50),
        "round_optimizer_p99_ms": pct(optimizer_s, 99),
        "round_signals_p50_ms": pct(signals_s, 50),
        "round_signals_p99_ms": pct(signals_s, 99),
        "round_ms": [1000 * t for t in totals],
        "round_vehicles": len(request.vehicles),
        "round_decisions": dict(levers),
        "round_lights": len(at["controllers"]),
    }


def _in_child(fn: Any, *args: Any) -> dict[str, Any]:
    """`fn` in a fresh process (libsumo: one simulation per process; RSS and peak are that process's)."""
    with ProcessPoolExecutor(1, mp_context=get_context("spawn"), max_tasks_per_child=1) as pool:
        result: dict[str, Any] = pool.submit(fn, *args).result()
        return result


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def report(results: list[dict[str, Any]]) -> None:
    print(f"\ncity-<lights>, scale 1, {HORIZON_S:.0f} simulated s, collision at {INCIDENT_S:.0f} s; optimizer and "
          f"controllers in-process; {EQUIPPED:.0%} equipped, reporting every {DECISION_S:.0f} s")  # fmt: skip
    print("\n1. the size")
    print(f"{'lights':>7}{'facilities':>11}{'veh/h':>8}{'in network':>11}{'reported':>9}{'build s':>8}")
    for r in results:
        print(f"{r['lights']:>7}{r['facilities']:>11}{r['per_hour']:>8}{r['vehicles_at_incident']:>11}"
              f"{r['round_vehicles']:>9}{r['build_s']:>8.1f}")  # fmt: skip
    print("\n2. one decision round after the collision (fresh engine each time; p50 / p99 ms)")
    print(f"{'lights':>7}{'optimizer':>18}{'signals (all)':>18}{'round':>18}{'round CPU':>18}   decisions")
    for r in results:
        levers = ", ".join(f"{k.removeprefix('LEVER_').lower()} {v}" for k, v in sorted(r["round_decisions"].items()))
        print(f"{r['lights']:>7}{r['round_optimizer_p50_ms']:>9.0f} /{r['round_optimizer_p99_ms']:>6.0f}"
              f"{r['round_signals_p50_ms']:>10.0f} /{r['round_signals_p99_ms']:>6.0f}"
              f"{r['round_p50_ms']:>10.0f} /{r['round_p99_ms']:>6.0f}"
              f"{r['round_cpu_p50_ms']:>10.0f} /{r['round_cpu_p99_ms']:>6.0f}   {levers}")  # fmt: skip
    print(f"   each round at {results[-1]['lights']} lights (ms): "
          + ", ".join(f"{t:.0f}" for t in results[-1]["round_ms"]))  # fmt: skip
    print(
        "   police report -> incident reroutes at once (on_incident):  "
        + ", ".join(f"{r['lights']}: {r['on_incident_ms']:.0f} ms / {r['on_incident_reroutes']}" for r in results)
    )
    print("   live rounds in the coupled run (p50 / p99 ms):  "
          + ", ".join(f"{r['lights']}: {np.percentile(r['live_rounds_ms'], 50):.0f} / "
                      f"{np.percentile(r['live_rounds_ms'], 99):.0f}" for r in results))  # fmt: skip
    print("\n3. speed: simulated s per wall s")
    print(f"{'lights':>7}{'bare SUMO':>11}{'coupled':>9}{'coupled/bare':>13}{'per CPU s: bare':>16}{'coupled':>9}"
          "   coupled wall time by part (s)")  # fmt: skip
    for r in results:
        parts = ", ".join(f"{k} {v:.1f}" for k, v in r["spent_s"].items())
        print(f"{r['lights']:>7}{r['bare_speed']:>11.1f}{r['speed']:>9.1f}{r['bare_speed'] / r['speed']:>12.2f}x"
              f"{r['bare_cpu_speed']:>16.1f}{r['cpu_speed']:>9.1f}   {parts}")  # fmt: skip
    print("\n4. memory (RSS, MB)")
    print(f"{'lights':>7}{'tools peak':>11}{'bare peak':>10}{'coupled: SUMO':>14}{'+optimizer+ctl':>15}{'peak':>7}")
    for r in results:
        print(f"{r['lights']:>7}{r['tools_peak_mb']:>11.0f}{r['bare_peak_mb']:>10.0f}{r['rss_sumo_mb']:>14.0f}"
              f"{r['rss_setup_mb']:>15.0f}{r['peak_mb']:>7.0f}")  # fmt: skip
    print(f"   this (orchestrating) process: {_rss_mb():.0f} MB")
    first = results[0]
    print(f"\n5. growth against {first['lights']} lights (x; medians of CPU time, robust to other jobs' load)")
    print(f"{'lights':>7}{'vehicles':>9}{'round':>7}{'optimizer':>10}{'signals':>8}{'CPU s/sim s':>12}{'RSS':>6}")
    for r in results:
        print(f"{r['lights'] / first['lights']:>7.1f}{r['vehicles_at_incident'] / first['vehicles_at_incident']:>9.1f}"
              f"{r['round_cpu_p50_ms'] / first['round_cpu_p50_ms']:>7.1f}"
              f"{r['round_optimizer_p50_ms'] / first['round_optimizer_p50_ms']:>10.1f}"
              f"{r['round_signals_p50_ms'] / max(first['round_signals_p50_ms'], 1e-3):>8.1f}"
              f"{first['cpu_speed'] / r['cpu_speed']:>12.1f}{r['peak_mb'] / first['peak_mb']:>6.1f}")  # fmt: skip
    last = results[-1]
    print(f"\ntargets at {last['lights']} lights:")
    print(f"   decision round p99 < {1000 * ROUND_TARGET_S:.0f} ms: {last['round_p99_ms']:.0f} ms wall, "
          f"{_met(last['round_p99_ms'] < 1000 * ROUND_TARGET_S)}; CPU time p99 {last['round_cpu_p99_ms']:.0f} ms, "
          f"{_met(last['round_cpu_p99_ms'] < 1000 * ROUND_TARGET_S)} (load average {last['round_load']:.1f} "
          "on this machine then: wall time counts the other jobs' turns on the cores)")  # fmt: skip
    print(f"   coupled run >= {SPEED_TARGET:.0f}x real time: {last['speed']:.1f}x wall "
          f"(bare SUMO {last['bare_speed']:.1f}x, the same run), {_met(last['speed'] >= SPEED_TARGET)}; "
          f"per CPU second {last['cpu_speed']:.1f}x (bare {last['bare_cpu_speed']:.1f}x), "
          f"{_met(last['cpu_speed'] >= SPEED_TARGET)} (load average {last['run_load']:.1f})")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="traffic lights per city, comma list")
    parser.add_argument("--repeats", type=int, default=20, help="decision rounds per size (p99 over these)")
    parser.add_argument("--out", type=Path, help="keep the builds here (default: a temporary folder)")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        for lights in tqdm(sizes, desc="bench-city", unit="size"):
            row = _in_child(build, lights, out)
            base = _in_child(bare, lights, out)
            row |= {f"bare_{k}": base[k] for k in ("speed", "cpu_speed", "peak_mb", "wall_s")}
            row |= _in_child(coupled, lights, out, args.repeats)
            results.append(row)
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
