"""How the demo's twin scene runs its modes (apps/coupled.run_modes): the baseline beside the
coordinated runs, and coordinated seeds side by side, each on a stack of its own (`almere demo --full`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from apps.coupled import run_modes
from sim.runner import RunSpec

pytestmark = pytest.mark.e2e


# Long enough that the second stack is up before the first run ends, on a loaded machine too.
END_S = 2400


def test_coordinated_seeds_run_side_by_side_on_stacks_of_their_own(tmp_path: Path) -> None:
    specs = [
        RunSpec(scenario="almere-centrum-incident", mode=mode, seed=seed, out_root=tmp_path, end_s=END_S, scale=0.2)
        for mode, seed in (("none", 1), ("coordinated", 1), ("coordinated", 2))
    ]
    runs = run_modes(specs, say=lambda _: None, stacks=2)
    assert [r.name for r in runs] == ["none-seed1", "coordinated-seed1", "coordinated-seed2"]
    coordinated = runs[1:]
    for run in coordinated:
        devices = json.loads((run / "devices.json").read_text())
        assert devices["vehicle_reports"] == END_S // 30 and devices["occupancy_reports"] > 0
    # Each seed had its own services (they would mix each other's garages), and both ran at once.
    endpoints = [json.loads((tmp_path / f"stack-{i}" / "endpoints.json").read_text()) for i in (1, 2)]
    assert endpoints[0]["optimizer"] != endpoints[1]["optimizer"]
    started = [(run / "config.json").stat().st_mtime for run in coordinated]
    ended = [(run / "kpis.json").stat().st_mtime for run in coordinated]
    assert max(started) < min(ended)
