"""The spill-over guard (libs/signal_control/guards.py `SpillOverGuard`): an approach whose queue
stands back into the unsignalized junction behind it is drained before that junction's box locks.
On cologne3, seed 3, PressureActuated without the guard locks for good (no teleports: the issue's
15.7x fixed time); with it, nobody stands 300 s. Plus the guard alone, on a hand-built crossing."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from apps.signal_bench import bench_map, sumo_args
from libs.signal_control import layout
from libs.signal_control.controller import OURS, PressureActuated
from libs.signal_control.model import Snapshot
from sim import light_driver
from tests.sim.test_signal_control import crossing, drive

LOCKED_BY_S = 1500.0  # seed 3 locks ~1050 s in; its cars have stood 300 s by this time


def stands_300_s(spill_s: float | None, folder: Path) -> float | None:
    """cologne3, seed 3, ours with the spill-over guard after `spill_s` (None: without it), in a
    fresh process (libsumo): when some car first had stood 300 s (None: never)."""
    scenario = bench_map("cologne3", folder, 3)
    stop = scenario.begin + LOCKED_BY_S
    ls = light_driver.start(sumo_args(scenario, "ours", seed=3, stop=stop, folder=folder))
    params = dataclasses.replace(OURS, spill_s=spill_s)
    control = light_driver.DirectControl(PressureActuated(i, params) for i in layout.intersections(scenario.network))
    try:
        return light_driver.run(ls, stop, control, check_every_s=10.0).gridlock_at
    finally:
        ls.close()


def test_the_spill_over_guard_keeps_cologne3_seed_3_from_locking(tmp_path: Path) -> None:
    with ProcessPoolExecutor(2, mp_context=get_context("spawn"), max_tasks_per_child=1) as pool:
        old = pool.submit(stands_300_s, None, tmp_path / "old")
        new = pool.submit(stands_300_s, OURS.spill_s, tmp_path / "new")
        assert old.result() is not None, "the old controller no longer locks here: the test shows nothing"
        assert new.result() is None


def test_an_approach_queued_back_over_the_junction_behind_it_is_served() -> None:
    """North always has more pressure and moving cars (it would keep green to max green and beyond);
    west is a 12 m lane from a priority junction, one halted car fills it and the next stands at
    the end of the lane behind (`w_up`, in west's near chain), at that junction. After `spill_s`
    west gets green (through yellow), long before max green or the starvation bound; with nobody
    behind, the full lane blocks nothing and pressure decides as before."""
    west_short = dataclasses.replace(
        crossing(), spill={"w_0": 12.0}, near={"n_0": (("n_0", 0.0),), "w_0": (("w_0", 0.0), ("w_up", 12.0))}
    )

    def west_full(behind: bool) -> Callable[[float, str], Snapshot]:
        def snapshot(t: float, _: str) -> Snapshot:
            positions = {"n_0": ((5.0, 10.0),), "w_0": ((0.5, 0.0),)} | ({"w_up": ((1.0, 0.0),)} if behind else {})
            return Snapshot(t, {"n_0": 20, "w_0": 1}, {"n_0": 0, "w_0": 1}, positions)

        return snapshot

    spill_s = OURS.spill_s
    assert spill_s is not None
    shown = drive(PressureActuated(west_short), west_full(behind=True), 60)
    # min green 5 s, then the guard's watch: west queued since then
    assert shown[1:3] == [(5.0 + spill_s, "yr"), (8.0 + spill_s, "rG")]
    nobody_behind = drive(PressureActuated(west_short), west_full(behind=False), 60)
    assert all(s[1] != "G" for _, s in nobody_behind)
    without = drive(PressureActuated(west_short, dataclasses.replace(OURS, spill_s=None)), west_full(behind=True), 60)
    assert all(s[1] != "G" for _, s in without)
