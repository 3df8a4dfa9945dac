"""The one place that talks to SUMO for signal control: builds each light's `Intersection` from the
network file (program, links, lane catchments; sumolib, so the optimizer can do it without a
simulation), and steps a libsumo simulation while a `Control` drives its lights: in-process
controllers (`DirectControl`, the batch bench) or the optimizer through the signal service
(sim/adaptive_signals.py). libsumo holds one simulation per process."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from services.optimizer.signal_control.loop import Controller, ControlLoop
from services.optimizer.signal_control.model import Intersection, PlatoonSource, Snapshot, Weighted
from services.optimizer.signal_control.phases import build_program

REACH_M = 200.0  # how far up- and downstream vehicles count
NEAR_M = 120.0  # how far back arrivals at the stop line are timed
PLATOON_M = 450.0  # how far up an arterial a light's green is seen as a platoon on its way
ENTRY_M = 60.0  # receiving lanes shorter than this are judged together with the lanes after them
SHORT_LINK_M = 30.0  # a lane this short ending at another signal holds a car or three
DRAIN_WEIGHT = 5.0  # ingolstadt21: without it the pair of lights 12 m apart gridlocks on some seeds
TLS_NODE_TYPES = frozenset({"traffic_light", "traffic_light_unregulated", "traffic_light_right_on_red"})
GRIDLOCK_WAIT_S = 300.0  # a car standing this long (no teleports) means gridlock, not a red light


class Control(Protocol):
    """Who drives the lights of a running simulation: shows its states with `show`."""

    def start(self, ls: Any, now: float, record: bool) -> None: ...
    def step(self, ls: Any, now: float) -> int: ...  # returns how many decisions were taken


def _libsumo() -> Any:
    import libsumo
    import sumo  # noqa: F401  - sets SUMO_HOME before libsumo does

    return libsumo


def start(args: list[str]) -> Any:
    """Start SUMO in this process (args without the binary) and return the libsumo module."""
    from sim.netbuild import sumo_binary

    ls = _libsumo()
    ls.start([sumo_binary("sumo"), *args])
    return ls


def _tls_nodes(net: Any) -> set[str]:
    return {n.getID() for n in net.getNodes() if n.getType() in TLS_NODE_TYPES}


def _upstream(lane: Any, tls_nodes: set[str], reach_m: float) -> Weighted:
    """The stop-line lane and, up to `reach_m` back, the lanes feeding it; a feeding lane's count is
    shared among the lanes it feeds; the walk stops at another signal (its queue is its own)."""
    weights: dict[str, float] = {lane.getID(): 1.0}
    frontier = [(lane, lane.getLength(), 1.0)]
    while frontier:
        current, dist, share = frontier.pop()
        if dist >= reach_m or current.getEdge().getFromNode().getID() in tls_nodes:
            continue
        for feeder in current.getIncoming():
            if feeder.getID().startswith(":"):
                continue
            part = share / max(1, len(feeder.getOutgoing()))
            length = max(feeder.getLength(), 0.1)
            weights[feeder.getID()] = weights.get(feeder.getID(), 0.0) + part * min(1.0, (reach_m - dist) / length)
            frontier.append((feeder, dist + length, part))
    return tuple(weights.items())


def _near(lane: Any, tls_nodes: set[str], near_m: float) -> tuple[tuple[str, float], ...]:
    """The stop-line lane and its feeders within `near_m`, each with the distance from its end to
    the stop line."""
    offsets: dict[str, float] = {lane.getID(): 0.0}
    frontier = [(lane, 0.0)]
    while frontier:
        current, offset = frontier.pop()
        reach = offset + current.getLength()
        if reach >= near_m or current.getEdge().getFromNode().getID() in tls_nodes:
            continue
        for feeder in current.getIncoming():
            if not feeder.getID().startswith(":") and feeder.getID() not in offsets:
                offsets[feeder.getID()] = reach
                frontier.append((feeder, reach))
    return tuple(offsets.items())


def _seen_s(lane: Any, tls_nodes: set[str], near_m: float) -> float | None:
    """Seconds at the speed limit from the nearest signal upstream to `lane`'s stop line, if one is
    within `near_m` (following the feeding lanes); None if none is."""
    best: float | None = None
    frontier = [(lane, 0.0, 0.0)]
    while frontier:
        current, dist, secs = frontier.pop()
        dist += max(current.getLength(), 0.1)
        secs += current.getLength() / max(current.getSpeed(), 1.0)
        if dist >= near_m:
            continue
        if current.getEdge().getFromNode().getID() in tls_nodes:
            best = secs if best is None else min(best, secs)
            continue
        frontier += [(f, dist, secs) for f in current.getIncoming() if not f.getID().startswith(":")]
    return best


def _platoon_sources(
    lane: Any, tls_id: str, feeding: dict[str, list[tuple[str, int, str]]], near_m: float, reach_m: float
) -> tuple[PlatoonSource, ...]:
    """The lights between `near_m` and `reach_m` up the lanes feeding `lane` (not this light), with
    the links that feed it (`feeding`: out lane -> (light, link, in lane) of every signal link)."""
    found: dict[str, tuple[set[int], set[str], float]] = {}
    frontier = [(lane, 0.0, 0.0)]
    while frontier:
        current, dist, secs = frontier.pop()
        dist += current.getLength()
        secs += current.getLength() / max(current.getSpeed(), 1.0)
        sources = [f for f in feeding.get(current.getID(), []) if f[0] != tls_id]
        if sources:
            if dist >= near_m:  # nearer ones are timed by the near chain (`seen_s`)
                for tls, link, in_lane in sources:
                    links, lanes, travel = found.setdefault(tls, (set(), set(), secs))
                    links.add(link)
                    lanes.add(in_lane)
                    found[tls] = (links, lanes, min(travel, secs))
            continue
        if dist < reach_m:
            frontier += [(f, dist, secs) for f in current.getIncoming() if not f.getID().startswith(":")]
    return tuple(
        PlatoonSource(tls, frozenset(links), tuple(sorted(lanes)), travel)
        for tls, (links, lanes, travel) in sorted(found.items())
    )


def _downstream(lane: Any, tls_nodes: set[str], reach_m: float) -> Weighted:
    """The receiving lane and its continuation up to `reach_m` (up to the next signal), split where
    the road splits."""
    length = max(lane.getLength(), 0.1)
    weights: dict[str, float] = {lane.getID(): min(1.0, reach_m / length)}
    frontier = [(lane, length, 1.0)]
    while frontier:
        current, dist, share = frontier.pop()
        if dist >= reach_m or current.getEdge().getToNode().getID() in tls_nodes:
            continue
        nexts = [c.getToLane() for c in current.getOutgoing()]
        for nxt in nexts:
            part = share / len(nexts)
            size = max(nxt.getLength(), 0.1)
            weights[nxt.getID()] = weights.get(nxt.getID(), 0.0) + part * min(1.0, (reach_m - dist) / size)
            frontier.append((nxt, dist + size, part))
    return tuple(weights.items())


def _entry(lane: Any, tls_nodes: set[str], entry_m: float) -> tuple[tuple[str, ...], float]:
    """A receiving lane, plus the lanes right after it when it is too short to judge alone, unless
    it ends at a signal: then its own few metres are all the room there is (the queue waits on it)."""
    lanes, length = [lane], lane.getLength()
    if length < entry_m and lane.getEdge().getToNode().getID() not in tls_nodes:
        nexts = [c.getToLane() for c in lane.getOutgoing()]
        lanes += nexts
        length += sum(n.getLength() for n in nexts)
    return tuple(x.getID() for x in lanes), length


def intersections(
    net_file: Path,
    tls_ids: Iterable[str] | None = None,
    reach_m: float = REACH_M,
    short_link_m: float = SHORT_LINK_M,
    drain_weight: float = DRAIN_WEIGHT,
) -> list[Intersection]:
    """Every light's (or the given lights') layout, from the network file: the program SUMO runs
    unless told otherwise (its first), links as traci's getControlledLinks lists them.
    `short_link_m`: lanes between two signals shorter than this get protected turns only (0: off);
    cars on them count `drain_weight` times in pressure: emptying them unblocks the neighbouring
    junction."""
    import sumo  # noqa: F401  - sets SUMO_HOME
    import sumolib

    net = sumolib.net.readNet(str(net_file), withPrograms=True, withInternal=False)
    tls_nodes = _tls_nodes(net)
    between = {
        lane.getID()
        for edge in net.getEdges()
        if edge.getFromNode().getID() in tls_nodes and edge.getToNode().getID() in tls_nodes
        for lane in edge.getLanes()
        if lane.getLength() < SHORT_LINK_M
    }
    short = frozenset(between) if short_link_m > 0 else frozenset()
    feeding: dict[str, list[tuple[str, int, str]]] = {}
    for light in net.getTrafficLights():
        for in_lane, out_lane, index in light.getConnections():
            feeding.setdefault(out_lane.getID(), []).append((light.getID(), index, in_lane.getID()))
    found = []
    for tls in tls_ids if tls_ids is not None else sorted(t.getID() for t in net.getTrafficLights()):
        light = net.getTLS(tls)
        programs = light.getPrograms()
        phases = programs[sorted(programs)[0]].getPhases()
        controlled: list[list[tuple[str, str, str]]] = [[] for _ in range(len(phases[0].state))]
        for in_lane, out_lane, index in light.getConnections():
            controlled[index].append((in_lane.getID(), out_lane.getID(), ""))
        program = build_program(tls, [(p.state, float(p.duration)) for p in phases], controlled, short_lanes=short)
        ins = {net.getLane(m.in_lane) for m in program.links}
        outs = {net.getLane(m.out_lane) for m in program.links}
        found.append(
            Intersection(
                program,
                upstream={
                    lane.getID(): tuple(
                        (x, w * (drain_weight if x in between else 1.0)) for x, w in _upstream(lane, tls_nodes, reach_m)
                    )
                    for lane in ins
                },
                downstream={lane.getID(): _downstream(lane, tls_nodes, reach_m) for lane in outs},
                entry={lane.getID(): _entry(lane, tls_nodes, ENTRY_M) for lane in outs},
                near={lane.getID(): _near(lane, tls_nodes, NEAR_M) for lane in ins},
                seen_s={lane.getID(): seen for lane in ins if (seen := _seen_s(lane, tls_nodes, NEAR_M)) is not None},
                platoons={
                    lane.getID(): sources
                    for lane in ins
                    if (sources := _platoon_sources(lane, tls, feeding, NEAR_M, PLATOON_M))
                },
            )
        )
    return found


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
    return stats


class DirectControl:
    """The controllers in this process, on libsumo's counts: fast batch evaluation, no services."""

    def __init__(self, controllers: Iterable[Controller]) -> None:
        self.loop = ControlLoop(controllers)

    def start(self, ls: Any, now: float, record: bool) -> None:
        for shown in self.loop.start(now, record):
            show(ls, shown.decision.tls_id, shown.decision.state)

    def step(self, ls: Any, now: float) -> int:
        before = self.loop.decisions
        for shown in self.loop.step(now, lambda t, lanes, near: read_lanes(ls, t, lanes, near)):
            show(ls, shown.decision.tls_id, shown.decision.state)
        return self.loop.decisions - before


def read_lanes(ls: Any, now: float, lanes: Iterable[str], near: Iterable[str]) -> Snapshot:
    """Vehicles and halting vehicles on `lanes`; distance to the lane's end and speed of each
    vehicle on the `near` lanes: what detectors would report."""
    lanes = list(lanes)
    vehicles = {lane: ls.lane.getLastStepVehicleNumber(lane) for lane in lanes}
    halting = {lane: ls.lane.getLastStepHaltingNumber(lane) for lane in lanes}
    positions = {}
    for lane in near:
        ids = ls.lane.getLastStepVehicleIDs(lane)
        if ids:
            length = ls.lane.getLength(lane)
            positions[lane] = tuple((length - ls.vehicle.getLanePosition(v), ls.vehicle.getSpeed(v)) for v in ids)
    return Snapshot(now, vehicles, halting, positions)


def show(ls: Any, tls_id: str, state: str) -> None:
    ls.trafficlight.setRedYellowGreenState(tls_id, state)
