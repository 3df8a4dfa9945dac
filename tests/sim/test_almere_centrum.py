"""The almere-centrum scenario builds into a valid SUMO scenario and runs in real SUMO.

The XML parsed here is what our own build and SUMO just wrote."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import sumolib

from services.signals.logic import CycleBounds, validate_plan
from services.signals.network_import import read_lights
from sim.scenarios import almere_centrum
from sim.scenarios.almere_centrum import demand, layout


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> almere_centrum.Scenario:
    return almere_centrum.build(tmp_path_factory.mktemp("almere-centrum"), seed=3, scale=0.3, horizon_s=1200)


def test_network_has_what_the_scenario_promises(scenario: almere_centrum.Scenario) -> None:
    net = sumolib.net.readNet(str(scenario.network), withInternal=False)
    assert len(net.getTrafficLights()) >= 20
    lon, lat = net.convertXY2LonLat(*net.getNode("j22").getCoord())
    assert lat == pytest.approx(52.3753, abs=0.002) and lon == pytest.approx(5.2157, abs=0.003)
    dreef = net.getEdge("j00-j10")
    assert dreef.getLaneNumber() == 3
    assert dreef.getLane(0).allows("bus") and not dreef.getLane(0).allows("passenger")
    assert dreef.getLane(1).allows("passenger")
    areas = {a.attrib["id"]: int(a.attrib["roadsideCapacity"]) for a in ET.parse(scenario.parking).getroot()}
    assert areas == {f.facility_id: f.capacity for f in layout.FACILITIES} and len(areas) >= 6
    rerouted = {r.attrib["id"] for r in ET.parse(scenario.rerouters).getroot().iter("rerouter")}
    assert set(areas) <= rerouted


def test_imported_programs_pass_the_signal_services_safety_rules(scenario: almere_centrum.Scenario) -> None:
    lights = read_lights(scenario.network)
    assert len(lights) == 22
    for light in lights:
        validate_plan(list(light.intersection.links), light.plan, CycleBounds())


def test_demand_is_reproducible_and_has_every_kind() -> None:
    first, again = demand.generate(7, 0.2, 3600), demand.generate(7, 0.2, 3600)
    assert first == again and first != demand.generate(8, 0.2, 3600)
    kinds = {t.kind for t in first}
    assert kinds == {"through", "commuter", "visitor"}
    assert all(t.parking_area in demand.known_facilities() for t in first if t.kind != "through")
    assert [t.depart for t in first] == sorted(t.depart for t in first)


def test_a_short_run_in_sumo_finishes_trips(scenario: almere_centrum.Scenario, tmp_path: Path) -> None:
    tripinfo, stops = tmp_path / "tripinfo.xml", tmp_path / "stops.xml"
    almere_centrum.run_sumo(scenario, tripinfo, stops=stops)
    infos = ET.parse(tripinfo).getroot().findall("tripinfo")
    assert scenario.trips - 5 <= len(infos) <= scenario.trips  # the last few may not have been inserted yet
    finished = [i for i in infos if float(i.attrib["arrival"]) >= 0]
    assert len(finished) > scenario.trips // 3
    parked = {
        s.attrib["parkingArea"] for s in ET.parse(stops).getroot().iter("stopinfo") if s.attrib.get("parkingArea")
    }
    assert len(parked) >= 3  # commuters and visitors really park in the facilities


def test_the_event_variant_adds_event_goers_for_the_venues_garages() -> None:
    normal, event = demand.generate(5, 0.2, 3 * 3600), demand.generate(5, 0.2, 3 * 3600, event=True)
    goers = [t for t in event if t.kind == "event"]
    assert not [t for t in normal if t.kind == "event"] and len(goers) > 50
    assert {t.parking_area for t in goers} <= set(demand.EVENT_CHOICE)
    assert min(t.depart for t in goers) >= 3600  # from 08:00 on
