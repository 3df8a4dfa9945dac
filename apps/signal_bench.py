"""`almere sim bench-signals`: fixed time (the network's own programs), SUMO's actuated control,
max-pressure and ours on the RESCO networks and on almere-centrum (our own schematic city centre,
built by code), several seeds, no teleports, with RESCO's delay (timeLoss + departDelay over every
scheduled vehicle, unfinished and never-inserted included). Stress: the map's demand scaled
(`--scales`, SUMO's `--scale`), a gridlock verdict per run, and the issue's targets checked per map
and scale in a summary."""

from __future__ import annotations

import argparse
import csv
import json
import os
import tempfile
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from apps.coupled import adaptive_stack
from libs.signal_control import layout
from libs.signal_control.controller import COORDINATED, PressureActuated
from libs.signal_control.maxpressure import MaxPressure
from sim import light_driver
from sim.adaptive_signals import ServiceControl
from sim.scenarios import resco

CONTROLLERS = ("fixed", "actuated", "maxpressure", "ours", "coordinated")
DEFAULT_CONTROLLERS = CONTROLLERS[:4]
DEFAULT_MAPS = "cologne8,ingolstadt21"
ACTUATED_MIN_S, ACTUATED_MAX_S = 5.0, 50.0  # for green phases the network gives no bounds
ALMERE = "almere-centrum"
ALMERE_SCALE, ALMERE_HORIZON_S = 0.7, 3600.0  # the scenario's default demand, its first hour
MAPS = (*resco.NETWORKS, ALMERE)
# Issue 21: at x1.0, ours <= 0.90x the best published learner's delay ratio on every seed.
TARGET_RATIO = {"cologne1": 0.41, "cologne8": 0.31, "ingolstadt1": 0.48, "ingolstadt21": 0.41}


@dataclass(frozen=True, kw_only=True)
class BenchRun:
    map: str
    controller: str
    seed: int
    end_s: float | None
    out: Path
    scale: float = 1.0  # the map's demand times this (SUMO's --scale)
    # Through the services: the optimizer's address and the twin's token (ours only).
    via: tuple[str, str] | None = None


@dataclass(frozen=True, kw_only=True)
class BenchMap:
    """What a run needs of a map: its SUMO config, network and scheduled vehicles; `additional`: files
    every run loads (given on the command line, they replace the config's own); `actuated`: the
    network's programs as SUMO actuated programs (None: derived from the network here)."""

    name: str
    config: Path
    network: Path
    begin: float
    end: float
    scheduled: int
    additional: tuple[Path, ...] = ()
    actuated: Path | None = None


def bench_map(name: str, out: Path, seed: int) -> BenchMap:
    """A RESCO network (found in the sumo-rl package) or almere-centrum (built once per seed into
    `out/almere-centrum/scenario`, reused by later runs: build all seeds before running in parallel)."""
    if name == ALMERE:
        from sim.scenarios import almere_centrum

        scenario = almere_centrum.build(
            out / ALMERE / "scenario", seed=seed, scale=ALMERE_SCALE, horizon_s=ALMERE_HORIZON_S
        )
        scheduled = sum(1 for e in ET.parse(scenario.routes).getroot() if e.tag in ("vehicle", "trip"))  # noqa: S314
        return BenchMap(
            name=ALMERE,
            config=scenario.config,
            network=scenario.network,
            begin=0.0,
            end=scenario.horizon_s,
            scheduled=scheduled,
            additional=(scenario.parking, scenario.rerouters),  # parking search as drivers who know nothing
            actuated=scenario.actuated,
        )
    found = resco.locate(name)
    return BenchMap(
        name=name,
        config=found.config,
        network=found.network,
        begin=found.begin,
        end=found.end,
        scheduled=resco.scheduled_vehicles(found),
    )


def sumo_args(
    bench: BenchMap, controller: str, *, seed: int, stop: float, folder: Path, scale: float = 1.0
) -> list[str]:
    """Command line of one run (without binary and outputs): no teleports (a jam stays a jam and
    shows as one); demand times `scale`; for `actuated` the actuated programs are loaded last, so
    they are the ones that run."""
    args = ["-c", str(bench.config), "--seed", str(seed), "--end", f"{stop:.0f}", "--time-to-teleport", "-1",
            "--scale", f"{scale:g}", "--no-step-log", "--no-warnings"]  # fmt: skip
    additional = list(bench.additional)
    if controller == "actuated":
        additional.append(bench.actuated or actuated_programs(bench.network, folder / "actuated.add.xml"))
    if additional:
        args += ["--additional-files", ",".join(str(a) for a in additional)]
    return args


def actuated_programs(network: Path, target: Path) -> Path:
    """The network's programs as SUMO actuated programs (same phases; greens get min/max bounds),
    as an additional file: the program loaded last is the one that runs."""
    import sumo  # noqa: F401
    import sumolib

    net = sumolib.net.readNet(str(network), withPrograms=True, withInternal=False)
    root = ET.Element("additional")
    for tls in net.getTrafficLights():
        programs = tls.getPrograms()
        program = programs[sorted(programs)[0]]
        logic = ET.SubElement(root, "tlLogic", id=tls.getID(), type="actuated", programID="actuated", offset="0")
        for phase in program.getPhases():
            attrs = {"duration": f"{phase.duration:g}", "state": phase.state}
            if any(c in "Gg" for c in phase.state) and not any(c in "yY" for c in phase.state):
                low = phase.minDur if phase.minDur and phase.minDur > 0 else ACTUATED_MIN_S
                high = phase.maxDur if phase.maxDur and phase.maxDur > 0 else ACTUATED_MAX_S
                attrs |= {"minDur": f"{min(low, phase.duration):g}", "maxDur": f"{max(high, phase.duration):g}"}
            ET.SubElement(logic, "phase", attrs)
    ET.ElementTree(root).write(target)
    return target


def control(name: str, network: Path, via: tuple[str, str] | None = None) -> Any:
    """Who drives the lights: the optimizer through the signal service (`via`: its address and the
    twin's token), in-process controllers, or (None) the network's own programs."""
    if via is not None:
        from almere.optimizer.v1 import optimizer_pb2_grpc

        from services.common.channels import open_blocking_channel
        from services.common.config import Settings

        # The stack's TLS comes from the same environment (adaptive_stack's Settings).
        stub = optimizer_pb2_grpc.OptimizerServiceStub(open_blocking_channel(Settings(), via[0]))
        return ServiceControl(stub, (("authorization", f"Bearer {via[1]}"),))
    kinds: dict[str, Any] = {
        "maxpressure": MaxPressure,
        "ours": PressureActuated,
        "coordinated": lambda i: PressureActuated(i, COORDINATED),
    }
    if name not in kinds:
        return None
    return light_driver.DirectControl(kinds[name](i) for i in layout.intersections(network))


def run_one(run: BenchRun) -> dict[str, Any]:
    """One run, in its own process (libsumo: one simulation per process)."""
    os.nice(5)
    started = time.monotonic()
    scenario = bench_map(run.map, run.out, run.seed)
    folder = run.out / run.map
    folder.mkdir(parents=True, exist_ok=True)
    tripinfo = folder / f"{run.controller}-seed{run.seed}-x{run.scale:g}.tripinfo.xml"
    stop = scenario.end if run.end_s is None else scenario.begin + run.end_s
    args = sumo_args(scenario, run.controller, seed=run.seed, stop=stop, folder=folder, scale=run.scale)
    args += ["--tripinfo-output", str(tripinfo), "--tripinfo-output.write-unfinished",
             "--tripinfo-output.write-undeparted"]  # fmt: skip
    ls = light_driver.start(args)
    driver = control(run.controller, scenario.network, run.via)
    try:
        stats = light_driver.run(ls, stop, driver)
    finally:
        ls.close()
    result = {
        "map": run.map,
        "controller": run.controller,
        "seed": run.seed,
        "scale": run.scale,
        **resco.measure(tripinfo, round(scenario.scheduled * run.scale)),
        "gridlock": stats.gridlock_at is not None,
        "gridlock_at_s": stats.gridlock_at,
        "longest_wait_s": stats.longest_wait_s,
        "teleports": stats.teleports,
        "wall_s": time.monotonic() - started,
        "cpu_s": time.process_time(),  # this process ran this run only (max_tasks_per_child=1)
        "via": "services" if run.via else "direct",
        # through the services: lights whose step the signal service refused (they froze)
        "refused": driver.refused if isinstance(driver, ServiceControl) else [],
    }
    return result


def record_states(
    map_name: str, controller: str, end_s: float, *, seed: int = 1, via: tuple[str, str] | None = None
) -> dict[str, Any]:
    """A short run that keeps every light's shown states as SUMO reports them (for validation),
    in this process: call it in a fresh one (libsumo). `via`: see `control`."""
    folder = Path(tempfile.mkdtemp(prefix="bench-signals-"))
    scenario = bench_map(map_name, folder, seed)
    stop = scenario.begin + end_s
    ls = light_driver.start(sumo_args(scenario, controller, seed=seed, stop=stop, folder=folder))
    try:
        stats = light_driver.run(ls, stop, control(controller, scenario.network, via), record=True)
    finally:
        ls.close()
    return {"histories": stats.histories, "end": stop, "longest_wait_s": stats.longest_wait_s}


def _runs(args: argparse.Namespace) -> list[BenchRun]:
    maps = [m.strip() for m in args.maps.split(",") if m.strip()]
    names = [c.strip() for c in args.controllers.split(",") if c.strip()]
    unknown = [c for c in names if c not in CONTROLLERS]
    if unknown:
        raise SystemExit(f"unknown controller(s) {', '.join(unknown)}; known: {', '.join(CONTROLLERS)}")
    unknown = [m for m in maps if m not in MAPS]
    if unknown:
        raise SystemExit(f"unknown map(s) {', '.join(unknown)}; known: {', '.join(MAPS)}")
    for m in maps:
        if m != ALMERE:
            resco.locate(m)  # the sumo-rl package is there
    if "fixed" not in names:
        names.insert(0, "fixed")  # the ratio needs it
    try:
        scales = [float(x) for x in args.scales.split(",") if x.strip()]
    except ValueError:
        raise SystemExit(f"--scales: a comma list of numbers, not {args.scales!r}") from None
    if not scales or any(x <= 0 for x in scales):
        raise SystemExit("--scales: positive numbers")
    first = args.first_seed
    return [
        BenchRun(map=m, controller=c, seed=s, end_s=args.end, out=args.out, scale=x)
        for x in scales
        for m in maps
        for s in range(first, first + args.seeds)
        for c in names
    ]


def _ratio(r: dict[str, Any], fixed: dict[tuple[str, float, int], float]) -> float | None:
    """Delay over fixed time's on the same map, scale and seed."""
    base = fixed.get((r["map"], r["scale"], r["seed"]))
    return r["delay_s"] / base if base else None


def _fixed(results: list[dict[str, Any]]) -> dict[tuple[str, float, int], float]:
    return {(r["map"], r["scale"], r["seed"]): r["delay_s"] for r in results if r["controller"] == "fixed"}


def _table(results: list[dict[str, Any]]) -> str:
    """stuck300: some car stood still for 300 s at once (no teleports): gridlock, or a queue that
    long. The ratio divides by fixed time's delay on the same seed."""
    lines = []
    fixed = _fixed(results)
    order = {c: float(i) for i, c in enumerate(CONTROLLERS)}
    # ours through the services: its own rows, after in-process ours
    results = [r | {"controller": f"{r['controller']}/svc"} if r["via"] == "services" else r for r in results]
    order |= {f"{c}/svc": i + 0.5 for c, i in order.items()}
    for name, scale in dict.fromkeys((r["map"], r["scale"]) for r in results):
        lines.append(f"\n{name} x{scale:g}")
        lines.append(f"{'controller':<12}{'seed':>5}{'delay s':>10}{'trip s':>9}{'wait s':>9}{'unfin':>7}"
                     f"{'telep':>7}{'stuck300':>10}{'ratio':>8}")  # fmt: skip
        rows = sorted(
            (r for r in results if (r["map"], r["scale"]) == (name, scale)),
            key=lambda r: (order[r["controller"]], r["seed"]),
        )
        for r in rows:
            ratio = _ratio(r, fixed)
            lines.append(
                f"{r['controller']:<12}{r['seed']:>5}{r['delay_s']:>10.1f}{r['trip_time_s']:>9.1f}"
                f"{r['waiting_time_s']:>9.1f}{r['vehicles_unfinished']:>7}{r['teleports']:>7}"
                f"{'yes' if r['gridlock'] else 'no':>10}{'-' if ratio is None else f'{ratio:.3f}':>8}"
            )
        for controller in dict.fromkeys(r["controller"] for r in rows):
            mine = [r for r in rows if r["controller"] == controller]
            ratios = [x for x in (_ratio(r, fixed) for r in mine) if x is not None]
            mean = sum(r["delay_s"] for r in mine) / len(mine)
            worst = f"{max(ratios):.3f}" if ratios else "-"
            lines.append(f"{'mean ' + controller:<17}{mean:>10.1f}   worst ratio {worst}")
    return "\n".join(lines)


def _summary(results: list[dict[str, Any]]) -> tuple[str, list[str]]:
    """Per map and scale, per controller (in-process runs): worst and mean ratio to fixed time and
    gridlocked runs; then the issue's targets, each met or not. Returns the text and the unmet ones."""
    fixed = _fixed(results)
    direct = [r for r in results if r["via"] == "direct"]
    lines = [f"\n{'summary':<22}{'controller':<13}{'runs':>5}{'worst':>8}{'mean':>8}{'gridlocked':>12}"]
    mean_ratio: dict[tuple[str, float, str], float] = {}
    for name, scale in sorted(dict.fromkeys((r["map"], r["scale"]) for r in direct), key=lambda k: (k[1], k[0])):
        here = [r for r in direct if (r["map"], r["scale"]) == (name, scale)]
        for controller in (c for c in CONTROLLERS if any(r["controller"] == c for r in here)):
            mine = [r for r in here if r["controller"] == controller]
            ratios = [x for x in (_ratio(r, fixed) for r in mine) if x is not None]
            if ratios:
                mean_ratio[(name, scale, controller)] = sum(ratios) / len(ratios)
            worst = f"{max(ratios):.3f}" if ratios else "-"
            mean = f"{sum(ratios) / len(ratios):.3f}" if ratios else "-"
            jammed = sum(1 for r in mine if r["gridlock"])
            lines.append(f"  {name + ' x' + format(scale, 'g'):<20}{controller:<13}{len(mine):>5}{worst:>8}{mean:>8}"
                         f"{jammed:>12}")  # fmt: skip
    unmet: list[str] = []
    checks: list[tuple[str, bool]] = []
    ours = [r for r in direct if r["controller"] == "ours"]
    if ours:
        locked = [f"{r['map']} x{r['scale']:g} seed {r['seed']}" for r in ours if r["gridlock"]]
        checks.append((f"ours: zero gridlock ({len(ours)} runs)" + (f"; locked: {', '.join(locked)}" if locked else ""),
                       not locked))  # fmt: skip
    for name, bound in TARGET_RATIO.items():
        ratios = [x for x in (_ratio(r, fixed) for r in ours if r["map"] == name and r["scale"] == 1.0) if x]
        if ratios:
            checks.append((f"{name} x1: ours <= {bound} on every seed (worst {max(ratios):.3f})", max(ratios) <= bound))
    for (name, scale, controller), ratio in sorted(mean_ratio.items()):
        if controller != "ours" or scale == 1.0:
            continue
        for rival in ("maxpressure", "actuated"):
            theirs = mean_ratio.get((name, scale, rival))
            if theirs is not None:
                checks.append((f"{name} x{scale:g}: ours <= {rival} (mean ratio {ratio:.3f} vs {theirs:.3f})",
                               ratio <= theirs))  # fmt: skip
    if checks:
        lines.append("\ntargets (issue 21):")
        for text, met in checks:
            lines.append(f"  {'met    ' if met else 'NOT MET'}  {text}")
            if not met:
                unmet.append(text)
    return "\n".join(lines), unmet


def _through_services(results: list[dict[str, Any]]) -> str:
    """PressureActuated in the optimizer (each step applied by the signal service) against
    ours in-process: the same delay (the same phase sequences), and what the services cost."""
    direct = {
        (r["map"], r["scale"], r["seed"]): r for r in results if r["controller"] == "ours" and r["via"] == "direct"
    }
    lines = [
        "\nours through the services (one ControlSignals stream, steps applied by the signal service) vs in-process:"
    ]
    for r in (r for r in results if r["via"] == "services"):
        base = direct[(r["map"], r["scale"], r["seed"])]
        same = (
            "same delay" if r["delay_s"] == base["delay_s"] else f"delay {r['delay_s']:.1f} vs {base['delay_s']:.1f} s"
        )
        lines.append(
            f"  {r['map']:<15} x{r['scale']:g} seed {r['seed']}: {same}, wall time {r['wall_s'] / base['wall_s']:.1f}x"
        )
    return "\n".join(lines)


def bench(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    runs = _runs(args)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    for m, seed in dict.fromkeys((r.map, r.seed) for r in runs):
        if m == ALMERE:
            bench_map(m, args.out, seed)  # built here once, not by parallel runs at the same time
    # Through the services: ours again, in the optimizer (the direct run is the baseline).
    through = [r for r in runs if args.via == "services" and r.controller == "ours"]
    results: list[dict[str, Any]] = []
    workers = max(1, min(args.workers, len(runs)))
    with (
        ProcessPoolExecutor(workers, mp_context=get_context("spawn"), max_tasks_per_child=1) as pool,
        tqdm(total=len(runs) + len(through), desc="bench-signals", unit="run") as bar,
    ):
        futures = [pool.submit(run_one, r) for r in runs]
        for future in futures:
            future.add_done_callback(lambda _: bar.update())
        # One run at a time, each on a fresh stack (a new city: no light holds an earlier run's
        # step), while the direct runs go on beside them.
        for r in through:
            folder = args.out / r.map / f"services-seed{r.seed}"
            with adaptive_stack(bench_map(r.map, args.out, r.seed).network, folder) as via:
                results.append(pool.submit(run_one, replace(r, via=via)).result())
                bar.update()
        results += [future.result() for future in as_completed(futures)]
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    with (args.out / "results.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(results[0]))
        writer.writeheader()
        writer.writerows(results)
    print(_table(results))
    if through:
        print(_through_services(results))
    summary, _ = _summary(results)
    print(summary)
    print(f"\n{len(results)} runs in {time.monotonic() - started:.0f} s wall time ({workers} workers)")
    print(f"\nresults: {args.out / 'results.json'}, {args.out / 'results.csv'}")
    refused = sorted({name for r in results for name in r["refused"]})
    if refused:
        print(f"\nthe signal service refused steps at {', '.join(refused)}: see the optimizer's log")
    # Baselines may jam (that is what they are measured for); ours must not, nor have steps refused.
    return 1 if refused or any(r["gridlock"] for r in results if r["controller"] == "ours") else 0


def add_parser(sub: Any) -> None:
    """Register `bench-signals` on a subparsers object (`almere sim ...`)."""
    p = sub.add_parser("bench-signals", help="compare signal controllers on real networks (no teleports)")
    p.add_argument("--maps", default=DEFAULT_MAPS, help=f"comma list of {', '.join(MAPS)} (default {DEFAULT_MAPS})")
    p.add_argument("--seeds", type=int, default=3, help="how many seeds, from --first-seed on (default 3)")
    p.add_argument("--first-seed", type=int, default=1, help="the first seed (default 1)")
    p.add_argument(
        "--scales",
        default="1.0",
        help="comma list of demand scales, each run at every one (SUMO's --scale; e.g. 1.0,1.25,1.5; default 1.0)",
    )
    p.add_argument(
        "--controllers",
        default=",".join(DEFAULT_CONTROLLERS),
        help=f"comma list of {', '.join(CONTROLLERS)} (coordinated: ours holding greens for platoons released up "
        "the road; default: all but coordinated); fixed always runs (ratios)",
    )
    p.add_argument("--out", type=Path, default=Path("data/sim/bench-signals"))
    p.add_argument("--end", type=float, default=None, help="simulated seconds (default: the map's RESCO config)")
    p.add_argument("--workers", type=int, default=2, help="parallel runs (default 2)")
    p.add_argument(
        "--via",
        choices=("direct", "services"),
        default="direct",
        help="ours in this process (direct, fast) or in the optimizer through the signal service",
    )
    p.set_defaults(func=bench)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="signal_bench")
    add_parser(parser.add_subparsers(required=True))
    args = parser.parse_args(["bench-signals", *(argv or [])])
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main(__import__("sys").argv[1:]))
