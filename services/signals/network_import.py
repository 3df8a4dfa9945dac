"""Reading a SUMO network's traffic lights: an intersection per traffic-light logic, with its links,
which links conflict (the junctions' foe matrices) and its program as plan version 1."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sumolib
from almere.signals.v1 import signals_pb2 as pb
from almere.type.v1 import geo_pb2

from services.common.errors import InvalidArgument


@dataclass(frozen=True)
class ImportedLight:
    intersection_id: str
    intersection: pb.Intersection
    plan: pb.Plan


def intersection_id(tls_id: str) -> str:
    """A resource id (lowercase letters, digits, hyphens) for a SUMO traffic-light id."""
    cleaned = re.sub(r"[^a-z0-9]+", "-", tls_id.lower()).strip("-")
    cleaned = cleaned if cleaned[:1].isalpha() else f"tls-{cleaned}"
    return cleaned[:63].rstrip("-")


def read_lights(path: Path) -> list[ImportedLight]:
    try:
        net = sumolib.net.readNet(str(path), withPrograms=True, withInternal=False)
    except Exception as err:
        raise InvalidArgument(f"not a readable SUMO network: {err}") from None
    lights = []
    for tls in sorted(net.getTrafficLights(), key=lambda t: t.getID()):
        programs = tls.getPrograms()
        if not programs:
            continue
        program = programs[sorted(programs)[0]]
        links = _links(net, tls, len(program.getPhases()[0].state))
        location = None
        connections = tls.getConnections()
        if connections and net.hasGeoProj():
            x, y = connections[0][0].getEdge().getToNode().getCoord()[:2]
            lng, lat = net.convertXY2LonLat(x, y)
            location = geo_pb2.LatLng(latitude=lat, longitude=lng)
        intersection = pb.Intersection(
            display_name=tls.getID(),
            sumo_tls_id=tls.getID(),
            location=location,
            links=links,
            proposal_policy=pb.PROPOSAL_POLICY_REQUIRE_APPROVAL,
        )
        plan = pb.Plan(
            type=pb.PLAN_TYPE_ACTUATED if program._type == "actuated" else pb.PLAN_TYPE_STATIC,
            offset_seconds=float(program._offset or 0),
            phases=[
                pb.Phase(
                    state=phase.state,
                    duration=float(phase.duration),
                    min_duration=max(0.0, float(phase.minDur)),
                    max_duration=max(0.0, float(phase.maxDur)),
                    name=phase.name or "",
                )
                for phase in program.getPhases()
            ],
            reason=f"imported from {path.name} (program {program._id})",
        )
        lights.append(ImportedLight(intersection_id(tls.getID()), intersection, plan))
    return lights


def _links(net: sumolib.net.Net, tls: sumolib.net.TLS, count: int) -> list[pb.SignalLink]:
    """`count` links, one per index of the program's states: an index no connection uses (a
    removed crossing, as on ingolstadt21) is a link without lanes and without foes."""
    by_index: dict[int, pb.SignalLink] = {}
    junction_index: dict[int, tuple[Any, int]] = {}
    for in_lane, out_lane, index in tls.getConnections():
        if index in by_index:
            continue
        connection = next(
            (c for c in in_lane.getOutgoing() if c.getToLane() == out_lane),
            None,
        )
        by_index[index] = pb.SignalLink(
            index=index,
            from_lane=in_lane.getID(),
            to_lane=out_lane.getID(),
            direction=connection.getDirection() if connection else "",
        )
        if connection is not None:
            node = connection.getJunction()
            junction_index[index] = (node, node.getLinkIndex(connection))
    for a, (node_a, ja) in junction_index.items():
        for b, (node_b, jb) in junction_index.items():
            # Neighbouring lanes of one approach merging into one lane (a lane drop, both green on
            # ingolstadt21) zip by the junction's right of way; other merges stay conflicts.
            merging = by_index[a].to_lane == by_index[b].to_lane and _edge(by_index[a]) == _edge(by_index[b])
            if a != b and node_a is node_b and ja >= 0 and jb >= 0 and not merging and node_a.areFoes(ja, jb):
                by_index[a].foes.append(b)
    return [by_index.get(i, pb.SignalLink(index=i)) for i in range(max(count, len(by_index)))]


def _edge(link: pb.SignalLink) -> str:
    return link.from_lane.rsplit("_", 1)[0]
