"""Bring-your-own networks (an OSM extract written as a fixture, or a SUMO network) and the RESCO
benchmark networks from the sumo-rl package, run in real SUMO."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import sumolib

from sim.named_networks import build_network
from sim.scenarios import byo, resco

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "almere-small.osm"


def test_an_osm_extract_becomes_a_runnable_scenario(tmp_path: Path) -> None:
    scenario = byo.build(FIXTURE, tmp_path, facilities=4, trips=200, horizon_s=1500)
    net = sumolib.net.readNet(str(scenario.network), withInternal=False)
    lon, lat = net.convertXY2LonLat(*net.getNode(net.getNodes()[0].getID()).getCoord())
    assert 52.36 < lat < 52.39 and 5.20 < lon < 5.23  # geo-referenced where the OSM nodes are
    assert len(net.getTrafficLights()) == 1  # the node tagged highway=traffic_signals
    areas = ET.parse(scenario.parking).getroot().findall("parkingArea")
    assert [a.get("id") for a in areas] == scenario.facilities and len(areas) == 4
    tripinfo = tmp_path / "tripinfo.xml"
    byo.run_sumo(scenario, tripinfo)
    infos = ET.parse(tripinfo).getroot().findall("tripinfo")
    assert sum(float(i.get("arrival", "-1")) >= 0 for i in infos) > 100


def test_any_sumo_network_works_too(tmp_path: Path) -> None:
    network = build_network("centrum-mini", tmp_path / "net")
    scenario = byo.build(network, tmp_path / "byo", facilities=2, trips=50, horizon_s=900)
    byo.run_sumo(scenario, tmp_path / "tripinfo.xml")
    assert ET.parse(tmp_path / "tripinfo.xml").getroot().findall("tripinfo")


def test_resco_networks_load_from_the_installed_package_and_run(tmp_path: Path) -> None:
    for name in resco.NETWORKS:
        found = resco.locate(name)
        assert found.network.exists() and all(r.exists() for r in found.routes)
    cologne1 = resco.locate("cologne1")
    result = resco.run_fixed_time(cologne1, tmp_path, seed=1, end=600)
    assert result["vehicles_scheduled"] > result["vehicles_departed"] > 0
    assert result["delay_s"] > 0
    with pytest.raises(ValueError, match="unknown RESCO network"):
        resco.locate("atlantis")
