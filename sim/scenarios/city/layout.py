"""The generated city's road layout, sized by its number of traffic lights: a grid of signalised
junctions ~250 m apart south-west of Almere Centrum, every third line an arterial (two lanes, 50 km/h),
the others one-lane streets (40 km/h), each arterial continued by a connector to the outside world,
and parking facilities spread over the streets (one per ~5 lights: garages, on-street zones, P+R by
the gates). Everything follows from the size, so the same code makes 9, 22, 100 or 500 lights."""

from __future__ import annotations

import math
from dataclasses import dataclass
from xml.sax.saxutils import quoteattr

import numpy as np

from sim.scenarios.almere_centrum.layout import KMH, Facility, RoadClass

ORIGIN = (52.34, 5.16)  # WGS84 of the south-west corner
DLAT, DLON = 0.00225, 0.00367  # ~250 m between junctions
GATE_STEPS = 2.0  # connector length, in junction spacings
ARTERIAL_EVERY = 3
ARTERIAL = RoadClass(2, 50 * KMH)
STREET = RoadClass(1, 40 * KMH)
CONNECTOR = RoadClass(2, 70 * KMH)
LIGHTS_PER_FACILITY = 5
LAYOUT_SEED = 7  # where the facilities are: part of the layout, not of a run's seed
OPERATORS = ("q-park", "interparking", "gemeente-almere")


@dataclass(frozen=True, kw_only=True)
class Grid:
    """cols x rows signalised junctions: at least `lights` of them, as square as can be."""

    cols: int
    rows: int

    @classmethod
    def for_lights(cls, lights: int) -> Grid:
        if lights < 4:
            raise ValueError("a city has at least 4 traffic lights (2 x 2)")
        cols = math.ceil(math.sqrt(lights))
        return cls(cols=cols, rows=math.ceil(lights / cols))

    @property
    def lights(self) -> int:
        return self.cols * self.rows

    def arterial_cols(self) -> list[int]:
        return list(range(0, self.cols, ARTERIAL_EVERY))

    def arterial_rows(self) -> list[int]:
        return list(range(0, self.rows, ARTERIAL_EVERY))

    def links(self) -> list[tuple[tuple[int, int], tuple[int, int]]]:
        """Neighbouring junction pairs (each once)."""
        out = []
        for c in range(self.cols):
            for r in range(self.rows):
                if c + 1 < self.cols:
                    out.append(((c, r), (c + 1, r)))
                if r + 1 < self.rows:
                    out.append(((c, r), (c, r + 1)))
        return out

    def road_class(self, a: tuple[int, int], b: tuple[int, int]) -> RoadClass:
        (ca, ra), (cb, rb) = a, b
        if (ra == rb and ra in self.arterial_rows()) or (ca == cb and ca in self.arterial_cols()):
            return ARTERIAL
        return STREET

    def gates(self) -> list[tuple[str, tuple[int, int], tuple[float, float]]]:
        """(external node, grid junction it joins, its position in grid units) at both ends of every arterial."""
        out: list[tuple[str, tuple[int, int], tuple[float, float]]] = []
        for r in self.arterial_rows():
            out.append((f"gate-w{r}", (0, r), (-GATE_STEPS, r)))
            out.append((f"gate-e{r}", (self.cols - 1, r), (self.cols - 1 + GATE_STEPS, r)))
        for c in self.arterial_cols():
            out.append((f"gate-s{c}", (c, 0), (c, -GATE_STEPS)))
            out.append((f"gate-n{c}", (c, self.rows - 1), (c, self.rows - 1 + GATE_STEPS)))
        return out

    def entries(self) -> list[str]:
        return [edge_id(gate, node_id(*cell)) for gate, cell, _ in self.gates()]

    def exits(self) -> list[str]:
        return [edge_id(node_id(*cell), gate) for gate, cell, _ in self.gates()]

    def street_edges(self) -> list[str]:
        """Both directions of every grid link (what local trips start and end on)."""
        return [edge_id(node_id(*x), node_id(*y)) for a, b in self.links() for x, y in ((a, b), (b, a))]

    def centre(self) -> tuple[int, int]:
        return (self.cols - 1) // 2, (self.rows - 1) // 2

    def centre_edges(self) -> set[str]:
        """The destination zone: links with both ends in the middle half of the grid."""

        def inside(c: int, r: int) -> bool:
            return self.cols / 4 <= c <= 3 * self.cols / 4 and self.rows / 4 <= r <= 3 * self.rows / 4

        return {
            edge_id(node_id(*x), node_id(*y))
            for a, b in self.links()
            for x, y in ((a, b), (b, a))
            if inside(*x) and inside(*y)
        }

    def incident_edge(self) -> str:
        """The arterial link heading east into the centre, on the arterial row nearest the middle."""
        _, mid_row = self.centre()
        row = min(self.arterial_rows(), key=lambda r: (abs(r - mid_row), r))
        col = max(0, self.centre()[0] - 1)
        return edge_id(node_id(col, row), node_id(col + 1, row))

    def facilities(self) -> list[Facility]:
        """One facility per LIGHTS_PER_FACILITY lights on distinct streets (never an arterial, never
        two on one link), a quarter of them garages; a P+R on the first connector."""
        count = max(2, round(self.lights / LIGHTS_PER_FACILITY))
        rng = np.random.default_rng(LAYOUT_SEED)
        streets = [(a, b) for a, b in self.links() if self.road_class(a, b) is STREET]
        if not streets:  # a grid of arterials only (2 x 2 and the like)
            streets = self.links()
        picked = [streets[i] for i in rng.permutation(len(streets))[: count - 1]]
        out = []
        for n, (a, b) in enumerate(picked):
            x, y = (a, b) if n % 2 == 0 else (b, a)
            garage = n % 4 == 0
            out.append(
                Facility(
                    facility_id=f"{'garage' if garage else 'street'}-{n}",
                    display_name=f"{'Parkeergarage' if garage else 'Straatparkeren'} {n}",
                    kind="garage" if garage else "on_street",
                    capacity=int(rng.integers(300, 600) if garage else rng.integers(60, 150)),
                    edge=edge_id(node_id(*x), node_id(*y)),
                    operator_id=OPERATORS[n % len(OPERATORS)],
                )
            )
        gate, cell, _ = self.gates()[0]
        out.append(
            Facility(
                facility_id="pr-0",
                display_name="P+R 0",
                kind="park_and_ride",
                capacity=600,
                edge=edge_id(gate, node_id(*cell)),
                operator_id="gemeente-almere",
            )
        )
        return out


def node_id(col: int, row: int) -> str:
    return f"n{col}_{row}"


def edge_id(a: str, b: str) -> str:
    return f"{a}-{b}"


def position(col: float, row: float) -> tuple[float, float]:
    """(lat, lon) of a grid position."""
    return ORIGIN[0] + row * DLAT, ORIGIN[1] + col * DLON


def nodes_xml(grid: Grid) -> str:
    lines = ['<?xml version="1.0" encoding="UTF-8"?>', "<nodes>"]
    for c in range(grid.cols):
        for r in range(grid.rows):
            lat, lon = position(c, r)
            lines.append(f'  <node id="{node_id(c, r)}" x="{lon:.6f}" y="{lat:.6f}" type="traffic_light"/>')
    for gate, _, (gc, gr) in grid.gates():
        lat, lon = position(gc, gr)
        lines.append(f'  <node id="{gate}" x="{lon:.6f}" y="{lat:.6f}" type="priority"/>')
    lines.append("</nodes>")
    return "\n".join(lines) + "\n"


def _edge(a: str, b: str, road: RoadClass, name: str) -> str:
    return (
        f'  <edge id="{edge_id(a, b)}" from="{a}" to="{b}" numLanes="{road.lanes}" speed="{road.speed:.2f}" '
        f"name={quoteattr(name)}/>"
    )


def edges_xml(grid: Grid) -> str:
    lines = ['<?xml version="1.0" encoding="UTF-8"?>', "<edges>"]
    for a, b in grid.links():
        road = grid.road_class(a, b)
        name = "dreef" if road is ARTERIAL else "straat"
        for x, y in ((a, b), (b, a)):
            lines.append(_edge(node_id(*x), node_id(*y), road, name))
    for gate, cell, _ in grid.gates():
        lines.append(_edge(gate, node_id(*cell), CONNECTOR, "toegang"))
        lines.append(_edge(node_id(*cell), gate, CONNECTOR, "toegang"))
    lines.append("</edges>")
    return "\n".join(lines) + "\n"
