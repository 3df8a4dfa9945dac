"""Speed of the twin: simulated seconds per wall second for almere-centrum, for a bare libsumo run of
the scenario (the baseline, measured in the same run), the runner (samples, incidents, KPIs), the
runner coupled to the services (field devices reporting over gRPC, signal plans from JetStream) and
the closed loop (mode coordinated: the equipped vehicles report to the optimizer every 30 simulated
seconds and get its decisions 2 simulated seconds later, the twin waiting only if they are not in
by then), first with SUMO's actuated lights, then
with the optimizer driving them (one ControlSignals stream: every simulated second the twin sends
the lane counts that changed and shows the adaptive steps the signal service applied). Targets
(TARGETS): the closed loop at most 2x the bare run's wall time, with adaptive signals at most 3x.
For the closed loop runs it also prints each process's CPU time per simulated hour (the twin, each
service): on a shared machine wall time moves with the other jobs, CPU time much less.

Run: `.venv/bin/python loadtest/bench_twin.py [--end 14400] [--scale 0.7]` (make bench-twin)."""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import psutil

from apps.coupled import import_lights, twin_callers
from apps.stack import Stack
from services.common.config import Settings
from sim.runner import RunSpec, run_many
from sim.scenarios.registry import AlmereCentrum
from sim.variants import VARIANTS

# Wall time against bare libsumo (the faster of the bare runs just before and after it), at most.
TARGETS = {"closed loop with the optimizer": 2.0, "... and its adaptive signals": 3.0}
BARE_RUNS = ("bare libsumo before the closed loop", "bare libsumo between", "bare libsumo after")
BARE = """
import sys, sumo, libsumo
from libs.sumo_tools import sumo_binary
libsumo.start([sumo_binary("sumo"), "-c", sys.argv[1], "--end", sys.argv[2], "--no-step-log", "--no-warnings",
               "--additional-files", sys.argv[3]])
while libsumo.simulation.getTime() < float(sys.argv[2]):
    libsumo.simulationStep()
libsumo.close()
"""


def timed(label: str, action: object, *, end_s: float, results: dict[str, float]) -> None:
    start = time.perf_counter()
    action()  # type: ignore[operator]
    results[label] = time.perf_counter() - start
    print(f"{label:<34} {results[label]:7.1f} s wall   {end_s / results[label]:8.0f} sim s / wall s", flush=True)


def cpu_seconds(stack: Stack) -> dict[str, float]:
    """CPU time so far of each service and of this process's finished children (the twin's run)."""
    out = {"twin": sum(resource.getrusage(resource.RUSAGE_CHILDREN)[:2])}
    for name, process in stack.processes.items():
        times = psutil.Process(process.pid).cpu_times()
        out[name] = times.user + times.system
    return out


def print_cpu(before: dict[str, float], after: dict[str, float], *, end_s: float) -> None:
    """CPU per simulated hour of each process in a run: robust where wall time is not (a shared machine)."""
    per_hour = {name: (after[name] - before[name]) * 3600 / end_s for name in after}
    busy = sorted(((s, n) for n, s in per_hour.items() if s >= 0.05), reverse=True)
    print("    CPU per simulated hour: " + ", ".join(f"{n} {s:.2f} s" for s, n in busy), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--end", type=float, default=4 * 3600)
    parser.add_argument("--scale", type=float, default=0.7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        spec = RunSpec(
            scenario="almere-centrum-incident",
            mode="none",
            seed=1,
            out_root=Path(tmp) / "sim",
            end_s=args.end,
            scale=args.scale,
        )
        # The almere-centrum files themselves (the bare runs load them): the build the runs reuse.
        scenario = AlmereCentrum(VARIANTS[spec.scenario]).build(
            spec.out_root, seed=spec.seed, scale=spec.scale, end_s=spec.end_s
        )
        print(f"almere-centrum-incident, {scenario.trips} trips, {args.end:.0f} simulated s, mode none\n")
        results: dict[str, float] = {}

        def bare(additional: str) -> Callable[[], object]:
            return lambda: subprocess.run(
                [sys.executable, "-c", BARE, str(scenario.config), str(args.end), additional],
                check=True,
                capture_output=True,
            )

        plain = bare(f"{scenario.parking},{scenario.rerouters}")
        timed("bare libsumo (baseline)", plain, end_s=args.end, results=results)
        # Rerouters on every approach and actuated lights change SUMO's own work.
        guided = f"{scenario.parking},{scenario.detectors},{scenario.guided_rerouters},{scenario.actuated}"
        timed("bare libsumo, coordinated's setup", bare(guided), end_s=args.end, results=results)
        timed("runner (samples, incident, KPIs)", lambda: run_many([spec]), end_s=args.end, results=results)
        stack = Stack(
            settings=Settings(data_dir=Path(tmp) / "stack", network_file=scenario.network, log_level="WARNING"),
            callers=twin_callers(f.operator_id for f in scenario.parking_facilities()),
        )
        stack.start()
        try:
            import_lights(stack)
            coupled = replace(spec, out_root=Path(tmp) / "coupled", services_dir=stack.data_dir)
            timed("coupled to the services", lambda: run_many([coupled]), end_s=args.end, results=results)
            loop = replace(coupled, mode="coordinated", out_root=Path(tmp) / "coordinated", adaptive_signals=False)
            lights = replace(loop, out_root=Path(tmp) / "adaptive", adaptive_signals=True)
            # Each target run between two bare runs (other jobs on a shared machine come and go): its
            # baseline is the faster of the two.
            timed(BARE_RUNS[0], plain, end_s=args.end, results=results)
            cpu_before = cpu_seconds(stack)
            timed("closed loop with the optimizer", lambda: run_many([loop]), end_s=args.end, results=results)
            print_cpu(cpu_before, cpu_seconds(stack), end_s=args.end)
            timed(BARE_RUNS[1], plain, end_s=args.end, results=results)
            cpu_before = cpu_seconds(stack)
            timed("... and its adaptive signals", lambda: run_many([lights]), end_s=args.end, results=results)
            print_cpu(cpu_before, cpu_seconds(stack), end_s=args.end)
        finally:
            stack.stop()
        timed(BARE_RUNS[2], plain, end_s=args.end, results=results)
    base = results["bare libsumo (baseline)"]
    same = results["bare libsumo, coordinated's setup"]
    print(
        f"\nratio to bare libsumo: runner {results['runner (samples, incident, KPIs)'] / base:.2f}x, "
        f"coupled {results['coupled to the services'] / base:.2f}x "
        f"(against bare libsumo with coordinated's SUMO setup: closed loop "
        f"{results['closed loop with the optimizer'] / same:.2f}x, "
        f"with adaptive signals {results['... and its adaptive signals'] / same:.2f}x)"
    )
    for (label, target), before, after in zip(TARGETS.items(), BARE_RUNS, BARE_RUNS[1:], strict=False):
        baseline = min(results[before], results[after])
        ratio = results[label] / baseline
        verdict = "met" if ratio <= target else "not met"
        print(
            f"target: {label.removeprefix('... and its ')} <= {target:.2f}x bare libsumo "
            f"(the faster bare run beside it, {baseline:.1f} s): {ratio:.2f}x, {verdict}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
