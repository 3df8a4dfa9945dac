"""What a controller sees and says, with no simulator in sight: the static layout of an intersection
(its program and which lanes feed and drain each movement), a snapshot of detector counts, and the
decision (the state to show). The same objects can be filled from libsumo or from detector messages."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property

from libs.signal_control.phases import GREEN, SignalProgram, transition_steps

Weighted = tuple[tuple[str, float], ...]  # (lane, weight): how much of a lane's count belongs here


@dataclass(frozen=True)
class PlatoonSource:
    """A light further up an arterial: green on `links` (from its approach `lanes`) sends a platoon
    that reaches this stop line `travel_s` later at the speed limit."""

    tls_id: str
    links: frozenset[int]
    lanes: tuple[str, ...]
    travel_s: float


@dataclass(frozen=True)
class Intersection:
    """`upstream[in_lane]`: the stop-line lane and the lanes feeding it, ~200 m back, weighted;
    `downstream[out_lane]`: the receiving lane and its continuation; `entry[out_lane]`: the lanes
    just after the junction whose queue, if it reaches back, blocks the movement (spill-back)
    and their total length in metres."""

    program: SignalProgram
    upstream: Mapping[str, Weighted]
    downstream: Mapping[str, Weighted]
    entry: Mapping[str, tuple[tuple[str, ...], float]]
    # in lane -> (lane, metres from that lane's end to the stop line) for the last ~100 m: where
    # arrivals are timed (what a detector chain near the stop line would see).
    near: Mapping[str, tuple[tuple[str, float], ...]] = field(default_factory=dict)
    # in lane -> seconds (at the speed limit) from the nearest upstream signal to the stop line, when
    # that signal is within the near chain: a car it releases arrives unseen within that time.
    seen_s: Mapping[str, float] = field(default_factory=dict)
    # in lane -> lights beyond the near chain whose greens send platoons down this lane.
    platoons: Mapping[str, tuple[PlatoonSource, ...]] = field(default_factory=dict)
    # in lane -> its length, for short in lanes that begin at a priority junction: a queue reaching
    # back over that start stands in the junction and blocks the traffic crossing it.
    spill: Mapping[str, float] = field(default_factory=dict)

    @property
    def tls_id(self) -> str:
        return self.program.tls_id

    @cached_property
    def lanes(self) -> frozenset[str]:
        """Every lane whose counts the controllers read (asked every second: kept)."""
        found: set[str] = set()
        for weighted in (*self.upstream.values(), *self.downstream.values()):
            found.update(lane for lane, _ in weighted)
        for lanes, _ in self.entry.values():
            found.update(lanes)
        for sources in self.platoons.values():
            found.update(lane for source in sources for lane in source.lanes)
        return frozenset(found | self.near_lanes)

    def stop_lanes(self, in_lane: str, within_m: float = 15.0) -> tuple[str, ...]:
        """Where a car waiting at `in_lane`'s stop line stands: the lane itself and, when it is only
        a few metres long (some are 0 m), the lanes right before it."""
        return tuple(lane for lane, offset in self.near.get(in_lane, ((in_lane, 0.0),)) if offset <= within_m)

    @cached_property
    def near_lanes(self) -> frozenset[str]:
        return frozenset(lane for chain in self.near.values() for lane, _ in chain)

    @cached_property
    def stops(self) -> Mapping[str, tuple[str, ...]]:
        """`stop_lanes` of every in lane (the guards ask every second: kept)."""
        return {lane: self.stop_lanes(lane) for lane in self.program.in_lanes}

    @cached_property
    def green_stops(self) -> tuple[frozenset[str], ...]:
        """Per green phase, the lanes where the cars it serves wait at the stop line."""
        return tuple(frozenset(x for lane in g.in_lanes for x in self.stops[lane]) for g in self.program.greens)


@dataclass(frozen=True)
class Snapshot:
    """Detector counts at `time`: vehicles and halting vehicles (speed < 0.1 m/s) per lane."""

    time: float
    vehicles: Mapping[str, int]
    halting: Mapping[str, int]
    # per lane near a stop line: (metres to the lane's end, speed m/s) of each vehicle on it
    positions: Mapping[str, tuple[tuple[float, float], ...]] = field(default_factory=dict)

    def weighted(self, lanes: Weighted, halting: bool = False) -> float:
        counts = self.halting if halting else self.vehicles
        return sum(counts.get(lane, 0) * w for lane, w in lanes)


@dataclass(frozen=True)
class Decision:
    tls_id: str
    state: str
    green: int  # the green phase running or being switched to
    reason: str = ""


@dataclass
class PhaseClock:
    """Runs an intersection's greens and the transitions between them. Callers say which green they
    want and which links to hold red (gates, for spill-back); the clock guarantees min green, a full
    yellow before any red, and it only ever shows a green of the program with links taken away."""

    program: SignalProgram
    min_green_s: float
    yellow_s: float = 3.0
    current: int = 0
    green_since: float = 0.0
    pending: list[tuple[str, float]] = field(default_factory=list)  # (state, until)
    target: int = 0
    history: list[tuple[float, str]] | None = None  # (start, state) of every state shown, if recording
    last_green: dict[int, float] = field(default_factory=dict)  # link -> last time it had green
    gated: dict[int, float] = field(default_factory=dict)  # link held red -> when its yellow began
    reopened: dict[int, float] = field(default_factory=dict)  # link given green again -> when
    shown: str = ""

    def start(self, now: float, record: bool = False, shown: str | None = None) -> Decision:
        """Take the light over from what it shows: `shown` (the last step of an earlier controller)
        or else the program's phase the first green comes from. At the green closest to it, through
        a yellow for whatever loses green (a permissive turn the program allows and this green
        does not), never abruptly."""
        self.green_since = now
        self.history = [] if record else None
        self.pending, self.gated, self.reopened = [], {}, {}  # a controller may take a light over again
        self.last_green = {m.link: now for m in self.program.links}  # nobody has waited yet
        self.yellow_s = max((d for steps in self.program.transitions.values() for s, d in steps[:1]), default=3.0)
        shown = shown or self.program.greens[self.current].source
        greens = self.program.greens
        self.current = self.target = self.program.closest_green(shown)
        self.shown = shown
        until = now
        for state, seconds in transition_steps(shown, greens[self.current].state, self.yellow_s):
            until += seconds
            self.pending.append((state, until))
        return self._show(now, self.pending[0][0] if self.pending else greens[self.current].state, "start")

    @property
    def in_transition(self) -> bool:
        return bool(self.pending)

    def green_for(self, now: float) -> float:
        return now - self.green_since

    def may_switch(self, now: float) -> bool:
        """No transition running, min green served (also by links re-opened), no gate yellow running."""
        return (
            not self.pending
            and self.green_for(now) >= self.min_green_s
            and all(now - t >= self.min_green_s for t in self.reopened.values())
            and all(now - t >= self.yellow_s for t in self.gated.values())
        )

    def tick(self, now: float) -> Decision | None:
        """Advance a transition or a gate's yellow; returns the state to show if it changes."""
        if not self.pending:
            self._mark_green(now)
            return self._show_if_changed(now, self._green_state(now), "gate")
        changed = False
        while self.pending and now >= self.pending[0][1]:
            self.pending.pop(0)
            changed = True
        if not changed:
            return None
        if self.pending:
            return self._show(now, self.pending[0][0], "transition")
        self.current, self.green_since = self.target, now
        return self._show(now, self._green_state(now), "green")

    def switch(self, now: float, to: int, reason: str, closed: frozenset[int] = frozenset()) -> Decision | None:
        """Start the transition to green `to`; its `closed` links (into full lanes) start red."""
        if to == self.current or not self.may_switch(now):
            return None
        self._mark_green(now)
        self.target, until = to, now
        self.pending, self.reopened = [], {}
        target = self.program.greens[to].state
        self.gated = {link: -math.inf for link in closed if target[link] in GREEN}  # red from the start
        # From what is shown (gated links already red), so every link that loses green gets its yellow.
        for state, seconds in transition_steps(self.shown, self._green_state(now, to), self.yellow_s):
            until += seconds
            self.pending.append((state, until))
        if not self.pending:  # the next green only adds greens: no clearance needed
            self.current, self.green_since = to, now
            return self._show(now, self._green_state(now), reason)
        return self._show(now, self.pending[0][0], reason)

    def gate(self, now: float, blocked_links: set[int]) -> Decision | None:
        """Hold red the running green's links that lead into full lanes (after their min green and a
        yellow); give them green again once there is room (after their yellow ran out)."""
        if self.pending:
            return None
        state = self.program.greens[self.current].state
        for link in blocked_links - self.gated.keys():
            started = max(self.green_since, self.reopened.get(link, self.green_since))
            if state[link] in GREEN and now - started >= self.min_green_s:
                self.gated[link] = now
                self.reopened.pop(link, None)
        for link in set(self.gated) - blocked_links:
            if now - self.gated[link] >= self.yellow_s + 1.0:  # yellow done and at least 1 s of red
                del self.gated[link]
                self.reopened[link] = now
        return self._show_if_changed(now, self._green_state(now), "spill-back gate")

    def outlook(self, now: float) -> list[tuple[str, float]]:
        """What this clock will show from `now` on if nobody decides again: (state, from) pairs,
        the last one held (a transition's steps, a gate's yellow running out). What a step of
        adaptive control commits to (the optimizer's adaptive_control.py)."""
        probe = replace(  # shares the program; copies what ticking changes
            self, pending=list(self.pending), last_green=dict(self.last_green), history=None
        )
        shown = [(self.shown, now)]
        ends = {until for _, until in self.pending}
        ends |= {since + self.yellow_s for since in self.gated.values() if since + self.yellow_s > now}
        for t in sorted(ends):
            decision = probe.tick(t)
            if decision is not None:
                shown.append((decision.state, t))
        return shown

    def red_for(self, now: float, link: int) -> float:
        """Per link, not per lane: on a shared lane the car in front may want the one movement
        that stays red while the lane's other movements get green."""
        return now - self.last_green.get(link, now)

    def _green_state(self, now: float, green: int | None = None) -> str:
        if not self.gated:
            return self.program.greens[self.current if green is None else green].state
        state = list(self.program.greens[self.current if green is None else green].state)
        for link, since in self.gated.items():
            state[link] = "y" if now - since < self.yellow_s else "r"
        return "".join(state)

    def longest_red(self, now: float) -> float:
        """The longest `red_for` of any link (0 before `start`)."""
        return now - min(self.last_green.values(), default=now)

    def _mark_green(self, now: float) -> None:
        links = self.program.greens[self.current].link_ids
        self.last_green.update(dict.fromkeys(links - self.gated.keys() if self.gated else links, now))

    def _show_if_changed(self, now: float, state: str, reason: str) -> Decision | None:
        return None if state == self.shown else self._show(now, state, reason)

    def _show(self, now: float, state: str, reason: str) -> Decision:
        self.shown = state
        if self.history is not None:
            self.history.append((now, state))
        green = self.target if self.pending else self.current
        return Decision(self.program.tls_id, state, green, reason)
