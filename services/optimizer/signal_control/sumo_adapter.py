"""The one place that talks to SUMO: builds each light's `Intersection` (program from libsumo,
lane catchments from the network file), feeds controllers snapshots read with libsumo and shows
their decisions with setRedYellowGreenState. libsumo holds one simulation per process."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from services.optimizer.signal_control.model import Decision, Intersection, PhaseClock, Snapshot, Weighted
from services.optimizer.signal_control.phases import build_program

REACH_M = 200.0  # how far up- and downstream vehicles count
NEAR_M = 120.0  # how far back arrivals at the stop line are timed
ENTRY_M = 60.0  # receiving lanes shorter than this are judged together with the lanes after them
SHORT_LINK_M = 30.0  # a lane this short ending at another signal holds a car or three
DRAIN_WEIGHT = 5.0  # ingolstadt21: without it the pair of lights 12 m apart gridlocks on some seeds
TLS_NODE_TYPES = frozenset({"traffic_light", "traffic_light_unregulated", "traffic_light_right_on_red"})
GRIDLOCK_WAIT_S = 300.0  # a car standing this long (no teleports) means gridlock, not a red light


class Controller(Protocol):
    @property
    def tls_id(self) -> str: ...

    clock: PhaseClock
    intersection: Intersection

    def start(self, now: float, record: bool = False) -> Decision: ...
    def tick(self, now: float) -> Decision | None: ...
    def due(self, now: float) -> bool: ...
    def decide(self, snap: Snapshot) -> Decision | None: ...


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
    """`short_link_m`: lanes between two signals shorter than this get protected turns only
    (0: off); cars on them count `drain_weight` times in pressure: emptying them unblocks the
    neighbouring junction."""
    """Every light's (or the given lights') layout, from the running simulation and the network file."""
    import sumolib

    ls = _libsumo()
    net = sumolib.net.readNet(str(net_file), withInternal=False)
    tls_nodes = _tls_nodes(net)
    between = {
        lane.getID()
        for edge in net.getEdges()
        if edge.getFromNode().getID() in tls_nodes and edge.getToNode().getID() in tls_nodes
        for lane in edge.getLanes()
        if lane.getLength() < SHORT_LINK_M
    }
    short = frozenset(between) if short_link_m > 0 else frozenset()
    found = []
    for tls in tls_ids if tls_ids is not None else ls.trafficlight.getIDList():
        active = ls.trafficlight.getProgram(tls)
        logic = next(p for p in ls.trafficlight.getAllProgramLogics(tls) if p.programID == active)
        program = build_program(
            tls,
            [(p.state, p.duration) for p in logic.phases],
            [[(c[0], c[1], c[2]) for c in links] for links in ls.trafficlight.getControlledLinks(tls)],
            short_lanes=short,
        )
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
    controllers: list[Controller],
    record: bool = False,
    check_every_s: float = 30.0,
    on_step: Callable[[float], None] | None = None,
) -> RunStats:
    """Step the started simulation to `until`, letting `controllers` drive their lights (none: the
    network's own programs run). `record`: keep every light's shown states (for validation)."""
    stats = RunStats()
    now = ls.simulation.getTime()
    for c in controllers:
        _apply(ls, c.start(now, record))
    recorded = ls.trafficlight.getIDList() if record else []
    shown = {tls: ls.trafficlight.getRedYellowGreenState(tls) for tls in recorded}
    stats.histories = {tls: [(now, state)] for tls, state in shown.items()}
    next_check = now + check_every_s
    while now < until:
        ls.simulationStep()
        now = ls.simulation.getTime()
        stats.teleports += ls.simulation.getStartingTeleportNumber()
        due = []
        for c in controllers:
            decision = c.tick(now)
            if decision is not None:
                _apply(ls, decision)
            elif c.due(now):
                due.append(c)
        if due:
            lanes = set().union(*(c.intersection.lanes() for c in due))
            near = set().union(*(c.intersection.near_lanes() for c in due))
            snap = _snapshot(ls, now, lanes, near)
            for c in due:
                decision = c.decide(snap)
                stats.decisions += 1
                if decision is not None:
                    _apply(ls, decision)
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


def _snapshot(ls: Any, now: float, lanes: set[str], near: set[str]) -> Snapshot:
    vehicles = {lane: ls.lane.getLastStepVehicleNumber(lane) for lane in lanes}
    halting = {lane: ls.lane.getLastStepHaltingNumber(lane) for lane in lanes}
    positions = {}
    for lane in near:
        ids = ls.lane.getLastStepVehicleIDs(lane)
        if ids:
            length = ls.lane.getLength(lane)
            positions[lane] = tuple((length - ls.vehicle.getLanePosition(v), ls.vehicle.getSpeed(v)) for v in ids)
    return Snapshot(now, vehicles, halting, positions)


def _apply(ls: Any, decision: Decision) -> None:
    ls.trafficlight.setRedYellowGreenState(decision.tls_id, decision.state)
