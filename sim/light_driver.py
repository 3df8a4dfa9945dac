"""Steps a libsumo simulation while a `Control` drives its lights: the controllers in this process
(`DirectControl`, the batch bench) or the optimizer through the signal service
(sim/adaptive_signals.py). libsumo holds one simulation per process."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from libs.signal_control.loop import Controller, ControlLoop
from libs.signal_control.model import Snapshot
from libs.signal_control.phases import MIN_YELLOW_S, transition_steps
from libs.sumo_tools import sumo_binary

GRIDLOCK_WAIT_S = 300.0  # a car standing this long (no teleports) means gridlock, not a red light
ALL_RED_S = 2.0  # after the yellow into a new program: the junction clears before any new green


class Control(Protocol):
    """Who drives the lights of a running simulation: shows its states with `show`."""

    def start(self, ls: Any, now: float, record: bool) -> None: ...
    def step(self, ls: Any, now: float) -> int: ...  # returns how many decisions were taken
    def close(self) -> None: ...  # the run is over


def _libsumo() -> Any:
    import libsumo
    import sumo  # noqa: F401  - sets SUMO_HOME before libsumo does

    return libsumo


def start(args: list[str]) -> Any:
    """Start SUMO in this process (args without the binary) and return the libsumo module."""
    ls = _libsumo()
    ls.start([sumo_binary("sumo"), *args])
    return ls


@dataclass
class RunStats:
    gridlock_at: float | None = None  # first time a car had stood GRIDLOCK_WAIT_S
    longest_wait_s: float = 0.0
    teleports: int = 0
    decisions: int = 0
    histories: dict[str, list[tuple[float, str]]] = field(default_factory=dict)  # tls -> (start, state)


def _check_gridlock(ls: Any, now: float, stats: RunStats) -> None:
    waits = [ls.vehicle.getWaitingTime(v) for v in ls.vehicle.getIDList()]
    longest = max(waits, default=0.0)
    stats.longest_wait_s = max(stats.longest_wait_s, longest)
    if longest >= GRIDLOCK_WAIT_S and stats.gridlock_at is None:
        stats.gridlock_at = now


def run(
    ls: Any,
    until: float,
    control: Control | None,
    *,
    record: bool = False,
    check_every_s: float = 30.0,
    on_step: Callable[[float], None] | None = None,
) -> RunStats:
    """Step the started simulation to `until` while `control` drives the lights (None: the
    network's own programs run). `record`: keep every light's shown states (for validation)."""
    stats = RunStats()
    now = ls.simulation.getTime()
    if control is not None:
        control.start(ls, now, record)
    recorded = ls.trafficlight.getIDList() if record else []
    shown = {tls: ls.trafficlight.getRedYellowGreenState(tls) for tls in recorded}
    stats.histories = {tls: [(now, state)] for tls, state in shown.items()}
    next_check = now + check_every_s
    try:
        while now < until:
            ls.simulationStep()
            now = ls.simulation.getTime()
            stats.teleports += ls.simulation.getStartingTeleportNumber()
            if control is not None:
                stats.decisions += control.step(ls, now)
            for tls in recorded:  # what SUMO really shows, whoever controls it
                state = ls.trafficlight.getRedYellowGreenState(tls)
                if shown.get(tls) != state:
                    shown[tls] = state
                    stats.histories.setdefault(tls, []).append((now, state))
            if now >= next_check:
                _check_gridlock(ls, now, stats)
                next_check = now + check_every_s
            if on_step is not None:
                on_step(now)
    finally:
        if control is not None:
            control.close()
    return stats


class DirectControl:
    """The controllers in this process, on libsumo's counts: fast batch evaluation, no services."""

    def __init__(self, controllers: Iterable[Controller]) -> None:
        self.loop = ControlLoop(controllers)

    def close(self) -> None:
        """Nothing to end: the controllers live in this process."""

    def start(self, ls: Any, now: float, record: bool) -> None:
        for shown in self.loop.start(now, record):
            show(ls, shown.decision.tls_id, shown.decision.state)

    def step(self, ls: Any, now: float) -> int:
        before = self.loop.decisions
        for shown in self.loop.step(now, lambda t, lanes, near: read_lanes(ls, t, lanes=lanes, near=near, lazy=True)):
            show(ls, shown.decision.tls_id, shown.decision.state)
        return self.loop.decisions - before


def read_lanes(ls: Any, now: float, *, lanes: Iterable[str], near: Iterable[str], lazy: bool = False) -> Snapshot:
    """Vehicles and halting vehicles on `lanes`; distance to the lane's end and speed of each
    vehicle on the `near` lanes: what detectors would report. `lazy`: the positions are read when
    first asked for (before the simulation steps on: most decisions never look at them)."""
    lanes = list(lanes)
    vehicles = {lane: ls.lane.getLastStepVehicleNumber(lane) for lane in lanes}
    halting = {lane: ls.lane.getLastStepHaltingNumber(lane) for lane in lanes}
    positions = Positions(ls, near)
    return Snapshot(now, vehicles, halting, positions if lazy else dict(positions))


class Positions(Mapping[str, tuple[tuple[float, float], ...]]):
    """Per near lane with vehicles on it, (distance to the lane's end, speed) of each, read from
    libsumo per lane when first asked for."""

    def __init__(self, ls: Any, near: Iterable[str]) -> None:
        self._ls, self._near = ls, frozenset(near)
        self._read: dict[str, tuple[tuple[float, float], ...]] = {}

    def __getitem__(self, lane: str) -> tuple[tuple[float, float], ...]:
        if lane not in self._read:
            if lane not in self._near:
                raise KeyError(lane)
            ids = self._ls.lane.getLastStepVehicleIDs(lane)
            vehicle, length = self._ls.vehicle, self._ls.lane.getLength(lane) if ids else 0.0
            self._read[lane] = tuple((length - vehicle.getLanePosition(v), vehicle.getSpeed(v)) for v in ids)
        if not self._read[lane]:
            raise KeyError(lane)
        return self._read[lane]

    def __iter__(self) -> Iterator[str]:
        return (lane for lane in self._near if lane in self)

    def __len__(self) -> int:
        return sum(1 for _ in self)


class SubscribedLanes:
    """`read_lanes` for a fixed selection by libsumo subscription: one call a step returns every
    lane's counts (a call per lane and value costs three times as much for a city's ~200 lanes).
    Results come with the step after `select`."""

    def __init__(self, ls: Any) -> None:
        self._ls = ls
        self._lanes: list[str] = []
        self._near: set[str] = set()
        self._lengths: dict[str, float] = {}

    def select(self, lanes: Iterable[str], near: Iterable[str]) -> None:
        c, lane_api = self._ls.constants, self._ls.lane
        lanes, self._near = list(lanes), set(near)
        for lane in set(self._lanes) - set(lanes):
            lane_api.unsubscribe(lane)
        counts = [c.LAST_STEP_VEHICLE_NUMBER, c.LAST_STEP_VEHICLE_HALTING_NUMBER]
        for lane in lanes:
            lane_api.subscribe(lane, [*counts, c.LAST_STEP_VEHICLE_ID_LIST] if lane in self._near else counts)
        self._lanes = lanes
        self._lengths = {lane: lane_api.getLength(lane) for lane in self._near}

    def read(self, now: float) -> Snapshot:
        """What `read_lanes` returns for the selection, from this step's subscription results."""
        c, vehicle = self._ls.constants, self._ls.vehicle
        results = self._ls.lane.getAllSubscriptionResults()
        vehicles, halting, positions = {}, {}, {}
        for lane in self._lanes:
            values = results[lane]
            vehicles[lane] = values[c.LAST_STEP_VEHICLE_NUMBER]
            halting[lane] = values[c.LAST_STEP_VEHICLE_HALTING_NUMBER]
            ids = values.get(c.LAST_STEP_VEHICLE_ID_LIST)
            if ids:
                length = self._lengths[lane]
                positions[lane] = tuple((length - vehicle.getLanePosition(v), vehicle.getSpeed(v)) for v in ids)
        return Snapshot(now, vehicles, halting, positions)


def show(ls: Any, tls_id: str, state: str) -> None:
    ls.trafficlight.setRedYellowGreenState(tls_id, state)


def switch_program(
    ls: Any, tls_id: str, *, program: str, kind: int, phases: list[tuple[str, float, float, float]]
) -> None:
    """Install a program ((state, duration, min, max) per phase; SUMO's `kind`) and run it from
    phase 0, after what the light shows now has cleared: the movements losing green (or caught in a
    yellow) through yellow, then all red; a program never starts on a green conflicting with the one
    before. The transition is part of the program, its last phase leads back to phase 0 of the plan."""
    make = ls.trafficlight.Phase
    lead = transition_steps(ls.trafficlight.getRedYellowGreenState(tls_id), phases[0][0], MIN_YELLOW_S, ALL_RED_S)
    body = [make(duration, state, low, high) for state, duration, low, high in phases]
    if lead:
        last = phases[-1]
        body[-1] = make(last[1], last[0], last[2], last[3], (len(lead),))
    clearing = [make(seconds, state, seconds, seconds) for state, seconds in lead]
    ls.trafficlight.setProgramLogic(tls_id, ls.trafficlight.Logic(program, kind, 0, [*clearing, *body]))
    ls.trafficlight.setProgram(tls_id, program)
