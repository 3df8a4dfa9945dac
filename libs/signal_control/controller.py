"""`PressureActuated`, the default adaptive controller: actuation (gap-out on moving cars) with
max-pressure's demand and guards; platoon holds for arterials as an option (`COORDINATED`).

Gridlock. Without teleports a lock is for good, so the controller must never be the one that
starts it. A lock is a cycle of links each waiting for room on the next; it forms where cars stop
inside a junction box, because there they block the crossing streams that would have made the room.
The signal controls only two ways in: its own green, and how long a queue on its approach stands.
- Green into a full lane (spill-back gate): a car sent on would stop in this light's own box. The
  gate holds that link red until its exit has room, and an intersection whose every exit is full
  shows red (it meters the inflow of the jam around it).
- A queue back over the junction behind (spill-over guard): a short approach lane (a car to three,
  under layout's SHORT_LINK_M) begins at a priority junction (no signal there holds cars back);
  once its halted queue fills it while a car stands at the end of the lane behind (the near
  chain's positions), every further car stops in that junction's box, where it blocks the roads
  crossing there, often the very roads the other phases here must discharge into. That is how
  cologne3 locked (seed 3, 15.7x fixed time): a 12 m approach filled during a long cross green,
  the priority junction behind it filled with cars for it, and the crossing traffic stood in the
  box with its foes. Once the boxes hold such a cycle no signal state clears it (all red was
  tried: nobody moves), so the guard acts before: an approach spilled back for `spill_s` is
  served next, whatever the pressures say (after the starvation guard, which bounds everyone's
  red). Pressure cannot do it: a lane that holds three cars never outweighs a long queue.
  Longer lanes are left to pressure, and the guard forces as little as it can: forcing queues
  out of turn on every approach from a priority junction (tried) pushed them into the 12 m links
  of ingolstadt21's pair of lights and locked that pair on 2 seeds in 5. So a forced green only
  drains into exits the queue fits in, and a full lane with nobody waiting behind it (one car at
  a red on a 9 m approach) forces nothing: it blocks nobody. The lanes, and whether a signal
  meters their start, come from the network (layout.py), not per-map tuning; where a signal
  stands behind, its own gate holds the cars back and the guard stays out.
- A green nobody can use (deadlock guard): its cars all stand for `stuck_s` because their exit or
  the box is blocked; holding it serves nobody, so another phase gets its turn.
Not covered yet: a cycle spanning lights (each light sees its own lanes and the others' clocks,
not their queues). Two lights joined by short links both ways (ingolstadt21's pair, 12 m) lock
when both links fill while cars for them wait in both boxes; the gates and the drain weight on
such links (layout.py) keep it rare, and it is what a perturbed timing there still risks.
"""

from __future__ import annotations

from dataclasses import dataclass

from libs.signal_control import guards
from libs.signal_control.maxpressure import MaxPressure, Params
from libs.signal_control.model import Intersection, Snapshot
from libs.signal_control.phases import GREEN

HALTED_MS = 0.5


@dataclass(frozen=True, kw_only=True)
class PressureActuatedParams(Params):
    gap_s: float = 4.0  # gap-out: no car of the running green arrives within this
    max_green_s: float = 60.0  # then it yields to any phase with demand
    overpower: float = 3.0  # ... or earlier, once another phase's demand is this many times larger
    up_all: float = 1.0
    up_halted: float = 1.0
    down_all: float = 0.0
    down_halted: float = 1.0
    # Gapped out: switch only once another phase's first car is within its yellow + `lead_s` of the
    # stop line (None: switch at once). Green then starts as that car arrives, and the running green
    # keeps serving latecomers meanwhile.
    lead_s: float | None = 0.0
    # Coordination along arterials: a gapped-out green is held for the front of a platoon that a
    # light up the road has released and that reaches this stop line within this many seconds
    # (None: off). Costs the cross street that much red; see README for what it gave.
    platoon_hold_s: float | None = None
    spill_s: float | None = 10.0


OURS = PressureActuatedParams()
# PressureActuated plus platoon holds: -4 to -7 % delay on almere-centrum's arterial grid, +1 to +4 % on
# cologne8, one gridlock in three seeds on ingolstadt21 (README): for arterial networks, by choice.
COORDINATED = PressureActuatedParams(platoon_hold_s=15.0)


def arrival_s(distance_m: float, speed: float) -> float:
    """When a moving car reaches the stop line at its speed. Halted cars do not extend a green: if
    nobody in front of them moves (the head car yields on a permissive turn, or the exit is
    jammed), holding the green serves nobody; a discharging queue has moving cars at its head."""
    if speed < HALTED_MS:
        return float("inf")
    return distance_m / speed


class PressureActuated(MaxPressure):
    """Actuation with pressure. Hold the running green while it still serves someone (a moving car reaches
    its stop line within `gap_s`; halted cars do not count, see `arrival_s`) and nobody else needs it
    much more (`overpower`, `max_green_s`); when it gaps out, give green to the phase with the most
    weighted demand: upstream vehicles plus halted ones again (they have already stopped; arrivals may
    still pass without stopping), minus halted vehicles downstream. The guards of max-pressure
    (spill-back gates, starvation, deadlock) come first. A gapped-out green is not left before another
    phase needs it (unless outweighed): only once that phase's first car is a yellow away (`lead_s`), so
    cars still coming on the running green are served until the switch has to start. Pure decision code:
    it sees only `Snapshot`s (counts and, near stop lines, distances and speeds, as detector chains
    would give)."""

    name = "ours"
    params: PressureActuatedParams

    def __init__(self, intersection: Intersection, params: PressureActuatedParams | None = None) -> None:
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

    def _exits_queued(self, phase: int, snap: Snapshot) -> bool:
        """Someone stands on a lane `phase` sends traffic into: a platoon would queue there, not pass."""
        entry = self.intersection.entry
        return any(
            snap.halting.get(lane, 0) for m in self.intersection.program.greens[phase].movements
            for lane in entry.get(m.out_lane, ((), 0.0))[0]
        )  # fmt: skip

    def platoon(self, phase: int, snap: Snapshot, gates: set[int], within_s: float) -> float:
        """Vehicles released towards `phase`'s open links by lights up the road whose front reaches
        this stop line within `within_s` (those lights show green there; a front that has arrived
        is the near chain's to time)."""
        size = 0.0
        lanes = {m.in_lane for m in self.intersection.program.greens[phase].movements if m.link not in gates}
        for in_lane in lanes:
            for source in self.intersection.platoons.get(in_lane, ()):
                clock = self.neighbours.get(source.tls_id)
                if clock is None or clock.in_transition or not any(clock.shown[k] in GREEN for k in source.links):
                    continue
                if 0 < clock.green_since + source.travel_s - snap.time <= within_s:
                    size += sum(snap.vehicles.get(lane, 0) for lane in source.lanes)
        return size

    def first_need(self, phase: int, snap: Snapshot, gates: set[int]) -> float:
        """Seconds until `phase`'s open links may have a car at the stop line: 0 if one stands in a
        near chain, else the next moving car's arrival at its speed, bounded by what the chain cannot
        see (`seen_s`: a signal close upstream may release a car any moment); inf: nobody comes."""
        soonest = float("inf")
        lanes = {m.in_lane for m in self.intersection.program.greens[phase].movements if m.link not in gates}
        for in_lane in lanes:
            soonest = min(soonest, self.intersection.seen_s.get(in_lane, float("inf")))
            for lane, offset in self.intersection.near.get(in_lane, ()):
                if snap.halting.get(lane, 0) > 0:
                    return 0.0
                for to_end, speed in snap.positions.get(lane, ()):
                    soonest = min(soonest, (offset + to_end) / max(speed, 0.1))
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
        if (
            p.platoon_hold_s is not None
            and within_max
            and current in usable
            and not self._exits_queued(current, snap)
            and self.platoon(current, snap, gates, p.platoon_hold_s) >= max(scores[best], 1.0)
        ):
            return current, "hold: platoon on its way"
        if p.lead_s is not None and within_max and not outweighed:
            need = min(self.first_need(i, snap, gates) for i in others)
            if need > self.clock.yellow_s + p.lead_s:
                return current, "hold: nobody else arrives yet"
        return best, "gap-out" if not serving else ("max-out" if not within_max else "outweighed")
