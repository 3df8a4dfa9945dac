"""Safety nets around any pressure rule, from counts only: spill-back gates, a bound on red, and a way
out of deadlock."""

# - spill-back: never give green into a lane whose halted queue reaches back to the junction (the
#   cars would stop inside the junction box and block the cross streets: the seed of gridlock). The
#   links concerned are held red inside the running green (after their min green and a yellow) and
#   start red in the next green (`PhaseClock.gate` / `switch`);
# - starvation: no link whose approach has a halted car stays red longer than `max_red_s`;
# - spill-over: a short approach whose halted queue reaches back into the priority junction behind
#   it (nobody there holds cars back), with a car waiting there, is served after `spill_s`: cars
#   would stand in that box and block the streams crossing it (controller.py has the case and why);
# - deadlock: a green whose cars all stand for `stuck_s` is given up for another open phase; an
#   intersection whose every exit is full shows red until room appears (the gates), so it never
#   feeds a gridlock, and serves whoever has room first.

from __future__ import annotations

from dataclasses import dataclass, field

from libs.signal_control.model import Intersection, PhaseClock, Snapshot

HALTED_MS = 0.1  # SUMO's halting speed
VEHICLE_SPACING_M = 7.5  # a halted car and its gap: SUMO default 5 m + 2.5 m (cologne8 uses 4.3 + 1.5)


def blocked_out_lanes(intersection: Intersection, snap: Snapshot, spacing_m: float = VEHICLE_SPACING_M) -> set[str]:
    """Receiving lanes whose halted queue reaches back to the junction (less than one car of room)."""
    blocked = set()
    for out_lane, (lanes, length_m) in intersection.entry.items():
        queued_m = spacing_m * sum(snap.halting.get(lane, 0) for lane in lanes)
        if queued_m > 0 and queued_m >= length_m - spacing_m:  # lanes of 0-7 m: one halted car
            blocked.add(out_lane)
    return blocked


def room_m(intersection: Intersection, snap: Snapshot, spacing_m: float = VEHICLE_SPACING_M) -> dict[str, float]:
    """Per receiving lane, the metres not taken by cars on it, moving or not (spill-back looks at
    halted ones only: cars still rolling on are fine for a green in turn, not for one forced)."""
    return {
        out_lane: length_m - spacing_m * sum(snap.vehicles.get(lane, 0) for lane in lanes)
        for out_lane, (lanes, length_m) in intersection.entry.items()
    }


def links_into(intersection: Intersection, blocked: set[str]) -> set[int]:
    """Signal links with a connection into a blocked lane: one car for it would stop in the junction."""
    return {m.link for m in intersection.program.links if m.out_lane in blocked}


def open_phases(intersection: Intersection, gates: set[int]) -> list[int]:
    """Green phases with at least one link not held red for spill-back (a green that would show
    all red serves nobody)."""
    return [i for i, green in enumerate(intersection.program.greens) if green.link_ids - gates]


def starving(intersection: Intersection, clock: PhaseClock, snap: Snapshot, max_red_s: float) -> set[int]:
    """Links red for `max_red_s` whose approach lane has a halted car (which may be waiting for
    exactly that link: counts cannot tell which way the car in front wants to go)."""
    # Red that long first: rare, and cheaper to ask than the counts.
    if clock.longest_red(snap.time) < max_red_s:
        return set()
    long_red = [m for m in intersection.program.links if clock.red_for(snap.time, m.link) >= max_red_s]
    halting, stops = snap.halting, intersection.stops
    return {m.link for m in long_red if any(halting.get(x, 0) > 0 for x in stops[m.in_lane])}


def spilling_over(intersection: Intersection, snap: Snapshot, spacing_m: float = VEHICLE_SPACING_M) -> set[str]:
    """In lanes whose halted queue reaches back to their start at a junction (`Intersection.spill`)
    while a car stands at the end of a lane feeding them: that junction holds cars for them (a
    full lane with nobody behind blocks nothing)."""
    return {
        lane
        for lane, length_m in intersection.spill.items()
        if (halted := snap.halting.get(lane, 0))
        and spacing_m * halted >= length_m - spacing_m
        and _waiting_behind(intersection, snap, lane, length_m, spacing_m)
    }


def _waiting_behind(intersection: Intersection, snap: Snapshot, lane: str, length_m: float, spacing_m: float) -> bool:
    """A car stands within a car's length of the end of a lane feeding `lane` (its near chain's
    lanes right behind it, offset by `lane`'s length)."""
    return any(
        to_end < spacing_m and speed < HALTED_MS
        for feeder, offset in intersection.near.get(lane, ())
        if 0.0 < offset <= length_m + 0.01
        for to_end, speed in snap.positions.get(feeder, ())
    )


@dataclass
class SpillOverGuard:
    """Per intersection: which in lanes have spilled back over the junction behind them for `bound_s`
    without a break."""

    bound_s: float
    since: dict[str, float] = field(default_factory=dict)  # lane -> when its queue reached back

    def overdue(self, intersection: Intersection, snap: Snapshot) -> set[str]:
        now = spilling_over(intersection, snap)
        self.since = {lane: self.since.get(lane, snap.time) for lane in now}
        return {lane for lane, since in self.since.items() if snap.time - since >= self.bound_s}


@dataclass
class DeadlockGuard:
    """Per intersection: notices a green nobody can use, and breaks an all-blocked standstill by
    serving the phases in turn (round robin) rather than holding one forever."""

    stuck_s: float = 20.0
    since: float | None = None  # when the current green started moving nobody
    round_robin: int = 0
    breaks: int = field(default=0)

    def stuck(self, intersection: Intersection, clock: PhaseClock, snap: Snapshot) -> bool:
        """True once the current green has had cars on its lanes, all halted, for `stuck_s`."""
        lanes = intersection.green_stops[clock.current]
        cars = sum(snap.vehicles.get(lane, 0) for lane in lanes)
        halted = sum(snap.halting.get(lane, 0) for lane in lanes)
        if cars == 0 or halted < cars:
            self.since = None
            return False
        if self.since is None or self.since < clock.green_since:  # a new green starts a new watch
            self.since = snap.time
        return snap.time - self.since >= self.stuck_s

    def next_in_turn(self, clock: PhaseClock) -> int:
        """Break: the phase after the current one, in program order."""
        self.breaks += 1
        self.since = None
        return (clock.current + 1) % len(clock.program.greens)
