"""Demo scene 4: the SUMO digital twin of Almere's centre, an hour of the incident morning in modes
none and sumo, coupled to the services (garage counters, police, detectors, signal plans)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sim.coupled import run_with_stack
from sim.report import write
from sim.runner import RunSpec

ROWS = ["| delay,", "| visitors door-to-door", "| visitors > 5 min", "| CO2"]


def play(out: Path, say: Callable[[str], None]) -> bool:
    specs = [RunSpec("almere-centrum-incident", mode, 1, out, end_s=3600, scale=0.7) for mode in ("none", "sumo")]
    runs = run_with_stack(specs, say=lambda text: None)
    report = write(runs, out / "report")
    table = report.read_text().splitlines()
    for line in table[2:6] + [row for row in table if row.startswith(tuple(ROWS))]:
        say(line)
    devices = [(run / "devices.json").read_text() for run in runs]
    say(f"[twin] field devices per run: {'; '.join(devices)}")
    say(f"[twin] report with plots: {report}")
    return all('"occupancy_reports": 0' not in d for d in devices)
