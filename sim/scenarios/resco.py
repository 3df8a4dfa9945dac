"""The RESCO benchmark networks (cologne1/3/8, ingolstadt1/7/21, grid4x4, arterial4x4), loaded from
the installed sumo-rl package (their licences forbid copying them into this repository), run with
their fixed-time programs or as a scenario of the twin (`almere sim run resco:<name>`)."""

from __future__ import annotations

import importlib.util
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from libs.sumo_tools import run_sumo
from sim.kpis import delay
from sim.scenarios.almere_centrum.layout import Facility

NETWORKS = ("cologne1", "cologne3", "cologne8", "ingolstadt1", "ingolstadt7", "ingolstadt21", "grid4x4", "arterial4x4")


@dataclass(frozen=True, kw_only=True)
class Resco:
    name: str
    config: Path
    network: Path
    routes: list[Path]
    begin: float
    end: float

    @property
    def begin_s(self) -> float:
        return self.begin

    @property
    def trips(self) -> int:
        return scheduled_vehicles(self)

    def additional_files(self, mode: str) -> list[Path]:
        """None: the config's own files in every mode (no parking, detectors or rerouters)."""
        return []

    def parking_facilities(self) -> list[Facility]:
        return []

    def centre_edges(self) -> set[str]:
        return set()

    def walks_to(self) -> dict[str, str]:
        return {}


def locate(name: str) -> Resco:
    if name not in NETWORKS:
        raise ValueError(f"unknown RESCO network {name!r}; known: {', '.join(NETWORKS)}")
    spec = importlib.util.find_spec("sumo_rl")  # found, not imported: importing sumo_rl wants SUMO_HOME set
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the sumo-rl package is not installed")
    folder = Path(spec.submodule_search_locations[0]) / "nets" / "RESCO" / name
    config = folder / f"{name}.sumocfg"
    root = ET.parse(config).getroot()  # noqa: S314
    network = folder / root.find("input/net-file").get("value", "")  # type: ignore[union-attr]
    routes = [folder / r for r in root.find("input/route-files").get("value", "").split(",")]  # type: ignore[union-attr]
    time = root.find("time")
    begin = float(time.find("begin").get("value", 0)) if time is not None else 0.0  # type: ignore[union-attr]
    end = float(time.find("end").get("value", 3600)) if time is not None else 3600.0  # type: ignore[union-attr]
    return Resco(name=name, config=config, network=network, routes=routes, begin=begin, end=end)


def scheduled_vehicles(resco: Resco) -> int:
    return sum(
        1
        for routes in resco.routes
        for element in ET.parse(routes).getroot()  # noqa: S314
        if element.tag in ("vehicle", "trip")
    )


def run_fixed_time(resco: Resco, out_dir: Path, *, seed: int, end: float | None = None) -> dict[str, float]:
    """The network's own (fixed-time) programs, no teleports; RESCO's delay over every scheduled vehicle
    (timeLoss + departDelay; vehicles never inserted count their wait until the end)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tripinfo = out_dir / f"{resco.name}-seed{seed}.tripinfo.xml"
    stop = resco.end if end is None else resco.begin + end
    run_sumo(
        resco.config,
        tripinfo,
        "--seed",
        str(seed),
        "--end",
        f"{stop:.0f}",
        "--time-to-teleport",
        "-1",
        "--tripinfo-output.write-undeparted",
    )
    return measure(tripinfo, scheduled_vehicles(resco))


def measure(tripinfo: Path, scheduled: int) -> dict[str, float]:
    """RESCO's delay (mean over every vehicle in the tripinfo, never-inserted ones included: run SUMO
    with --tripinfo-output.write-undeparted), trip and waiting time of those that departed."""
    every = ET.parse(tripinfo).getroot().findall("tripinfo")  # noqa: S314 - our own SUMO output
    infos = [i for i in every if float(i.get("depart", "-1")) >= 0]
    finished = [i for i in infos if float(i.get("arrival", "-1")) >= 0]
    return {
        "vehicles_scheduled": scheduled,
        "vehicles_in_tripinfo": len(every),
        "vehicles_departed": len(infos),
        "vehicles_unfinished": len(infos) - len(finished),
        "delay_s": sum(delay(i) for i in every) / max(1, len(every)),
        "trip_time_s": sum(float(i.get("duration", 0)) for i in infos) / max(1, len(infos)),
        "waiting_time_s": sum(float(i.get("waitingTime", 0)) for i in infos) / max(1, len(infos)),
    }
