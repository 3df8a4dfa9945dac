"""A light's green phases and the safe transitions between any two, from its own program: adaptive
control shows only the program's greens or states that take right of way away from them (yellow,
then red), so it cannot invent a conflicting green."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

GREEN = frozenset("Gg")
YELLOW = frozenset("yY")
MIN_YELLOW_S = 3.0  # the signal service's rule (services/signals/logic.py)


@dataclass(frozen=True)
class Movement:
    """One signal link: from an incoming lane to an outgoing lane, index into the state string."""

    link: int
    in_lane: str
    out_lane: str


@dataclass(frozen=True)
class GreenPhase:
    state: str
    movements: tuple[Movement, ...]  # links with 'G' or 'g' in this phase
    source: str  # the program's phase it comes from (with permissive turns `protect_turns` took away)

    # Cached: the controllers ask every light's phases for these every second.
    @cached_property
    def in_lanes(self) -> frozenset[str]:
        return frozenset(m.in_lane for m in self.movements)

    @cached_property
    def out_lanes(self) -> frozenset[str]:
        return frozenset(m.out_lane for m in self.movements)

    @cached_property
    def link_ids(self) -> frozenset[int]:
        return frozenset(m.link for m in self.movements)


Step = tuple[str, float]  # (state, seconds)


@dataclass(frozen=True)
class SignalProgram:
    tls_id: str
    links: tuple[Movement, ...]  # every (index, in lane, out lane); unused indices left out
    greens: tuple[GreenPhase, ...]
    transitions: dict[tuple[int, int], tuple[Step, ...]]  # (from green, to green) -> intermediate steps

    def transition(self, a: int, b: int) -> tuple[Step, ...]:
        return self.transitions[(a, b)]

    def closest_green(self, state: str) -> int:
        """The green sharing most green links with `state` (ties: the first)."""
        lit = {k for k, c in enumerate(state) if c in GREEN}
        return max(range(len(self.greens)), key=lambda i: (len(lit & self.greens[i].link_ids), -i))

    @cached_property
    def in_lanes(self) -> frozenset[str]:
        return frozenset(m.in_lane for m in self.links)


def is_green_state(state: str) -> bool:
    """A phase that gives someone green and clears nobody (no yellow): a state adaptive control may hold."""
    return any(c in GREEN for c in state) and not any(c in YELLOW for c in state)


def transition_steps(a: str, b: str, yellow_s: float, all_red_s: float = 0.0) -> tuple[Step, ...]:
    """From green state `a` to green state `b`: links losing right of way turn yellow for `yellow_s`,
    then (optionally) red for `all_red_s`; links green in both keep a's character all along, so the
    intermediate states only ever show a subset of a's greens (safe as `a` itself is). A link `a`
    shows yellow already (a light caught mid-transition) clears like a losing one."""
    if len(a) != len(b):
        raise ValueError(f"states of different length: {a!r} -> {b!r}")

    def clears(x: str, y: str) -> bool:
        return (x in GREEN and y not in GREEN) or x in YELLOW

    if not any(clears(x, y) for x, y in zip(a, b, strict=True)):
        return ()  # b only adds greens: switch directly
    yellow = "".join("y" if clears(x, y) else (x if x in GREEN else "r") for x, y in zip(a, b, strict=True))
    steps: list[Step] = [(yellow, max(MIN_YELLOW_S, yellow_s))]
    if all_red_s > 0:
        steps.append(("".join(x if x in GREEN and y in GREEN else "r" for x, y in zip(a, b, strict=True)), all_red_s))
    return tuple(steps)


def protect_turns(state: str, links: Sequence[Movement], short_lanes: frozenset[str]) -> str:
    """Permissive greens ('g': go if there is a gap) turned red in a state that sends traffic into
    one of `short_lanes` (a few metres to the next signal). A car yielding inside the junction to
    oncoming cars that are themselves stopped in the junction, waiting for room in the short lane,
    is a deadlock no signal can undo (measured on ingolstadt21, no teleports); protected turns
    ('G' phases of the same program) still serve those cars. Only takes green away: as safe as `state`."""
    if not any(state[m.link] in GREEN and m.out_lane in short_lanes for m in links):
        return state
    return "".join("r" if c == "g" else c for c in state)


def build_program(
    tls_id: str,
    phases: Sequence[tuple[str, float]],
    controlled_links: Sequence[Sequence[tuple[str, str, str]]],
    all_red_s: float = 0.0,
    short_lanes: frozenset[str] = frozenset(),
) -> SignalProgram:
    """`phases`: the program's (state, duration); `controlled_links`: per link index the
    (in lane, out lane, via lane) tuples, as traci's trafficlight.getControlledLinks returns them.
    Yellow lasts as long as the program's longest yellow, and never less than 3 s. `short_lanes`:
    see `protect_turns`."""
    # One signal index may drive several connections (a lane fanning out, neighbouring lanes).
    links = tuple(
        dict.fromkeys(
            Movement(index, in_lane, out_lane)
            for index, connections in enumerate(controlled_links)
            for in_lane, out_lane, _via in connections
        )
    )
    sources: dict[str, str] = {}  # green state -> the program's phase it comes from
    for source, _ in phases:
        if is_green_state(source):
            state = protect_turns(source, links, short_lanes)
            if is_green_state(state):
                sources.setdefault(state, source)
    states = list(sources)
    if not states:
        raise ValueError(f"traffic light {tls_id}: its program has no green phase")
    yellow_s = max([d for s, d in phases if any(c in YELLOW for c in s)], default=MIN_YELLOW_S)
    greens = tuple(GreenPhase(s, tuple(m for m in links if s[m.link] in GREEN), sources[s]) for s in states)
    transitions = {
        (i, j): transition_steps(a.state, b.state, yellow_s, all_red_s)
        for i, a in enumerate(greens)
        for j, b in enumerate(greens)
        if i != j
    }
    return SignalProgram(tls_id, links, greens, transitions)
