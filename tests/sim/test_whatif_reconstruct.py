"""A reconstruction from the live picture against the run the picture was read from: the garages
exactly, the vehicles on the network within a tolerance, and a state SUMO loads."""

from __future__ import annotations

from importlib import import_module
from pathlib import Path

import pytest

from libs.sumo_tools import sumo_binary
from sim.runner import RunSpec, prepare, sumo_args
from sim.whatif.reconstruct import picture_from_sumo, state_from_picture

SCENARIO, SEED, SCALE, AT = "almere-centrum-incident", 1, 0.3, 1800
# Only detector lanes are seeded (dreven and Stadsdreef, not side streets or ext- edges): the
# reconstruction may miss that share of the moving traffic.
TOLERANCE = 0.5


def _moving(ls: object) -> int:
    vehicle = ls.vehicle  # type: ignore[attr-defined]
    return sum(1 for v in vehicle.getIDList() if not vehicle.isStoppedParking(v))


# In mode sumo the actuated lights bring loops of their own at the stop lines, where the queues stand:
# a lane then has two readings, and the queue's density must not be spread over the whole lane.
@pytest.mark.parametrize("mode", ["none", "sumo"])
def test_reconstruction_is_close_to_the_run_it_was_read_from(tmp_path: Path, mode: str) -> None:
    import_module("sumo")
    import libsumo as ls

    spec = RunSpec(scenario=SCENARIO, mode=mode, seed=SEED, out_root=tmp_path / "truth", end_s=AT + 600, scale=SCALE)
    built = prepare(spec)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    ls.start([sumo_binary("sumo"), *sumo_args(spec, built, run_dir)])
    try:
        while ls.simulation.getTime() < AT:
            ls.simulationStep()
        picture = picture_from_sumo(ls, scenario=SCENARIO, facilities=built.parking_facilities())
        true_moving = _moving(ls)
        true_parked = {f.facility_id: f.occupied for f in picture.facilities}
    finally:
        ls.close()

    state = state_from_picture(picture, built=built, seed=SEED, out=tmp_path / "rebuilt.xml.gz")

    ls.start(
        [sumo_binary("sumo"), "-c", str(built.config), "--load-state", str(state), "--no-step-log", "--no-warnings"]
    )
    try:
        ls.simulationStep()
        parked = {f: ls.parkingarea.getVehicleCount(f) for f in true_parked}
        moving = _moving(ls)
    finally:
        ls.close()
    print(f"moving: {true_moving} -> {moving}; parked: {sum(true_parked.values())} -> {sum(parked.values())}")
    # Parked cars are inserted in their area, but the P+R lies on a busy entry lane where a few are
    # still waiting to enter after the insertion steps (measured: 79-80 of 86 at seed 1).
    assert all(parked[f] <= true_parked[f] for f in true_parked)
    assert sum(parked.values()) >= 0.9 * sum(true_parked.values())
    assert abs(moving - true_moving) <= TOLERANCE * true_moving
