"""What-if runs on real SUMO: one plan's run from a saved state of the collision (its KPIs, its levers
changing them, the same seed giving the same forecast), from a live picture, and refused starts; the
event lever on the event morning."""

from __future__ import annotations

import math
from importlib import import_module
from pathlib import Path
from typing import Any

import pytest
from almere.optimizer.v1 import optimizer_pb2 as opb
from almere.whatif.v1 import runs_pb2
from almere.whatif.v1 import whatif_pb2 as w
from google.protobuf.field_mask_pb2 import FieldMask

from apps.whatif.simulate import simulate
from libs.sumo_tools import sumo_binary
from sim.incidents import ScriptedIncidents
from sim.priority import Responders
from sim.runner import RunSpec, prepare, sumo_args
from sim.scenarios import registry
from sim.whatif import levers
from sim.whatif.kpis import WindowKpis
from sim.whatif.reconstruct import picture_from_sumo, routes_file

SCENARIO, SCALE, SCENARIO_S = "almere-centrum-incident", 0.3, 2 * 3600
NOW = 1850  # the collision (1800 s) has happened
HORIZON_S = 600
EDGE = "j22-j32"
KPIS = {
    "arrived",
    "network_delay_h",
    "through_travel_time_s",
    "visitor_door_to_door_s",
    "incident_queue_veh",
    "emergency_access_s",
}


def _sumo() -> Any:
    import_module("sumo")
    import libsumo as ls

    return ls


@pytest.fixture(scope="module")
def collision(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The twin's state at NOW (saved as the twin saves it) and its live picture, built under `root`."""
    root = tmp_path_factory.mktemp("whatif")
    spec = RunSpec(scenario=SCENARIO, mode="sumo", seed=1, out_root=root / "scenarios", end_s=SCENARIO_S, scale=SCALE)
    built = prepare(spec)
    (root / "twin").mkdir()
    ls = _sumo()
    ls.start([sumo_binary("sumo"), *sumo_args(spec, built, root / "twin")])
    closure = w.Closure(edge_id=EDGE, closed_lanes=[1], expected_end_seconds=1800 + 45 * 60 - NOW)
    incidents = ScriptedIncidents(ls, registry.resolve(SCENARIO).incidents)  # the collision, as in the twin
    try:
        while ls.simulation.getTime() < NOW:
            ls.simulationStep()
            incidents.step(ls.simulation.getTime())
        ls.simulation.saveState(str(root / "state.xml.gz"))
        picture = picture_from_sumo(ls, scenario=SCENARIO, facilities=built.parking_facilities(), closures=[closure])
    finally:
        ls.close()
    saved = runs_pb2.SavedState(
        object_name="test",
        scenario=SCENARIO,
        seed=1,
        scale=SCALE,
        sim_time_seconds=NOW,
        mode="sumo",
        closures=[closure],
        scenario_seconds=SCENARIO_S,
    )
    facilities = {f.facility_id for f in built.parking_facilities()}
    return {"root": root, "saved": saved, "picture": picture, "facilities": facilities}


def _run(collision: dict[str, Any], plan: w.ResponsePlan, *, seed: int = 1, tag: str = "") -> runs_pb2.RunResult:
    root: Path = collision["root"]
    request = runs_pb2.RunRequest(
        what_if="w",
        run_id=f"{plan.plan_id}-{seed}{tag}",
        plan=plan,
        seed=seed,
        horizon_seconds=HORIZON_S,
        start_source=w.START_SOURCE_TWIN_STATE,
        saved_state=collision["saved"],
    )
    return simulate(
        request,
        state_file=root / "state.xml.gz",
        work_dir=root / "runs" / request.run_id,
        build_root=root / "scenarios",
    )


def test_doing_nothing_is_measured_on_every_kpi(collision: dict[str, Any]) -> None:
    result = _run(collision, w.ResponsePlan(plan_id="do-nothing"))
    assert not result.error, result.error
    assert set(result.kpis) == KPIS
    assert result.kpis["arrived"] > 20 and result.kpis["network_delay_h"] > 0
    assert 60 < result.kpis["through_travel_time_s"] < HORIZON_S + NOW
    assert result.kpis["incident_queue_veh"] > 0  # cars crawl past the collision
    assert result.kpis["emergency_access_s"] > 0
    # A value a minute per garage, from the window's start to its end.
    assert {s.facility_id for s in result.occupancy} == collision["facilities"]
    assert all(len(s.occupied) == HORIZON_S // 60 + 1 and s.capacity > 0 for s in result.occupancy)
    assert result.wall_seconds > 0 and result.plan_id == "do-nothing" and result.run_id == "do-nothing-1"
    # The same seed from the same state is the same forecast; the seed is what varies it.
    again = _run(collision, w.ResponsePlan(plan_id="do-nothing"), tag="-again")
    assert dict(again.kpis) == dict(result.kpis)


def test_closing_the_road_empties_it(collision: dict[str, Any]) -> None:
    base = _run(collision, w.ResponsePlan(plan_id="do-nothing"))
    closed = _run(collision, w.ResponsePlan(plan_id="close", closures=[w.Closure(edge_id=EDGE, full_closure=True)]))
    assert not closed.error, closed.error
    # Nobody drives past the collision any more: the queue there is the few halted on the way in.
    assert closed.kpis["incident_queue_veh"] < 0.5 * base.kpis["incident_queue_veh"]
    assert closed.kpis["emergency_access_s"] > 0  # responders still reach it over the closed road


def test_adaptive_lights_and_guidance_change_the_forecast(collision: dict[str, Any]) -> None:
    base = _run(collision, w.ResponsePlan(plan_id="do-nothing"))
    adaptive = _run(
        collision, w.ResponsePlan(plan_id="adaptive", signals=[w.SignalArea(control=w.SIGNAL_CONTROL_ADAPTIVE)])
    )
    guided = _run(
        collision,
        w.ResponsePlan(
            plan_id="guided",
            strategy=opb.Strategy(equipped_share=0.9, parking_guidance=True),
            strategy_mask=FieldMask(paths=["equipped_share", "parking_guidance"]),
        ),
    )
    assert not adaptive.error and not guided.error, (adaptive.error, guided.error)
    assert dict(adaptive.kpis) != dict(base.kpis)
    assert dict(guided.kpis) != dict(base.kpis)
    assert (collision["root"] / "runs" / "guided-1").is_dir()


def test_a_run_from_the_live_picture(collision: dict[str, Any]) -> None:
    root: Path = collision["root"]
    request = runs_pb2.RunRequest(
        what_if="w",
        run_id="live",
        plan=w.ResponsePlan(plan_id="do-nothing"),
        seed=1,
        horizon_seconds=HORIZON_S,
        start_source=w.START_SOURCE_LIVE_PICTURE,
        live_picture=collision["picture"],
    )
    result = simulate(request, state_file=None, work_dir=root / "runs" / "live", build_root=root / "scenarios")
    assert not result.error, result.error
    assert set(result.kpis) == KPIS and result.kpis["arrived"] > 0


def test_a_run_that_cannot_start_says_why(collision: dict[str, Any]) -> None:
    root: Path = collision["root"]
    nothing = runs_pb2.RunRequest(run_id="x", plan=w.ResponsePlan(plan_id="do-nothing"), horizon_seconds=60)
    result = simulate(nothing, state_file=None, work_dir=root / "runs" / "x", build_root=root / "scenarios")
    assert "no start" in result.error and not result.kpis
    missing = runs_pb2.RunRequest(
        run_id="y", plan=w.ResponsePlan(plan_id="do-nothing"), horizon_seconds=60, saved_state=collision["saved"]
    )
    result = simulate(missing, state_file=None, work_dir=root / "runs" / "y", build_root=root / "scenarios")
    assert "state file" in result.error and not result.kpis
    unknown = runs_pb2.RunRequest(
        run_id="z",
        plan=w.ResponsePlan(plan_id="do-nothing"),
        horizon_seconds=60,
        saved_state=runs_pb2.SavedState(scenario="atlantis", seed=1, scale=0.3),
    )
    result = simulate(unknown, state_file=root / "state.xml.gz", work_dir=root / "z", build_root=root / "scenarios")
    assert "atlantis" in result.error and not result.kpis


def test_closures_last_until_their_expected_end() -> None:
    (timed, open_ended) = levers.closures_as_incidents(
        [
            w.Closure(edge_id="a", closed_lanes=[0], expected_end_seconds=600, speed_limit_kmh=36),
            w.Closure(edge_id="b", full_closure=True),
        ],
        now=100,
    )
    assert (timed.start_s, timed.end_s, timed.closed_lanes, timed.speed_limit_mps) == (100, 700, (0,), 10.0)
    assert open_ended.full_closure and math.isinf(open_ended.end_s)


def _event_morning(tmp_path: Path, *, begin: float) -> tuple[Any, Any]:
    spec = RunSpec(scenario="almere-centrum-event", mode="none", seed=1, out_root=tmp_path, end_s=3 * 3600, scale=SCALE)
    built = prepare(spec)
    ls = _sumo()
    args = ["-c", str(built.config), "--begin", f"{begin:.0f}", "--no-step-log", "--no-warnings"]
    ls.start([sumo_binary("sumo"), *args, "--additional-files", ",".join(map(str, built.additional_files("none")))])
    return ls, built


@pytest.mark.parametrize(("cancel", "shift_min"), [(True, 0.0), (False, 10.0)])
def test_the_event_is_cancelled_or_moved(tmp_path: Path, cancel: bool, shift_min: float) -> None:
    begin = 3600.0  # the event-goers start arriving
    ls, built = _event_morning(tmp_path, begin=begin)
    try:
        trips = levers.event_trips(routes_file(built))
        assert any(begin < t.depart_s < begin + 600 for t in trips)
        events = levers.EventChanges(ls, trips, now=begin, shift_s=shift_min * 60, cancel=cancel)
        seen: set[str] = set()
        while ls.simulation.getTime() < begin + 900:
            ls.simulationStep()
            events.step(ls.simulation.getTime())
            seen.update(v for v in ls.vehicle.getIDList() if v.startswith("event"))
    finally:
        ls.close()
    assert events.removed > 0
    assert not any(v in {t.vehicle_id for t in trips} for v in seen)  # none of the planned ones went
    moved = {v for v in seen if v.endswith("-moved")}
    if cancel:
        assert not moved
    else:  # the first ten minutes' event-goers come ten minutes later
        assert len(moved) >= sum(1 for t in trips if begin < t.depart_s < begin + 240)


def test_window_kpis_count_what_sumo_counts(tmp_path: Path) -> None:
    spec = RunSpec(scenario=SCENARIO, mode="none", seed=1, out_root=tmp_path, end_s=1200, scale=SCALE)
    built = prepare(spec)
    (tmp_path / "run").mkdir()
    ls = _sumo()
    ls.start([sumo_binary("sumo"), *sumo_args(spec, built, tmp_path / "run")])
    try:
        while ls.simulation.getTime() < 600:
            ls.simulationStep()
        kpis = WindowKpis(ls=ls, start_s=600, horizon_s=300, watched_edges=[], facilities=built.parking_facilities())
        arrived = 0
        while not kpis.done:
            ls.simulationStep()
            arrived += ls.simulation.getArrivedNumber()
            kpis.step(ls.simulation.getTime())
        assert ls.simulation.getTime() == 900
    finally:
        ls.close()
    result = kpis.result()
    assert result["arrived"] == arrived > 0
    assert "incident_queue_veh" not in result and "emergency_access_s" not in result  # no incident: left out


def test_a_run_dispatches_the_responders_still_to_come(tmp_path: Path) -> None:
    """The emergency variant's ambulance leaves at 1980 s: a run from 1850 s sends it (its vehicle type
    is in the saved state already)."""
    scenario = "almere-centrum-emergency"
    source = registry.resolve(scenario)
    root = tmp_path / "scenarios"
    spec = RunSpec(scenario=scenario, mode="sumo", seed=1, out_root=root, end_s=SCENARIO_S, scale=SCALE)
    built = prepare(spec)
    (tmp_path / "twin").mkdir()
    ls = _sumo()
    ls.start([sumo_binary("sumo"), *sumo_args(spec, built, tmp_path / "twin")])
    incidents, responders = ScriptedIncidents(ls, source.incidents), Responders(ls, source.responders)
    try:
        while ls.simulation.getTime() < NOW:
            ls.simulationStep()
            incidents.step(ls.simulation.getTime())
            responders.step(ls.simulation.getTime())
        ls.simulation.saveState(str(tmp_path / "state.xml.gz"))
    finally:
        ls.close()
    saved = runs_pb2.SavedState(
        scenario=scenario, seed=1, scale=SCALE, mode="sumo", scenario_seconds=SCENARIO_S,
        closures=[w.Closure(edge_id=EDGE, closed_lanes=[1])],
    )  # fmt: skip
    request = runs_pb2.RunRequest(
        run_id="e", plan=w.ResponsePlan(plan_id="do-nothing"), seed=1, horizon_seconds=HORIZON_S, saved_state=saved
    )
    result = simulate(request, state_file=tmp_path / "state.xml.gz", work_dir=tmp_path / "run", build_root=root)
    assert not result.error, result.error
    assert set(result.kpis) == KPIS
