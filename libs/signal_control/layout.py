"""Each light's `Intersection` read from a SUMO network file: its program, links and the lanes whose
vehicles count for it (upstream, downstream, near the stop line, platoons from the lights before
it). sumolib only, so the optimizer builds it without a simulation."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from libs.signal_control.guards import VEHICLE_SPACING_M
from libs.signal_control.model import Intersection, PlatoonSource, Weighted
from libs.signal_control.phases import SignalProgram, build_program

REACH_M = 200.0  # how far up- and downstream vehicles count
NEAR_M = 120.0  # how far back arrivals at the stop line are timed
PLATOON_M = 450.0  # how far up an arterial a light's green is seen as a platoon on its way
ENTRY_M = 60.0  # receiving lanes shorter than this are judged together with the lanes after them
SHORT_LINK_M = 30.0  # a lane this short ending at another signal holds a car or three
DRAIN_WEIGHT = 5.0  # ingolstadt21: without it the pair of lights 12 m apart gridlocks on some seeds
TLS_NODE_TYPES = frozenset({"traffic_light", "traffic_light_unregulated", "traffic_light_right_on_red"})


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


def _starts_at_priority_junction(lane: Any, tls_nodes: set[str]) -> bool:
    """The lane's road begins where several roads meet (not at a bend or a lane change) and no
    signal meters what enters it (a signal there holds its links into a full lane red itself)."""
    node = lane.getEdge().getFromNode()
    return node.getID() not in tls_nodes and len([e for e in node.getIncoming() if not e.getID().startswith(":")]) > 1


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
    *,
    tls_ids: Iterable[str] | None = None,
    reach_m: float = REACH_M,
    short_link_m: float = SHORT_LINK_M,
    drain_weight: float = DRAIN_WEIGHT,
) -> list[Intersection]:
    """Every light's (or the given lights') layout, from the network file: the program SUMO runs
    unless told otherwise (its first), links as traci's getControlledLinks lists them.
    `short_link_m`: lanes between two signals shorter than this get protected turns only (0: off);
    cars on them count `drain_weight` times in pressure: emptying them unblocks the neighbouring
    junction. Approach lanes that short beginning at a priority junction get the spill-over guard
    (`Intersection.spill`): a car or three fill them, too few for pressure to notice; not those
    shorter than a car (stubs of a few metres), which hold no queue: the car waiting at their stop
    line always stands at the junction behind, and pressure counts the lanes behind it."""
    import sumo  # noqa: F401  - sets SUMO_HOME
    import sumolib

    net = sumolib.net.readNet(str(net_file), withPrograms=True, withInternal=False)
    tls_nodes = _tls_nodes(net)
    short = _short_links(net, tls_nodes, short_link_m)
    feeding = _feeding(net)
    ids = tls_ids if tls_ids is not None else sorted(t.getID() for t in net.getTrafficLights())
    found = []
    for tls in ids:
        program = _program(net.getTLS(tls), short)
        found.append(
            _layout(
                net,
                program,
                tls_nodes,
                feeding,
                short,
                reach_m=reach_m,
                drain_weight=drain_weight,
                short_link_m=short_link_m,
            )
        )
    return found


def _short_links(net: Any, tls_nodes: set[str], short_link_m: float) -> frozenset[str]:
    """Lanes from one signal to the next shorter than `short_link_m` (none when it is 0): a car or
    three fills them, so the junction behind waits on them."""
    return frozenset(
        lane.getID()
        for edge in net.getEdges()
        if edge.getFromNode().getID() in tls_nodes and edge.getToNode().getID() in tls_nodes
        for lane in edge.getLanes()
        if lane.getLength() < short_link_m
    )


def _feeding(net: Any) -> dict[str, list[tuple[str, int, str]]]:
    """Out lane -> (light, link, in lane) of every signal link leading into it: where platoons
    come from."""
    feeding: dict[str, list[tuple[str, int, str]]] = {}
    for light in net.getTrafficLights():
        for in_lane, out_lane, index in light.getConnections():
            feeding.setdefault(out_lane.getID(), []).append((light.getID(), index, in_lane.getID()))
    return feeding


def _program(light: Any, short: frozenset[str]) -> SignalProgram:
    """The light's first program, its links indexed as traci's getControlledLinks lists them."""
    programs = light.getPrograms()
    phases = programs[sorted(programs)[0]].getPhases()
    controlled: list[list[tuple[str, str, str]]] = [[] for _ in range(len(phases[0].state))]
    for in_lane, out_lane, index in light.getConnections():
        controlled[index].append((in_lane.getID(), out_lane.getID(), ""))
    steps = [(p.state, float(p.duration)) for p in phases]
    return build_program(light.getID(), steps, controlled, short_lanes=short)


def _layout(
    net: Any,
    program: SignalProgram,
    tls_nodes: set[str],
    feeding: dict[str, list[tuple[str, int, str]]],
    short: frozenset[str],
    *,
    reach_m: float,
    drain_weight: float,
    short_link_m: float,
) -> Intersection:
    """The lanes whose vehicles count for `program`'s links; cars on `short` lanes count
    `drain_weight` times upstream."""
    tls = program.tls_id
    ins = {net.getLane(m.in_lane) for m in program.links}
    outs = {net.getLane(m.out_lane) for m in program.links}
    return Intersection(
        program,
        upstream={
            lane.getID(): tuple(
                (x, w * (drain_weight if x in short else 1.0)) for x, w in _upstream(lane, tls_nodes, reach_m)
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
        spill={
            lane.getID(): lane.getLength()
            for lane in ins
            if VEHICLE_SPACING_M <= lane.getLength() < short_link_m and _starts_at_priority_junction(lane, tls_nodes)
        },
    )
