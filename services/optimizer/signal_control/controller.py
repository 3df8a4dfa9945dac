"""Our controller: actuation with pressure. Hold the running green while it still serves someone
(a moving car reaches its stop line within `gap_s`; halted cars do not count, see `arrival_s`) and
nobody else needs it much more (`overpower`, `max_green_s`); when it gaps out, give green to the
phase with the most weighted demand: upstream vehicles plus halted ones again (they have already
stopped; arrivals may still pass without stopping), minus halted vehicles downstream. The guards of
max-pressure (spill-back gates, starvation, deadlock) come first. Pure decision code: it sees only
`Snapshot`s (counts and, near stop lines, distances and speeds, as detector chains would give)."""

from __future__ import annotations

from dataclasses import dataclass

from services.optimizer.signal_control import guards
from services.optimizer.signal_control.maxpressure import MaxPressure, Params
from services.optimizer.signal_control.model import Intersection, Snapshot

HALTED_MS = 0.5


@dataclass(frozen=True)
class OursParams(Params):
    gap_s: float = 4.0  # gap-out: no car of the running green arrives within this
    max_green_s: float = 60.0  # then it yields to any phase with demand
    overpower: float = 3.0  # ... or earlier, once another phase's demand is this many times larger
    up_all: float = 1.0
    up_halted: float = 1.0
    down_all: float = 0.0
    down_halted: float = 1.0


OURS = OursParams()


def arrival_s(distance_m: float, speed: float) -> float:
    """When a moving car reaches the stop line at its speed. Halted cars do not extend a green: if
    nobody in front of them moves (the head car yields on a permissive turn, or the exit is
    jammed), holding the green serves nobody; a discharging queue has moving cars at its head."""
    if speed < HALTED_MS:
        return float("inf")
    return distance_m / speed


class Ours(MaxPressure):
    name = "ours"
    params: OursParams

    def __init__(self, intersection: Intersection, params: OursParams | None = None) -> None:
        super().__init__(intersection, params or OURS)

    def next_arrival(self, phase: int, snap: Snapshot, gates: set[int]) -> float:
        """Seconds until the next car of `phase`'s open links reaches the stop line (inf: none)."""
        soonest = float("inf")
        lanes = {m.in_lane for m in self.intersection.program.greens[phase].movements if m.link not in gates}
        for in_lane in lanes:
            for lane, offset in self.intersection.near.get(in_lane, ()):
                for to_end, speed in snap.positions.get(lane, ()):
                    soonest = min(soonest, arrival_s(offset + to_end, speed))
        return soonest

    def choose(self, snap: Snapshot, scores: list[float], gates: set[int]) -> tuple[int, str]:
        usable = guards.open_phases(self.intersection, gates)
        forced = self.guarded(snap, scores, usable, gates)
        if forced is not None:
            return forced
        current, p = self.clock.current, self.params
        others = [i for i in usable if i != current and scores[i] > 0]
        if not others:
            return current, "rest: nobody else waits"
        best = max(others, key=lambda i: scores[i])
        serving = current in usable and self.next_arrival(current, snap, gates) <= p.gap_s
        within_max = self.clock.green_for(snap.time) < p.max_green_s
        outweighed = scores[best] > p.overpower * max(scores[current], 0.0) + p.switch_margin
        if serving and within_max and not outweighed:
            return current, "extend"
        return best, "gap-out" if not serving else ("max-out" if not within_max else "outweighed")
