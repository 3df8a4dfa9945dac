"""`almere sim report`: a side-by-side table over modes and seeds (mean ± spread) and PNG plots over
time (network speed, halting vehicles, garage occupancy) and of travel times."""

from __future__ import annotations

import csv
import json
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no screen
import matplotlib.pyplot as plt
import numpy as np

from sim import kpis, targets

TABLE_ROWS = [
    ("travel_time_s.mean", "mean travel time (s)"),
    ("travel_time_s.p95", "p95 travel time (s)"),
    ("delay_s.mean", "delay, timeLoss + departDelay (s)"),
    ("waiting_time_s.mean", "waiting time (s)"),
    ("visitor_time_to_park_s.mean", "visitors: depart to parked (s)"),
    ("visitors_over_5_min_to_park", "visitors > 5 min to park"),
    ("parking_search_s.mean", "parking search: entering the centre to parked (s)"),
    ("parking_search_m.mean", "parking search distance (m)"),
    ("door_to_door_s.mean", "visitors door-to-door: drive + search + walk (s)"),
    ("walk_m.mean", "visitors' walk from facility (m)"),
    ("never_parked", "visitors who never parked"),
    ("vehicles_finished", "vehicles finished"),
    ("vehicles_unfinished", "vehicles unfinished"),
    ("never_departed", "never departed"),
    ("incident_vehicles", "vehicles that met the incident"),
    ("incident_vehicles_delay_s.mean", "delay of vehicles that met the incident (s)"),
    ("incident_equipped_delay_s.mean", "... of those equipped with route guidance (s)"),
    ("responder_travel_time_s.mean", "responders: dispatch to the scene (s)"),
    ("co2_kg", "CO2 (kg)"),
    ("throughput_per_hour", "throughput (veh/h)"),
    ("teleports", "teleports"),
]


def _load(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, float]]]:
    config = json.loads((run_dir / "config.json").read_text())
    result = kpis.flatten(json.loads((run_dir / "kpis.json").read_text()))
    with (run_dir / "timeseries.csv").open() as f:
        series = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]
    return config, result, series


def _cell(values: list[Any]) -> str:
    numbers = [v for v in values if isinstance(v, (int, float))]
    if not numbers:
        return "-"
    mean, spread = float(np.mean(numbers)), float(np.std(numbers))
    return f"{mean:.1f} ± {spread:.1f}" if len(numbers) > 1 else f"{mean:.1f}"


def write(run_dirs: list[Path], out_dir: Path) -> Path:
    """Write report.md and the plots into out_dir; return the report's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    groups: dict[str, list[tuple[dict[str, Any], list[dict[str, float]]]]] = defaultdict(list)
    by_mode: dict[str, dict[str, dict[int, dict[str, Any]]]] = defaultdict(lambda: defaultdict(dict))
    for run_dir in run_dirs:
        config, result, series = _load(run_dir)
        groups[f"{config['scenario']} / {config['mode']}"].append((result, series))
        by_mode[config["scenario"]][config["mode"]][config["seed"]] = result
    labels = sorted(groups)
    lines = [
        f"# Simulation report ({len(run_dirs)} runs)",
        "",
        "| KPI | " + " | ".join(f"{label} (n={len(groups[label])})" for label in labels) + " |",
        "|---|" + "---|" * len(labels),
    ]
    for key, title in TABLE_ROWS:
        lines.append(
            f"| {title} | " + " | ".join(_cell([r.get(key) for r, _ in groups[label]]) for label in labels) + " |"
        )
    for scenario, modes in sorted(by_mode.items()):
        measured = targets.measure(modes)
        if measured:
            lines += ["", f"## Targets: {scenario}", "", *targets.table(measured)]
    plots = {
        "speed.png": ("mean_speed_mps", "mean vehicle speed (m/s)"),
        "halting.png": ("halting", "halting vehicles"),
        "occupancy.png": ("parked", "vehicles parked in all facilities"),
    }
    for name, (column, ylabel) in plots.items():
        fig, ax = plt.subplots(figsize=(8, 4))
        for label in labels:
            runs = [series for _, series in groups[label]]
            length = min(len(s) for s in runs)
            times = [row["time_s"] / 60 for row in runs[0][:length]]
            values = np.mean([[_value(row, column) for row in s[:length]] for s in runs], axis=0)
            ax.plot(times, values, label=label)
        ax.set_xlabel("simulated minutes")
        ax.set_ylabel(ylabel)
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=100)
        plt.close(fig)
    _travel_time_plot(run_dirs, out_dir / "travel_time.png")
    lines += [
        "",
        "![mean speed](speed.png)",
        "![halting vehicles](halting.png)",
        "![parked](occupancy.png)",
        "![travel time](travel_time.png)",
    ]
    report = out_dir / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report


def _travel_time_plot(run_dirs: list[Path], path: Path, bin_s: float = 300) -> None:
    """Mean travel time of the trips finishing in each 5-minute window, per scenario and mode."""
    by_label: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run_dir in run_dirs:
        config = json.loads((run_dir / "config.json").read_text())
        label = f"{config['scenario']} / {config['mode']}"
        for info in ET.parse(run_dir / "tripinfo.xml").getroot().iter("tripinfo"):  # noqa: S314
            arrival = float(info.get("arrival", "-1"))
            if arrival >= 0:
                by_label[label][int(arrival // bin_s)].append(kpis.travel_time(info))
    fig, ax = plt.subplots(figsize=(8, 4))
    for label in sorted(by_label):
        bins = sorted(by_label[label])
        ax.plot([b * bin_s / 60 for b in bins], [float(np.mean(by_label[label][b])) for b in bins], label=label)
    ax.set_xlabel("simulated minutes (trip end)")
    ax.set_ylabel("mean travel time (s)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _value(row: dict[str, float], column: str) -> float:
    if column == "parked":
        return sum(v for k, v in row.items() if k.startswith("parked:"))
    return row[column]
