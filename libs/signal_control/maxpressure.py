"""Max-pressure (Varaiya 2013) on real networks: every `decide_every_s` after min green, run the green
whose movements have the most vehicles upstream minus downstream; the guards veto green into
spilled-back lanes, bound red, and break standstills."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from libs.signal_control import guards
from libs.signal_control.model import Decision, Intersection, PhaseClock, Snapshot
from libs.signal_control.phases import Movement
from libs.signal_control.pressure import Pressures

# Per lane, its weighted count upstream (in lanes) and downstream (out lanes), on one snapshot.
Shared = tuple[dict[str, float], dict[str, float]]


@dataclass(frozen=True, kw_only=True)
class Params:
    min_green_s: float = 5.0  # the signal service's minimum green
    max_red_s: float = 90.0  # starvation guard
    stuck_s: float = 20.0  # deadlock guard: a green that moves nobody this long is abandoned
    decide_every_s: float = 1.0
    gate_spillback: bool = True  # hold red single links into full lanes, within a green
    # spill-over guard: an approach whose queue has stood back into the junction behind it this long
    # is served next (None: off, as in classic max-pressure)
    spill_s: float | None = None
    switch_margin: float = 0.0  # pressure the challenger must beat the running green by
    # Pressure = upstream minus downstream, each a weighted sum of all and of halted vehicles.
    # Classic max-pressure counts every vehicle on both sides.
    up_all: float = 1.0
    up_halted: float = 0.0
    down_all: float = 1.0
    down_halted: float = 0.0


class MaxPressure:
    """One intersection. `start`, then each second `tick`; when `due`, `decide` on a snapshot.
    Counts cover ~200 m each way (layout.py's catchments): stop-line lanes a few metres long would
    otherwise never build pressure and starve."""

    name = "maxpressure"

    def __init__(self, intersection: Intersection, params: Params | None = None) -> None:
        self.intersection = intersection
        self.params = params or Params()
        self.clock = PhaseClock(intersection.program, self.params.min_green_s)
        self.deadlock = guards.DeadlockGuard(self.params.stuck_s)
        self.spill = None if self.params.spill_s is None else guards.SpillOverGuard(self.params.spill_s)
        links = intersection.program.links
        # What the other lights run by the same loop show (ControlLoop fills it): for coordination.
        self.neighbours: Mapping[str, PhaseClock] = {}
        self._priority: int | None = None  # the green a priority grant asks for (`call`)
        self._out_links = Counter(m.in_lane for m in links)  # links leaving each approach lane
        self._in_links = Counter(m.out_lane for m in links)  # links of this light entering each lane
        self._next = 0.0

    @property
    def tls_id(self) -> str:
        return self.intersection.tls_id

    def start(self, now: float, record: bool = False, shown: str | None = None) -> Decision:
        return self.clock.start(now, record, shown)

    def call(self, target_state: str | None) -> None:
        """A priority grant (an emergency vehicle, a late bus) wants the green of the program that
        gives `target_state`'s greens (None: the grant has ended). It comes before everything but
        min green and the yellow: the clock still switches safely."""
        self._priority = None if target_state is None else self.intersection.program.closest_green(target_state)

    def tick(self, now: float) -> Decision | None:
        return self.clock.tick(now)

    def due(self, now: float) -> bool:
        return not self.clock.in_transition and now >= self._next

    @property
    def pressure_weights(self) -> tuple[float, float, float, float]:
        """Up all, up halted, down all, down halted: for `PressureTable`."""
        p = self.params
        return p.up_all, p.up_halted, p.down_all, p.down_halted

    def decide(self, snap: Snapshot, pressures: Pressures | None = None) -> Decision | None:
        """Gate spilled-back links at once; after min green, pick the green to run. `pressures`:
        what every light asks of `snap`, computed for all at once (ControlLoop's `PressureTable`)."""
        self._next = snap.time + self.params.decide_every_s
        if not self.params.gate_spillback:
            gates: set[int] = set()
        elif pressures is not None:
            gates = pressures.gates(self.tls_id)
        else:
            gates = guards.links_into(self.intersection, guards.blocked_out_lanes(self.intersection, snap))
        gated = self.clock.gate(snap.time, gates)
        if not self.clock.may_switch(snap.time):
            return gated
        if pressures is not None and not gates:
            scores = pressures.scores(self.tls_id)
        else:
            shared: Shared = ({}, {})  # the phases' movements share lanes: each counted once
            scores = [self.score(i, snap, gates, shared) for i in range(len(self.intersection.program.greens))]
        choice, reason = self.choose(snap, scores, gates)
        return self.clock.switch(snap.time, choice, reason, frozenset(gates)) or gated

    def choose(self, snap: Snapshot, scores: list[float], gates: set[int]) -> tuple[int, str]:
        usable = guards.open_phases(self.intersection, gates)
        return self.guarded(snap, scores, usable, gates) or self.preferred(snap, scores, usable)

    def guarded(
        self, snap: Snapshot, scores: list[float], usable: list[int], gates: set[int]
    ) -> tuple[int, str] | None:
        """What the guards impose, if anything: a priority grant's green; leave a green that moves
        nobody; serve a starving link."""
        if self._priority is not None:
            return self._priority, "priority"
        current = self.clock.current
        if self.deadlock.stuck(self.intersection, self.clock, snap):
            others = [i for i in usable if i != current]
            if others:
                return max(others, key=lambda i: scores[i]), "deadlock: green moved nobody"
            return self.deadlock.next_in_turn(self.clock), "deadlock: every phase blocked, serving in turn"
        # A starving link into a full lane is not served by green: it waits for room first.
        starving = guards.starving(self.intersection, self.clock, snap, self.params.max_red_s) - gates
        if starving:
            greens = self.intersection.program.greens
            serving = [i for i in range(len(greens)) if greens[i].link_ids & starving]
            candidates = [i for i in serving if i in usable] or serving
            if current not in candidates:
                return max(candidates, key=lambda i: (len(greens[i].link_ids & starving), scores[i])), "starvation"
        return self.drain(snap, scores, usable, gates)

    def drain(self, snap: Snapshot, scores: list[float], usable: list[int], gates: set[int]) -> tuple[int, str] | None:
        """Serve an approach whose queue stands in the junction behind it (spill-over guard)."""
        if self.spill is None:
            return None
        spilling = self.spill.overdue(self.intersection, snap)
        if not spilling:
            return None
        greens, room = self.intersection.program.greens, guards.room_m(self.intersection, snap)

        def fits(m: Movement) -> bool:
            """The spilled queue fits where this movement sends it: pushed out of turn into a lane
            it fills (a short link to the next signal), it would stand in two boxes instead of one."""
            queue_m = guards.VEHICLE_SPACING_M * snap.halting.get(m.in_lane, 0)
            return m.link not in gates and room.get(m.out_lane, 0.0) - queue_m >= guards.VEHICLE_SPACING_M

        def drained(phase: int) -> int:
            return len({m.in_lane for m in greens[phase].movements if m.in_lane in spilling and fits(m)})

        serving = [i for i in usable if drained(i)]
        if not serving or self.clock.current in serving:
            return None
        return max(serving, key=lambda i: (drained(i), scores[i])), "spill-over: drain the queue out of the junction"

    def preferred(self, snap: Snapshot, scores: list[float], usable: list[int]) -> tuple[int, str]:
        """The open phase with the highest pressure."""
        current = self.clock.current
        if not usable:
            return current, "every phase blocked"
        best = max(usable, key=lambda i: scores[i])
        if best != current and scores[best] > scores[current] + self.params.switch_margin:
            return best, "pressure"
        return current, "hold"

    def score(self, phase: int, snap: Snapshot, gates: set[int], shared: Shared | None = None) -> float:
        """Σ over the phase's movements of upstream minus downstream vehicles, each lane's count
        shared among the movements that use it; links held red for spill-back count nothing.
        `shared`: each lane's upstream and downstream count, kept across the movements and phases
        scored on one snapshot (movements share lanes). `PressureTable` scores every light at once."""
        total, p = 0.0, self.params
        up, down = self.intersection.upstream, self.intersection.downstream
        ups, downs = shared if shared is not None else ({}, {})
        for m in self.intersection.program.greens[phase].movements:
            if m.link in gates:
                continue
            upstream = ups.get(m.in_lane)
            if upstream is None:
                feeding = up.get(m.in_lane, ())
                upstream = ups[m.in_lane] = p.up_all * snap.weighted(feeding) + p.up_halted * snap.weighted(
                    feeding, halting=True
                )
            downstream = downs.get(m.out_lane)
            if downstream is None:
                receiving = down.get(m.out_lane, ())
                downstream = downs[m.out_lane] = p.down_all * snap.weighted(receiving) + p.down_halted * snap.weighted(
                    receiving, halting=True
                )
            total += upstream / self._out_links[m.in_lane] - downstream / self._in_links[m.out_lane]
        return total
