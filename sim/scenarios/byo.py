"""Bring your own network: a real OpenStreetMap extract (converted with netconvert) or any SUMO
network, given parking facilities and demand, as a runnable scenario (`almere sim byo`, or
`almere sim run byo:<file>`)."""

from __future__ import annotations

import json
import shutil
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import sumolib

from libs.sumo_tools import netconvert
from libs.sumo_tools import run_sumo as plain_sumo
from sim.scenarios.almere_centrum.layout import Facility

SPACE_M = 6.0  # kerb length per parking space
TRIPS = 300  # random trips by default


OPERATOR = "byo-operator"  # the operator the field devices report the parking areas for


@dataclass(frozen=True, kw_only=True)
class ByoScenario:
    network: Path
    parking: Path
    routes: Path
    config: Path
    facilities: list[str]
    trips: int

    @property
    def begin_s(self) -> float:
        return 0.0

    def additional_files(self, mode: str) -> list[Path]:
        """The parking areas in every mode (the network has no rerouters, detectors or actuated programs)."""
        return [self.parking]

    def parking_facilities(self) -> list[Facility]:
        """Each parking area as an on-street zone of one operator."""
        areas = ET.parse(self.parking).getroot().findall("parkingArea")  # noqa: S314 - our own file
        return [
            Facility(
                facility_id=a.get("id", ""),
                display_name=a.get("id", ""),
                kind="on_street",
                capacity=int(a.get("roadsideCapacity", 0)),
                edge=a.get("lane", "").rsplit("_", 1)[0],
                operator_id=OPERATOR,
            )
            for a in areas
        ]

    def centre_edges(self) -> set[str]:
        """No destination zone: the parking search from entering one is not measured."""
        return set()

    def walks_to(self) -> dict[str, str]:
        """The random trips have no walking destinations."""
        return {}


def _network(source: Path, out_dir: Path) -> Path:
    if source.name.endswith(".net.xml"):
        target = out_dir / source.name
        shutil.copyfile(source, target)
        return target
    target = out_dir / f"{source.name.split('.')[0]}.net.xml"
    subprocess.run(
        [
            netconvert(),
            "--osm-files",
            str(source),
            "--output-file",
            str(target),
            "--geometry.remove",
            "--junctions.join",
            "--tls.guess-signals",
            "--keep-edges.by-vclass",
            "passenger",
            "--remove-edges.isolated",
            "--no-warnings",
        ],
        check=True,
        capture_output=True,
    )
    return target


def build(
    source: Path,
    out_dir: Path,
    *,
    facilities: int = 4,
    trips: int = TRIPS,
    horizon_s: float = 1800,
    seed: int = 1,
    parking_share: float = 0.3,
) -> ByoScenario:
    """Network from `source` (.osm or .net.xml); parking areas on the longest streets; random trips,
    a share of which park for 20-60 minutes. A build with the same inputs in out_dir is reused (runs of
    several modes share one)."""
    manifest = out_dir / "scenario.json"
    stat = source.stat()
    inputs = [str(source.resolve()), stat.st_size, stat.st_mtime_ns, facilities, trips, horizon_s, seed, parking_share]
    if manifest.exists():
        data = json.loads(manifest.read_text())
        if data["inputs"] == inputs:
            saved = data["scenario"]
            return ByoScenario(
                network=Path(saved["network"]),
                parking=Path(saved["parking"]),
                routes=Path(saved["routes"]),
                config=Path(saved["config"]),
                facilities=list(saved["facilities"]),
                trips=int(saved["trips"]),
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    network = _network(source, out_dir)
    net = sumolib.net.readNet(str(network), withInternal=False)
    drivable = sorted(
        (e for e in net.getEdges() if e.getLane(0).allows("passenger") and e.getLength() >= 40),
        key=lambda e: (-e.getLength(), e.getID()),
    )
    if len(drivable) < 2:
        raise ValueError(f"{source} has fewer than two drivable streets of 40 m or more")
    areas = drivable[:facilities]
    lines = ['<?xml version="1.0" encoding="UTF-8"?>', "<additional>"]
    for n, edge in enumerate(areas):
        lane = edge.getLane(0)
        capacity = max(10, int(0.6 * lane.getLength() / SPACE_M))
        lines.append(
            f'  <parkingArea id="parking-{n}" lane="{lane.getID()}" startPos="{0.2 * lane.getLength():.1f}" '
            f'endPos="{0.8 * lane.getLength():.1f}" roadsideCapacity="{capacity}"/>'
        )
    lines.append("</additional>")
    parking = out_dir / "parking.add.xml"
    parking.write_text("\n".join(lines) + "\n")
    rng = np.random.default_rng(seed)
    edges = [e.getID() for e in drivable]
    route_lines = ['<?xml version="1.0" encoding="UTF-8"?>', "<routes>"]
    for n, depart in enumerate(np.sort(rng.uniform(0, horizon_s * 0.8, trips))):
        origin, destination = rng.choice(edges, 2, replace=False)
        head = f'  <trip id="t{n}" depart="{depart:.1f}" from="{origin}" to="{destination}" departLane="best"'
        if rng.random() < parking_share:
            area = f"parking-{rng.integers(len(areas))}"
            route_lines += [
                f"{head}>",
                f'    <stop parkingArea="{area}" duration="{rng.uniform(1200, 3600):.0f}"/>',
                "  </trip>",
            ]
        else:
            route_lines.append(f"{head}/>")
    route_lines.append("</routes>")
    routes = out_dir / "demand.rou.xml"
    routes.write_text("\n".join(route_lines) + "\n")
    config = out_dir / "scenario.sumocfg"
    config.write_text(
        f'<configuration><input><net-file value="{network.name}"/><route-files value="{routes.name}"/>'
        f'<additional-files value="{parking.name}"/></input><time><begin value="0"/><end value="{horizon_s:.0f}"/>'
        '</time><processing><ignore-route-errors value="true"/></processing></configuration>\n'
    )
    scenario = ByoScenario(
        network=network,
        parking=parking,
        routes=routes,
        config=config,
        facilities=[f"parking-{n}" for n in range(len(areas))],
        trips=trips,
    )
    manifest.write_text(json.dumps({"inputs": inputs, "scenario": asdict(scenario)}, default=str))
    return scenario


def run_sumo(scenario: ByoScenario, tripinfo: Path) -> None:
    plain_sumo(scenario.config, tripinfo)
