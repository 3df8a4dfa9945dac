"""One control round for a set of lights, the same wherever the counts come from: libsumo in the
batch bench (sim/light_driver.py) or a caller's lane readings in the optimizer's adaptive control,
so both give the same phase sequences for the same traffic."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from libs.signal_control.model import Decision, Intersection, PhaseClock, Snapshot
from libs.signal_control.pressure import Pressures, PressureTable

# (now, lanes, near lanes) -> the counts at `now` (positions only for the near lanes)
Reader = Callable[[float, set[str], set[str]], Snapshot]


class Controller(Protocol):
    @property
    def tls_id(self) -> str: ...

    clock: PhaseClock
    intersection: Intersection
    neighbours: Mapping[str, PhaseClock]

    def start(self, now: float, record: bool = False, shown: str | None = None) -> Decision: ...
    def tick(self, now: float) -> Decision | None: ...
    def due(self, now: float) -> bool: ...
    @property
    def pressure_weights(self) -> tuple[float, float, float, float]: ...
    def decide(self, snap: Snapshot, pressures: Pressures | None = None) -> Decision | None: ...
    def call(self, target_state: str | None) -> None: ...


@dataclass(frozen=True)
class Shown:
    """A state to show. `step`: the controller committed to something new (it started, or decided);
    otherwise the clock plays out what its last step said (a yellow ending, a gate closing)."""

    controller: Controller
    decision: Decision
    step: bool


class ControlLoop:
    def __init__(self, controllers: Iterable[Controller]) -> None:
        self.controllers: list[Controller] = []
        self.clocks: dict[str, PhaseClock] = {}  # what every light of the loop shows, for coordination
        self.decisions = 0
        self.version = 0  # changes whenever a light joins or leaves
        self._table: tuple[int, PressureTable] | None = None  # (version, every light's scores)
        for c in controllers:
            self.add(c)

    def add(self, controller: Controller) -> None:
        self.controllers.append(controller)
        self.clocks[controller.tls_id] = controller.clock
        controller.neighbours = self.clocks
        self.version += 1

    def remove(self, controller: Controller) -> None:
        self.controllers.remove(controller)
        del self.clocks[controller.tls_id]
        self.version += 1

    def table(self) -> PressureTable:
        """What the lights in the loop now ask of each snapshot, for all at once."""
        if self._table is None or self._table[0] != self.version:
            self._table = (self.version, PressureTable(self.controllers))
        return self._table[1]

    def lanes(self) -> tuple[frozenset[str], frozenset[str]]:
        """Every lane the controllers count, and those near stop lines (positions wanted)."""
        lanes = frozenset().union(*(c.intersection.lanes for c in self.controllers))
        near = frozenset().union(*(c.intersection.near_lanes for c in self.controllers))
        return lanes, near

    def start(self, now: float, record: bool = False, shown: Mapping[str, str] | None = None) -> list[Shown]:
        """Every controller takes its light over (from the state it `shown`s, if known)."""
        shown = shown or {}
        return [Shown(c, c.start(now, record, shown.get(c.tls_id)), True) for c in self.controllers]

    def step(self, now: float, read: Reader) -> list[Shown]:
        """Advance every clock; lights free to decide read their lanes (once for all) and decide."""
        shown, due = [], []
        for c in self.controllers:
            decision = c.tick(now)
            if decision is not None:
                shown.append(Shown(c, decision, False))
            elif c.due(now):
                due.append(c)
        if due:
            lanes = set().union(*(c.intersection.lanes for c in due))
            near = set().union(*(c.intersection.near_lanes for c in due))
            snap = read(now, lanes, near)
            pressures = self.table().on(snap)
            for c in due:
                decision = c.decide(snap, pressures)
                self.decisions += 1
                if decision is not None:
                    shown.append(Shown(c, decision, True))
        return shown
