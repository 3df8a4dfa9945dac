"""The optimizer's targets (issue #7), computed from a set of runs: coordinated against SUMO's
built-ins (mode sumo) and against no information (mode none), as ratios of the means over seeds,
with each seed's own ratio beside it (runs pair by seed)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Target:
    kpi: str
    title: str
    baseline: str
    limit: float


TARGETS = [
    Target("door_to_door_s.mean", "visitors' door-to-door (drive + search + walk)", "sumo", 0.80),
    Target("door_to_door_s.mean", "visitors' door-to-door (drive + search + walk)", "none", 0.60),
    Target("visitors_over_5_min_to_park", "visitors searching more than 5 minutes", "sumo", 0.50),
    Target("travel_time_s.mean", "mean travel time of all vehicles", "sumo", 0.97),
    Target("incident_vehicles_delay_s.mean", "delay of vehicles whose route met the incident", "sumo", 0.80),
]


@dataclass(frozen=True)
class Measured:
    target: Target
    ratio: float | None
    per_seed: list[float]

    @property
    def met(self) -> bool:
        return self.ratio is not None and self.ratio <= self.target.limit


def measure(by_mode: dict[str, dict[int, dict[str, Any]]]) -> list[Measured]:
    """`by_mode`: mode -> seed -> flattened KPIs. Targets whose modes are missing are left out."""
    out = []
    coordinated = by_mode.get("coordinated", {})
    for target in TARGETS:
        baseline = by_mode.get(target.baseline, {})
        seeds = sorted(set(coordinated) & set(baseline))
        pairs = [(coordinated[s].get(target.kpi), baseline[s].get(target.kpi)) for s in seeds]
        pairs = [(c, b) for c, b in pairs if isinstance(c, (int, float)) and isinstance(b, (int, float))]
        if not pairs:
            continue
        ours, theirs = float(np.mean([c for c, _ in pairs])), float(np.mean([b for _, b in pairs]))
        out.append(
            Measured(
                target,
                ours / theirs if theirs else None,
                [c / b for c, b in pairs if b],
            )
        )
    return out


def table(measured: list[Measured]) -> list[str]:
    lines = ["| target | coordinated vs | ratio (per seed) | limit | met |", "|---|---|---|---|---|"]
    for m in measured:
        ratio = "-" if m.ratio is None else f"{m.ratio:.2f}"
        seeds = ", ".join(f"{r:.2f}" for r in m.per_seed)
        met = "yes" if m.met else "**no**"
        lines.append(f"| {m.target.title} | {m.target.baseline} | {ratio} ({seeds}) | ≤ {m.target.limit:.2f} | {met} |")
    return lines
