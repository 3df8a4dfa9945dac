"""The twin's runner with real SUMO: short runs in both modes give KPIs and a report with plots, and a
scripted incident really closes and slows SUMO's lanes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sim import report
from sim.incidents import CLOSED_TO, ScriptedIncidents
from sim.runner import RunSpec, prepare, run_many
from sim.variants import WALKING_PACE, ScriptedIncident
from tests.sim import start_libsumo


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = tmp_path_factory.mktemp("sim")
    specs = [
        RunSpec(scenario="almere-centrum-incident", mode=mode, seed=1, out_root=out, end_s=900, scale=0.4)
        for mode in ("none", "sumo")
    ]
    return run_many(specs)


def test_each_mode_writes_a_complete_run_folder(runs: list[Path]) -> None:
    for run_dir in runs:
        files = {p.name for p in run_dir.iterdir()}
        assert {
            "config.json",
            "tripinfo.xml",
            "stops.xml",
            "statistics.xml",
            "timeseries.csv",
            "kpis.json",
            "kpis.csv",
        } <= files
        result = json.loads((run_dir / "kpis.json").read_text())
        assert result["vehicles_departed"] > 50
        assert result["vehicles_departed"] + result["never_departed"] == result["vehicles_scheduled"]
        assert result["delay_s"]["mean"] > 0 and result["travel_time_s"]["p95"] >= result["travel_time_s"]["mean"]
        assert result["co2_kg"] > 0
        assert set(result["parking_search_s"]) == {"mean", "p95"} and "parking_search_m" in result
        # Door-to-door counts every visitor: parked ones with their walk, the others with their time so far.
        visitors = sum(1 for v in json.loads(Path(result_walks(run_dir)).read_text()) if v.startswith("visitor"))
        assert visitors > 0 and result["never_parked"] <= visitors
        if result["walk_m"]["mean"] is not None:
            assert 0 < result["walk_m"]["mean"] < 2000 and result["door_to_door_s"]["mean"] > 0
        samples = (run_dir / "timeseries.csv").read_text().splitlines()
        assert len(samples) == 1 + 900 // 60 and "parked:garage-stadhuisplein" in samples[0]


def result_walks(run_dir: Path) -> str:
    config = json.loads((run_dir / "config.json").read_text())
    return str(next(Path(config["out_root"], "build").glob("*/walks-seed1.json")))


def test_report_compares_modes_with_plots(runs: list[Path], tmp_path: Path) -> None:
    path = report.write(runs, tmp_path)
    text = path.read_text()
    assert "almere-centrum-incident / none (n=1)" in text and "almere-centrum-incident / sumo (n=1)" in text
    assert "delay, timeLoss + departDelay (s)" in text
    for plot in ("speed.png", "halting.png", "occupancy.png", "travel_time.png"):
        assert (tmp_path / plot).read_bytes().startswith(b"\x89PNG")


def test_a_scripted_incident_closes_and_slows_the_lanes_then_reopens_them(tmp_path: Path) -> None:

    scenario = prepare(RunSpec(scenario="almere-centrum", mode="none", seed=1, out_root=tmp_path, end_s=300, scale=0.2))
    libsumo = start_libsumo(scenario.config)
    try:
        before = list(libsumo.lane.getAllowed("j22-j32_1")), libsumo.lane.getMaxSpeed("j22-j32_0")
        incidents = ScriptedIncidents(
            libsumo, (ScriptedIncident(edge="j22-j32", start_s=10, end_s=20, closed_lanes=(1,)),)
        )
        for _ in range(15):
            libsumo.simulationStep()
            incidents.step(libsumo.simulation.getTime())
        assert sorted(libsumo.lane.getAllowed("j22-j32_1")) == sorted(CLOSED_TO)
        assert libsumo.lane.getMaxSpeed("j22-j32_0") == pytest.approx(WALKING_PACE)
        for _ in range(10):
            libsumo.simulationStep()
            incidents.step(libsumo.simulation.getTime())
        assert (list(libsumo.lane.getAllowed("j22-j32_1")), libsumo.lane.getMaxSpeed("j22-j32_0")) == before
    finally:
        libsumo.close()


def test_guidance_from_the_optimizer_is_applied_to_the_vehicles_it_names(tmp_path: Path) -> None:
    from almere.optimizer.v1 import decisions_pb2

    from sim.decision_applier import DecisionApplier

    scenario = prepare(RunSpec(scenario="almere-centrum", mode="none", seed=2, out_root=tmp_path, end_s=900, scale=0.5))
    libsumo = start_libsumo(scenario.config, scenario.parking, scenario.rerouters)
    applier = DecisionApplier(tmp_path / "applied.jsonl")
    try:
        visitor = None
        while visitor is None and libsumo.simulation.getTime() < 900:
            libsumo.simulationStep()
            for v in libsumo.vehicle.getIDList():
                stops = libsumo.vehicle.getStops(v)
                lane = libsumo.vehicle.getLaneID(v)
                if v.startswith("visitor") and stops and not lane.startswith(("ext-", ":")):
                    visitor = v
        assert visitor is not None, "no visitor on the way to a garage"
        current = libsumo.vehicle.getStops(visitor)[0].stoppingPlaceID
        target = "garage-citadel" if current != "garage-citadel" else "garage-forum"
        guidance = decisions_pb2.Decision(
            name="decisions/1",
            lever=decisions_pb2.LEVER_PARKING_GUIDANCE,
            parking_guidance=decisions_pb2.ParkingGuidance(vehicle_id=visitor, parking_area_id=target),
        )
        payload = guidance.SerializeToString()
        applier.apply(libsumo, 0, subject="almere.optimizer.v1.parking_guidance." + visitor, payload=payload)
        assert libsumo.vehicle.getStops(visitor)[0].stoppingPlaceID == target
        # The same decision arriving twice (the bus and a report's answer) is applied once.
        applier.apply(libsumo, 0, subject="almere.optimizer.v1.parking_guidance." + visitor, payload=payload)
        advice = decisions_pb2.Decision(name="decisions/2", route_advice=decisions_pb2.RouteAdvice(vehicle_id=visitor))
        applier.apply(
            libsumo, 0, subject="almere.optimizer.v1.route_advice." + visitor, payload=advice.SerializeToString()
        )
        gone = decisions_pb2.Decision(
            name="decisions/3", route_advice=decisions_pb2.RouteAdvice(vehicle_id="no-such-vehicle")
        )
        applier.apply(libsumo, 0, subject="almere.optimizer.v1.route_advice.x", payload=gone.SerializeToString())
    finally:
        libsumo.close()
        applier.close()
    log = [json.loads(line) for line in (tmp_path / "applied.jsonl").read_text().splitlines()]
    assert [entry["event"] for entry in log] == ["parking_guidance", "route_advice"]
    assert applier.skipped == 1


def test_the_twins_stop_record_matches_sumos_own_stop_output(tmp_path: Path) -> None:
    """The runner records parking stops itself (SUMO's stop output crashed under re-planning): on a run
    without any re-planning both must list the same stops with the same start times."""
    import xml.etree.ElementTree as ET

    from sim.scenarios.almere_centrum import layout
    from sim.stops import StopRecorder

    scenario = prepare(
        RunSpec(scenario="almere-centrum", mode="none", seed=1, out_root=tmp_path, end_s=1500, scale=0.7)
    )
    stop_output = ("--end", "1500", "--stop-output", str(tmp_path / "sumo-stops.xml"), "--stop-output.write-unfinished")
    libsumo = start_libsumo(scenario.config, scenario.parking, scenario.rerouters, extra=stop_output)
    recorder = StopRecorder({f.facility_id for f in layout.FACILITIES})
    try:
        while libsumo.simulation.getTime() < 1500:
            libsumo.simulationStep()
            recorder.step(libsumo, libsumo.simulation.getTime())
    finally:
        libsumo.close()
    recorder.write(tmp_path / "ours.xml")

    def stops(path: Path) -> set[tuple[str, str, float]]:
        root = ET.parse(path).getroot()
        return {(s.get("id", ""), s.get("parkingArea", ""), float(s.get("started", 0))) for s in root.iter("stopinfo")}

    theirs = stops(tmp_path / "sumo-stops.xml")
    assert len(theirs) > 50
    assert stops(tmp_path / "ours.xml") == theirs


def test_mode_sumo_equips_the_same_vehicles_as_coordinated_mode(tmp_path: Path) -> None:
    """SUMO's rerouting device goes to exactly the vehicles coordinated mode gives a navigation system."""
    import libsumo
    import sumo  # noqa: F401

    from libs.sumo_tools import sumo_binary
    from sim.navigation import ReroutingDevices, equipped
    from sim.runner import sumo_args

    spec = RunSpec(scenario="almere-centrum", mode="sumo", seed=1, out_root=tmp_path, end_s=600, scale=0.7)
    libsumo.start([sumo_binary("sumo"), *sumo_args(spec, prepare(spec), tmp_path)])  # exactly mode sumo's SUMO
    try:
        equipper = ReroutingDevices(libsumo, 1, 0.5)
        while libsumo.simulation.getTime() < 600:
            libsumo.simulationStep()
            equipper.step()
        present = libsumo.vehicle.getIDList()
        with_device = {v for v in present if libsumo.vehicle.getParameter(v, "has.rerouting.device") == "true"}
    finally:
        libsumo.close()
    assert with_device == {v for v in present if equipped(1, v, 0.5)}
    assert 0.35 < len(with_device) / len(present) < 0.65


def test_a_priority_grant_from_the_bus_turns_the_light_through_yellow_and_back(tmp_path: Path) -> None:
    from almere.signals.v1 import events_pb2
    from almere.signals.v1 import signals_pb2 as spb

    from libs.signal_control.phases import transition_steps
    from sim.decision_applier import DecisionApplier

    scenario = prepare(RunSpec(scenario="almere-centrum", mode="none", seed=1, out_root=tmp_path, end_s=300, scale=0.2))
    libsumo = start_libsumo(scenario.config)
    applier = DecisionApplier(tmp_path / "applied.jsonl")
    try:
        for _ in range(5):
            libsumo.simulationStep()
        program = libsumo.trafficlight.getProgram("j22")
        greens = [p.state for p in libsumo.trafficlight.getAllProgramLogics("j22")[0].phases if "y" not in p.state]
        current = libsumo.trafficlight.getRedYellowGreenState("j22")
        target = next(g for g in greens if transition_steps(current, g, 3.0))  # one a yellow must lead into
        grant = spb.Priority(decision=spb.PRIORITY_DECISION_GRANTED, vehicle_id="ambulance-9", target_state=target)
        grant.eta.seconds, grant.hold_until.seconds = 1000, 1010  # held 10 s + 10 s of margin
        event = events_pb2.SignalEvent(
            intersection=spb.Intersection(sumo_tls_id="j22"),
            change=spb.SignalChange(event="priority_decided", priority=grant),
        )
        now = libsumo.simulation.getTime()
        applier.apply(libsumo, now, subject="almere.signals.v1.priority_decided.j22", payload=event.SerializeToString())
        assert libsumo.trafficlight.getRedYellowGreenState("j22") == transition_steps(current, target, 3.0)[0][0]
        seen = []
        while libsumo.simulation.getTime() < now + 30:
            libsumo.simulationStep()
            applier.lights.step(libsumo, libsumo.simulation.getTime())
            seen.append(libsumo.trafficlight.getRedYellowGreenState("j22"))
        assert seen[3] == target and seen[15] == target  # green after the yellow, held
        assert libsumo.trafficlight.getProgram("j22") == program  # and back to its program
    finally:
        libsumo.close()
        applier.close()
