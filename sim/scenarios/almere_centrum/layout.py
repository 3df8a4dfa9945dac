"""The schematic almere-centrum road layout and its parking facilities (see README.md for every
assumption): a 6 x 5 grid around Almere Centrum station, its outer ring and middle row being
arterials ("dreven") with traffic lights, a bus lane on the ring, connectors to the outside world."""

from __future__ import annotations

from dataclasses import dataclass
from xml.sax.saxutils import quoteattr

STATION = (52.3753, 5.2179)  # Almere Centrum station, WGS84
COLS, ROWS = 6, 5
DLAT, DLON = 0.0027, 0.0045  # ~300 m between junctions
KMH = 1 / 3.6


@dataclass(frozen=True)
class RoadClass:
    lanes: int
    speed: float  # m/s
    bus_lane: bool = False


DREEF = RoadClass(3, 70 * KMH, bus_lane=True)  # 2 lanes + a bus lane (lane 0)
ARTERIAL = RoadClass(2, 50 * KMH)
STREET = RoadClass(1, 30 * KMH)
CONNECTOR = RoadClass(2, 80 * KMH)


def node_id(col: int, row: int) -> str:
    return f"j{col}{row}"


def position(col: float, row: float) -> tuple[float, float]:
    """(lat, lon) of a grid position; (2.5, 2) is the station."""
    return STATION[0] + (row - 2) * DLAT, STATION[1] + (col - 2.5) * DLON


def on_ring(col: int, row: int) -> bool:
    return col in (0, COLS - 1) or row in (0, ROWS - 1)


def signalised(col: int, row: int) -> bool:
    return on_ring(col, row) or row == 2


# Gates to the outside world: (external node, grid junction it joins, compass side).
GATES = [
    ("ext-w", (0, 2), "west"),
    ("ext-e", (5, 2), "east"),
    ("ext-n", (2, 4), "north"),
    ("ext-s", (3, 0), "south"),
    ("ext-nw", (0, 4), "northwest"),
    ("ext-se", (5, 0), "southeast"),
]
_GATE_OFFSET = {
    "west": (-2, 0),
    "east": (2, 0),
    "north": (0, 2),
    "south": (0, -2),
    "northwest": (-1.5, 1.5),
    "southeast": (1.5, -1.5),
}


def road_class(a: tuple[int, int], b: tuple[int, int]) -> RoadClass:
    (ca, ra), (cb, rb) = a, b
    if (ra == rb and ra in (0, ROWS - 1)) or (ca == cb and ca in (0, COLS - 1)):
        return DREEF
    if ra == rb == 2:
        return ARTERIAL
    return STREET


def grid_links() -> list[tuple[tuple[int, int], tuple[int, int]]]:
    links = []
    for c in range(COLS):
        for r in range(ROWS):
            if c + 1 < COLS:
                links.append(((c, r), (c + 1, r)))
            if r + 1 < ROWS:
                links.append(((c, r), (c, r + 1)))
    return links


def edge_id(a: str, b: str) -> str:
    return f"{a}-{b}"


def centre_edges() -> set[str]:
    """The destination zone: streets inside the ring (both ends inside or on the Stadsdreef)."""
    inside = {node_id(c, r) for c in range(1, COLS - 1) for r in range(1, ROWS - 1)}
    pairs = [(x, y) for a, b in grid_links() for x, y in ((a, b), (b, a))]
    return {edge_id(node_id(*x), node_id(*y)) for x, y in pairs if node_id(*x) in inside and node_id(*y) in inside}


@dataclass(frozen=True, kw_only=True)
class Facility:
    """A parking facility: its parking-service record and the SUMO parkingArea it maps to."""

    facility_id: str
    display_name: str
    kind: str  # garage | on_street | park_and_ride
    capacity: int
    edge: str  # SUMO edge the parkingArea is on
    operator_id: str


FACILITIES = [
    Facility(facility_id=i, display_name=name, kind=kind, capacity=capacity, edge=edge, operator_id=operator)
    for i, name, kind, capacity, edge, operator in (
        ("garage-stadhuisplein", "Parkeergarage Stadhuisplein", "garage", 450, edge_id("j23", "j33"), "q-park"),
        ("garage-forum", "Parkeergarage Forum", "garage", 350, edge_id("j31", "j32"), "q-park"),
        ("garage-flevo", "Parkeergarage Flevo", "garage", 400, edge_id("j13", "j12"), "gemeente-almere"),
        ("garage-citadel", "Parkeergarage Citadel", "garage", 500, edge_id("j41", "j31"), "interparking"),
        ("street-centrum", "Straatparkeren Centrum", "on_street", 120, edge_id("j21", "j22"), "gemeente-almere"),
        ("pr-almere-poort", "P+R Almere Poort", "park_and_ride", 600, edge_id("ext-w", "j02"), "gemeente-almere"),
    )
]


def nodes_xml() -> str:
    lines = ['<?xml version="1.0" encoding="UTF-8"?>', "<nodes>"]
    for c in range(COLS):
        for r in range(ROWS):
            lat, lon = position(c, r)
            kind = "traffic_light" if signalised(c, r) else "priority"
            lines.append(f'  <node id="{node_id(c, r)}" x="{lon:.6f}" y="{lat:.6f}" type="{kind}"/>')
    for gate, (c, r), side in GATES:
        dc, dr = _GATE_OFFSET[side]
        lat, lon = position(c + dc, r + dr)
        lines.append(f'  <node id="{gate}" x="{lon:.6f}" y="{lat:.6f}" type="priority"/>')
    lines.append("</nodes>")
    return "\n".join(lines) + "\n"


def _edge(a: str, b: str, *, road: RoadClass, name: str) -> str:
    attrs = (
        f'id="{edge_id(a, b)}" from="{a}" to="{b}" numLanes="{road.lanes}" speed="{road.speed:.2f}" '
        f"name={quoteattr(name)}"
    )
    if road.bus_lane:
        return f'  <edge {attrs}>\n    <lane index="0" allow="bus"/>\n  </edge>'
    return f"  <edge {attrs}/>"


def edges_xml() -> str:
    lines = ['<?xml version="1.0" encoding="UTF-8"?>', "<edges>"]
    for a, b in grid_links():
        road = road_class(a, b)
        name = {DREEF: "dreef", ARTERIAL: "Stadsdreef", STREET: "centrumstraat"}[road]
        for x, y in ((a, b), (b, a)):
            lines.append(_edge(node_id(*x), node_id(*y), road=road, name=name))
    for gate, cell, side in GATES:
        junction = node_id(*cell)
        lines.append(_edge(gate, junction, road=CONNECTOR, name=f"toegang {side}"))
        lines.append(_edge(junction, gate, road=CONNECTOR, name=f"toegang {side}"))
    lines.append("</edges>")
    return "\n".join(lines) + "\n"
