"""Demo scene 4, the main one: the SUMO digital twin of Almere's centre on the incident + event
morning (a collision on the Stadsdreef, a festival filling the garages by the Forum), four simulated
hours in modes none, sumo and coordinated, three seeds each; the KPI table, the optimizer's targets
and a report with plots."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from apps.coupled import run_modes
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


def play(out: Path, say: Callable[[str], None], *, seeds: int = 3, end_s: float = 4 * 3600) -> bool:
    specs = [
        RunSpec(scenario=SCENARIO, mode=mode, seed=seed, out_root=out, end_s=end_s, scale=0.7)
        for mode in MODES
        for seed in range(1, seeds + 1)
    ]
    say(f"[twin] {len(specs)} runs of {end_s / 3600:g} simulated hours: baselines two at a time, then coordinated")
    started = time.monotonic()
    runs = run_modes(specs, say=lambda text: None)
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
