"""Demo scene 4, the main one: the SUMO digital twin of Almere's centre on the incident + event
morning (a collision on the Stadsdreef at 07:30, a festival filling the garages by the Forum from
08:30) in modes none, sumo and coordinated; the KPI table, the optimizer's targets and a report with
plots. By default one seed over three simulated hours (the incident and the event's busiest hour, in
under 10 minutes on 2 cores); `full` is the README's table: three seeds over four hours."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from apps.coupled import reopen_stack, run_modes
from apps.stack import Stack
from sim.report import write
from sim.runner import MODES, RunSpec

SCENARIO = "almere-centrum-incident-event"
ROWS = (
    "| mean travel time",
    "| delay,",
    "| visitors: depart",
    "| visitors > 5 min",
    "| visitors door-to-door",
    "| visitors who never parked",
    "| vehicles that met",
    "| delay of vehicles that met",
    "| ... of those equipped",
    "| CO2",
    "| teleports",
)


def specs_of(out: Path, *, full: bool) -> list[RunSpec]:
    seeds, end_s = (3, 4 * 3600) if full else (1, 3 * 3600)
    return [
        RunSpec(scenario=SCENARIO, mode=mode, seed=seed, out_root=out, end_s=end_s, scale=0.7)
        for mode in MODES
        for seed in range(1, seeds + 1)
    ]


def coordinated_stack(out: Path, *, full: bool) -> Stack:
    """The stack of the (first) coordinated run again, for the dashboard after the demo."""
    spec = next(s for s in specs_of(out, full=full) if s.mode == "coordinated")
    return reopen_stack(spec, stack_dir=out / ("stack-1" if full else "stack"))


def play(out: Path, say: Callable[[str], None], *, full: bool = False) -> bool:
    specs = specs_of(out, full=full)
    seeds, end_s = len({s.seed for s in specs}), specs[0].end_s
    how = (
        "seeds 1-3: each seed's coordinated run on a stack of its own, side by side, the baselines beside them"
        if full
        else "seed 1: the coordinated one with the stack, the baselines beside it (--full: three seeds, four hours)"
    )
    say(f"[twin] {len(specs)} runs of {end_s / 3600:g} simulated hours, {how}")
    started = time.monotonic()

    def live(text: str) -> None:  # of each coordinated stack's description, where to watch it
        for line in text.splitlines():
            if line.startswith("dashboard:"):
                say(f"[twin] watch the coordinated run live: {line.removeprefix('dashboard: ')}")

    runs = run_modes(specs, say=live, stacks=seeds)
    report = write(runs, out / "report")
    say(f"[twin] {len(runs)} runs in {time.monotonic() - started:.0f} s wall")
    table = report.read_text().splitlines()
    targets = table.index(next(line for line in table if line.startswith("## Targets")))
    for line in table[2:4] + [row for row in table[:targets] if row.startswith(ROWS)] + table[targets:]:
        if line.startswith("!["):
            break
        say(line)
    devices = [json.loads((run / "devices.json").read_text()) for run in runs if (run / "devices.json").exists()]
    applied = sum(d["decisions_applied"] for d in devices)
    say(f"[twin] coordinated runs: {applied} decisions of the optimizer applied to SUMO vehicles")
    say(f"[twin] report with plots: {report}")
    return bool(devices) and all(d["occupancy_reports"] > 0 and d["vehicle_reports"] > 0 for d in devices)
