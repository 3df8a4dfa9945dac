"""The generated city (sim/scenarios/city): one generator for every size, a small one (3 x 3 lights)
that SUMO loads and runs with its collision and its event, and its place in the scenario registry
(`almere sim run city-<lights>`)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import pytest
import sumolib

from sim.incidents import CLOSED_TO, ScriptedIncidents
from sim.runner import RunSpec, run
from sim.scenarios import city, registry
from sim.scenarios.city import demand, layout
from sim.variants import WALKING_PACE
from tests.sim import start_libsumo


@pytest.mark.parametrize(("lights", "grid", "facilities"), [(9, (3, 3), 2), (22, (5, 5), 5), (100, (10, 10), 20),
                                                            (500, (23, 22), 101)])  # fmt: skip
def test_one_generator_sizes_lights_facilities_and_demand(lights: int, grid: tuple[int, int], facilities: int) -> None:
    g = layout.Grid.for_lights(lights)
    assert (g.cols, g.rows) == grid and g.lights >= lights
    found = g.facilities()
    assert len(found) == facilities
    assert len({f.facility_id for f in found}) == len({f.edge for f in found}) == len(found)
    assert g.incident_edge() in g.street_edges()
    per_hour = sum(demand.PER_LIGHT_HOUR.values()) * g.lights
    assert 38 * g.lights <= per_hour <= 42 * g.lights  # ~20,000 an hour at 500 lights


def test_a_small_city_runs_in_sumo_with_its_collision_and_event(tmp_path: Path) -> None:
    scenario = city.build(tmp_path, lights=9, scale=3.0, horizon_s=demand.EVENT_FROM_S + 100)
    net = sumolib.net.readNet(str(scenario.network))
    assert len(net.getTrafficLights()) == 9
    lon, lat = net.convertXY2LonLat(*net.getNode("n1_1").getCoord())
    assert 52.3 < lat < 52.4 and 5.1 < lon < 5.2  # geo-referenced: the services get real positions
    kinds = {t.get("type") for t in ET.parse(scenario.routes).getroot().iter("vehicle")}
    assert {"through", "local", "visitor", "event"} <= kinds
    collision = replace(city.incident(layout.Grid.for_lights(9)), start_s=100, end_s=300)
    sumo = start_libsumo(scenario.config, *scenario.additional_files("none"))
    try:
        incidents = ScriptedIncidents(sumo, (collision,))
        parked, arrived, now = set(), 0, 0.0
        while now < 400:
            sumo.simulationStep()
            now = sumo.simulation.getTime()
            incidents.step(now)
            arrived += sumo.simulation.getArrivedNumber()
            parked.update(v for v in sumo.vehicle.getIDList() if sumo.vehicle.isStoppedParking(v))
            if now == 200:  # during the collision: lane 1 closed, lane 0 at walking pace
                assert set(sumo.lane.getAllowed(f"{collision.edge}_1")) == set(CLOSED_TO)
                assert sumo.lane.getMaxSpeed(f"{collision.edge}_0") == pytest.approx(WALKING_PACE)
        assert set(sumo.lane.getAllowed(f"{collision.edge}_1")) != set(CLOSED_TO)  # given back after it
        assert sumo.simulation.getEndingTeleportNumber() == 0
    finally:
        sumo.close()
    assert incidents.met and arrived > 20 and len(parked) > 5


def test_the_registry_builds_and_runs_a_city_by_its_number_of_lights(tmp_path: Path) -> None:
    source = registry.resolve("city-9")
    assert source.name == "city-9" and source.incidents[0].edge == layout.Grid.for_lights(9).incident_edge()
    for wrong in ("city-3", "city-99999", "city-x"):
        with pytest.raises(ValueError):
            registry.resolve(wrong)
    run_dir = run(RunSpec(scenario="city-9", mode="sumo", seed=1, out_root=tmp_path, end_s=300, scale=2.0))
    result = json.loads((run_dir / "kpis.json").read_text())
    assert result["vehicles_departed"] > 30
    assert (tmp_path / "build" / "city-9-scale2-300s" / "scenario-seed1.json").exists()
