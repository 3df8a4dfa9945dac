"""almere-centrum: a schematic Almere Stad centre (network, parking, demand), built by code, and what
a run of the twin needs of it (`sim.scenarios.registry.RunnableScenario`)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sumolib

from libs.sumo_tools import convert, sumo_binary
from libs.sumo_tools import run_sumo as plain_sumo
from sim.scenarios import build_cache
from sim.scenarios.almere_centrum import demand, layout
from sim.scenarios.almere_centrum.layout import Facility

NAME = "almere-centrum"


@dataclass(frozen=True, kw_only=True)
class Scenario:
    directory: Path
    network: Path
    parking: Path
    rerouters: Path  # parking search as drivers who know nothing (own-edge rerouters, areas not visible)
    guided_rerouters: Path  # SUMO's strongest built-in: occupancy visible on every approach edge
    actuated: Path  # the network's programs as SUMO actuated programs (loaded last, so active)
    detectors: Path  # induction loops on the arterials
    routes: Path
    walks: Path  # {vehicle id: junction its driver walks to}, for visitors and event-goers
    config: Path
    horizon_s: float
    trips: int

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Scenario:
        def path(key: str) -> Path:
            return Path(data[key])

        return cls(
            directory=path("directory"),
            network=path("network"),
            parking=path("parking"),
            rerouters=path("rerouters"),
            guided_rerouters=path("guided_rerouters"),
            actuated=path("actuated"),
            detectors=path("detectors"),
            routes=path("routes"),
            walks=path("walks"),
            config=path("config"),
            horizon_s=float(data["horizon_s"]),
            trips=int(data["trips"]),
        )

    @property
    def begin_s(self) -> float:
        return 0.0

    def additional_files(self, mode: str) -> list[Path]:
        """Mode none: parking search without information, the network's fixed programs; the others:
        occupancy visible on every approach and actuated lights."""
        if mode == "none":
            return [self.parking, self.detectors, self.rerouters]
        return [self.parking, self.detectors, self.guided_rerouters, self.actuated]

    def parking_facilities(self) -> list[layout.Facility]:
        return list(layout.FACILITIES)

    def centre_edges(self) -> set[str]:
        return layout.centre_edges()

    def walks_to(self) -> dict[str, str]:
        walks: dict[str, str] = json.loads(self.walks.read_text())
        return walks


def sumocfg(network: Path, routes: Path, additional: Path, *, horizon_s: float, seed: int) -> str:
    """A run's SUMO configuration (files beside it, by name): route errors skip the vehicle, a car
    stuck 300 s teleports, quiet logs."""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<configuration>
  <input>
    <net-file value="{network.name}"/>
    <route-files value="{routes.name}"/>
    <additional-files value="{additional.name}"/>
  </input>
  <time><begin value="0"/><end value="{horizon_s:.0f}"/></time>
  <processing>
    <ignore-route-errors value="true"/>
    <time-to-teleport value="300"/>
  </processing>
  <random_number><seed value="{seed}"/></random_number>
  <report><no-step-log value="true"/><no-warnings value="true"/></report>
</configuration>
"""


def parking_xml(network: Path) -> str:
    """One parkingArea per facility, on the rightmost lane of its edge, with the facility's capacity."""
    return parking_areas_xml(sumolib.net.readNet(str(network), withInternal=False), layout.FACILITIES)


def parking_areas_xml(net: Any, facilities: Sequence[Facility]) -> str:
    """One parkingArea per facility (on a sumolib net), on the rightmost lane of its edge, with the
    facility's capacity (the generated city's too)."""
    lines = ['<?xml version="1.0" encoding="UTF-8"?>', "<additional>"]
    for f in facilities:
        lane = net.getEdge(f.edge).getLane(0)
        length = lane.getLength()
        lines.append(
            f'  <parkingArea id="{f.facility_id}" lane="{lane.getID()}" startPos="{0.2 * length:.1f}" '
            f'endPos="{0.8 * length:.1f}" roadsideCapacity="{f.capacity}" name="{f.display_name}"/>'
        )
    lines.append("</additional>")
    return "\n".join(lines) + "\n"


def _blind_rerouters(network: Path, parking: Path, out: Path) -> None:
    """Parking search without information: a rerouter on each area's own edge sends a driver who finds
    it full on to another area whose occupancy the driver cannot see (generateParkingAreaRerouters.py
    with visibility off)."""
    import sumo

    tool = Path(sumo.SUMO_HOME) / "tools" / "generateParkingAreaRerouters.py"
    subprocess.run(
        [
            sys.executable,
            str(tool),
            "-n",
            str(network),
            "-a",
            str(parking),
            "-o",
            str(out),
            "--max-distance-alternatives",
            "5000",
            "--max-number-alternatives",
            "5",
            "--min-capacity-visibility-true",
            "100000",
            "--max-distance-visibility-true",
            "-1",
        ],
        check=True,
        capture_output=True,
    )


def guided_rerouters_xml(network: Path) -> str:
    """Occupancy of every area visible from every street of the grid: drivers re-plan before they
    reach a full garage (rerouters on the approach edges, not only on each area's own edge)."""
    net = sumolib.net.readNet(str(network), withInternal=False)
    areas = "".join(f'      <parkingAreaReroute id="{f.facility_id}" visible="true"/>\n' for f in layout.FACILITIES)
    gates = tuple(gate for gate, _, _ in layout.GATES)
    lines = ['<?xml version="1.0" encoding="UTF-8"?>', "<additional>"]
    for edge in sorted(e.getID() for e in net.getEdges()):
        if edge.startswith(gates) or edge.endswith(gates):
            continue
        lines.append(f'  <rerouter id="guide-{edge}" edges="{edge}">')
        lines.append(f'    <interval begin="0" end="1e9">\n{areas}    </interval>')
        lines.append("  </rerouter>")
    lines.append("</additional>")
    return "\n".join(lines) + "\n"


LOOP_PERIOD_S = 60  # every loop's aggregation interval (the twin publishes it once a minute)


def actuated_xml(network: Path) -> str:
    """Every traffic light's program as an actuated one: green phases may run 5 s to twice their
    length by detector gaps (SUMO places the detectors itself)."""
    net = sumolib.net.readNet(str(network), withPrograms=True, withInternal=False)
    lines = ['<?xml version="1.0" encoding="UTF-8"?>', "<additional>"]
    for tls in sorted(net.getTrafficLights(), key=lambda t: t.getID()):
        for program in tls.getPrograms().values():
            lines.append(f'  <tlLogic id="{tls.getID()}" programID="actuated" type="actuated" offset="0">')
            # The lights' own loops aggregate over the same minute as the detector stations (SUMO's
            # default is 300 s), so every loop's last interval means the same.
            lines.append(f'    <param key="freq" value="{LOOP_PERIOD_S}"/>')
            for phase in program.getPhases():
                if any(c in "Gg" for c in phase.state) and "y" not in phase.state:
                    limits = f' minDur="5" maxDur="{2 * phase.duration:g}"'
                else:
                    limits = ""
                lines.append(f'    <phase duration="{phase.duration:g}" state="{phase.state}"{limits}/>')
            lines.append("  </tlLogic>")
    lines.append("</additional>")
    return "\n".join(lines) + "\n"


def detectors_xml(network: Path) -> str:
    """A loop in every general lane of the dreven and the Stadsdreef, 30 m before the junction."""
    net = sumolib.net.readNet(str(network), withInternal=False)
    lines = ['<?xml version="1.0" encoding="UTF-8"?>', "<additional>"]
    for edge in sorted(net.getEdges(), key=lambda e: e.getID()):
        if edge.getLaneNumber() < 2 or edge.getID().startswith("ext-") or "-ext-" in edge.getID():
            continue
        for lane in edge.getLanes():
            if not lane.allows("passenger"):
                continue
            position = max(0.0, lane.getLength() - 30)
            lines.append(
                f'  <inductionLoop id="loop-{lane.getID()}" lane="{lane.getID()}" pos="{position:.1f}" '
                f'period="{LOOP_PERIOD_S}" file="NUL"/>'
            )
    lines.append("</additional>")
    return "\n".join(lines) + "\n"


def _route(network: Path, trips: Path, routes: Path) -> None:
    """Fixed routes on the empty network (duarouter), stops kept: drivers plan before they leave and
    only re-plan when they have a rerouting device (mode sumo) or meet a closure."""
    subprocess.run(
        [
            sumo_binary("duarouter"),
            "-n",
            str(network),
            "--route-files",
            str(trips),
            "-o",
            str(routes),
            "--ignore-errors",
            "--no-warnings",
            "--no-step-log",
            "--additional-files",
            str(routes.parent / "parking.add.xml"),
        ],
        check=True,
        capture_output=True,
    )


def build(
    out_dir: Path, *, seed: int = 1, scale: float = 1.0, horizon_s: float = 4 * 3600, event: bool = False
) -> Scenario:
    """Write network, parking, rerouters, routes and a .sumocfg into out_dir (or reuse them when a
    build with the same inputs is there: runs of several seeds share one folder)."""
    manifest = out_dir / f"scenario-seed{seed}.json"
    inputs = {
        "scale": scale,
        "horizon_s": horizon_s,
        "event": event,
        "code": build_cache.code_digest(Path(__file__).parent),
    }
    if (saved := build_cache.cached(manifest, inputs)) is not None:
        return Scenario.from_json(saved)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "nodes.nod.xml").write_text(layout.nodes_xml())
    (out_dir / "edges.edg.xml").write_text(layout.edges_xml())
    network = convert(out_dir / "nodes.nod.xml", out_dir / "edges.edg.xml", out_dir / f"{NAME}.net.xml")
    parking = out_dir / "parking.add.xml"
    parking.write_text(parking_xml(network))
    rerouters = out_dir / "rerouters.add.xml"
    _blind_rerouters(network, parking, rerouters)
    guided = out_dir / "rerouters-guided.add.xml"
    guided.write_text(guided_rerouters_xml(network))
    actuated = out_dir / "actuated.add.xml"
    actuated.write_text(actuated_xml(network))
    detectors = out_dir / "detectors.add.xml"
    detectors.write_text(detectors_xml(network))
    trips = demand.generate(seed, scale, horizon_s, event=event)
    trip_file = out_dir / f"demand-seed{seed}.trips.xml"
    trip_file.write_text(demand.routes_xml(trips))
    routes = out_dir / f"demand-seed{seed}.rou.xml"
    _route(network, trip_file, routes)
    walks = out_dir / f"walks-seed{seed}.json"
    walks.write_text(json.dumps({t.vid: t.walk_to for t in trips if t.kind in ("visitor", "event")}))
    config = out_dir / f"{NAME}-seed{seed}.sumocfg"
    config.write_text(sumocfg(network, routes, parking, horizon_s=horizon_s, seed=seed))
    scenario = Scenario(
        directory=out_dir,
        network=network,
        parking=parking,
        rerouters=rerouters,
        guided_rerouters=guided,
        actuated=actuated,
        detectors=detectors,
        routes=routes,
        walks=walks,
        config=config,
        horizon_s=horizon_s,
        trips=len(trips),
    )
    build_cache.save(manifest, inputs, scenario)
    return scenario


def run_sumo(scenario: Scenario, tripinfo: Path, *, end_s: float | None = None, stops: Path | None = None) -> None:
    """A plain SUMO run of the scenario (blind parking search), writing tripinfo and stops."""
    extra = ["--additional-files", f"{scenario.parking},{scenario.rerouters}"]
    if stops is not None:
        extra += ["--stop-output", str(stops), "--stop-output.write-unfinished"]
    if end_s is not None:
        extra += ["--end", str(end_s)]
    plain_sumo(scenario.config, tripinfo, *extra)
