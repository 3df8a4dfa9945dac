"""The scenarios a run of the twin takes, behind one interface: almere-centrum and its variants, your
own network (`byo:<.osm or .net.xml>`), a RESCO map (`resco:<name>`) and a generated city of any
size (`city-<lights>`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from sim.scenarios import almere_centrum, byo, city, resco
from sim.scenarios.almere_centrum.layout import Facility
from sim.variants import VARIANTS, Responder, ScriptedIncident, Variant

BYO, RESCO = "byo:", "resco:"
FORMS = (
    f"{', '.join(sorted(VARIANTS))}, {BYO}<.osm or .net.xml file>, {RESCO}<{'|'.join(resco.NETWORKS)}>, "
    f"{city.PREFIX}<traffic lights, e.g. 22|100|500>"
)
MAX_CITY_LIGHTS = 5000


class RunnableScenario(Protocol):
    """What a run needs of a scenario built for one seed."""

    @property
    def network(self) -> Path: ...
    @property
    def config(self) -> Path: ...
    @property
    def trips(self) -> int: ...  # vehicles scheduled
    @property
    def begin_s(self) -> float: ...  # the simulated time its config begins at

    def additional_files(self, mode: str) -> list[Path]:
        """SUMO's additional files in a mode; they replace the config's own (none: the config's run)."""
        ...

    def parking_facilities(self) -> list[Facility]:
        """The parking areas the garage counters report and the runner samples."""
        ...

    def centre_edges(self) -> set[str]:
        """The destination zone: a parking search is measured from entering it."""
        ...

    def walks_to(self) -> dict[str, str]:
        """{vehicle id: junction its driver walks to after parking}."""
        ...


class Source(Protocol):
    """A scenario by name: what happens on its streets and how to build it."""

    @property
    def name(self) -> str: ...  # its folder under a run's out root
    @property
    def incidents(self) -> tuple[ScriptedIncident, ...]: ...
    @property
    def responders(self) -> tuple[Responder, ...]: ...

    def build(self, out_root: Path, *, seed: int, scale: float, end_s: float) -> RunnableScenario:
        """Build (or reuse) its files under out_root/build."""
        ...


@dataclass(frozen=True)
class AlmereCentrum:
    variant: Variant

    @property
    def name(self) -> str:
        return self.variant.name

    @property
    def incidents(self) -> tuple[ScriptedIncident, ...]:
        return self.variant.incidents

    @property
    def responders(self) -> tuple[Responder, ...]:
        return self.variant.responders

    def build(self, out_root: Path, *, seed: int, scale: float, end_s: float) -> almere_centrum.Scenario:
        demand = "event" if self.variant.event else "normal"
        folder = out_root / "build" / f"{self.variant.base}-{demand}-scale{scale:g}-{end_s:.0f}s"
        return almere_centrum.build(folder, seed=seed, scale=scale, horizon_s=end_s, event=self.variant.event)


@dataclass(frozen=True)
class ByoNetwork:
    """Your own network with random trips (`byo.TRIPS` at scale 1) and parking on its longest streets."""

    source: Path
    incidents: tuple[ScriptedIncident, ...] = ()
    responders: tuple[Responder, ...] = ()

    @property
    def name(self) -> str:
        return f"byo-{self.source.name.split('.')[0]}"

    def build(self, out_root: Path, *, seed: int, scale: float, end_s: float) -> byo.ByoScenario:
        folder = out_root / "build" / f"{self.name}-seed{seed}-scale{scale:g}-{end_s:.0f}s"
        return byo.build(self.source, folder, trips=max(1, round(byo.TRIPS * scale)), horizon_s=end_s, seed=seed)


@dataclass(frozen=True)
class RescoMap:
    """A RESCO map with its own demand (the scale does not apply)."""

    network: str
    incidents: tuple[ScriptedIncident, ...] = ()
    responders: tuple[Responder, ...] = ()

    @property
    def name(self) -> str:
        return f"resco-{self.network}"

    def build(self, out_root: Path, *, seed: int, scale: float, end_s: float) -> resco.Resco:
        return resco.locate(self.network)


@dataclass(frozen=True)
class City:
    """A generated city of about `lights` traffic lights (sim/scenarios/city), its collision on the
    arterial into the centre and its event."""

    lights: int

    @property
    def name(self) -> str:
        return f"{city.PREFIX}{self.lights}"

    @property
    def incidents(self) -> tuple[ScriptedIncident, ...]:
        return (city.incident(city.layout.Grid.for_lights(self.lights)),)

    @property
    def responders(self) -> tuple[Responder, ...]:
        return ()

    def build(self, out_root: Path, *, seed: int, scale: float, end_s: float) -> city.CityScenario:
        folder = out_root / "build" / f"{self.name}-scale{scale:g}-{end_s:.0f}s"
        return city.build(folder, lights=self.lights, seed=seed, scale=scale, horizon_s=end_s)


def resolve(name: str) -> Source:
    """The scenario a name stands for (see FORMS); ValueError for one that stands for none."""
    if name in VARIANTS:
        return AlmereCentrum(VARIANTS[name])
    if name.startswith(BYO):
        source = Path(name.removeprefix(BYO))
        if not source.is_file():
            raise ValueError(f"{BYO} needs an .osm or .net.xml file; {source} is none")
        return ByoNetwork(source)
    if name.startswith(RESCO):
        network = name.removeprefix(RESCO)
        if network not in resco.NETWORKS:
            raise ValueError(f"unknown RESCO network {network!r}; known: {', '.join(resco.NETWORKS)}")
        return RescoMap(network)
    lights = name.removeprefix(city.PREFIX)
    if name.startswith(city.PREFIX) and lights.isdigit():
        if not 4 <= int(lights) <= MAX_CITY_LIGHTS:
            raise ValueError(f"a generated city has 4 to {MAX_CITY_LIGHTS} traffic lights, not {lights}")
        return City(int(lights))
    raise ValueError(f"unknown scenario {name!r}; known: {FORMS}")
