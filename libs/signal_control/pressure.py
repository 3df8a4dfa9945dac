"""What every light of a control loop asks of a snapshot, for all of them at once: each green phase's
max-pressure score (`MaxPressure.score`) and the links into spilled-back lanes (`guards`). A few
sparse matrix products over one array of lane counts instead of Python sums per lane, movement and
light (the sums were ~60 % of the controllers' time, and the controllers ~40 % of a 500-light city's
coupled run). scipy's CSR product adds each row's terms one after the other in the order they are
stored, the order `score` adds them in, so every score is the same float as `score`'s: the same
decisions, bit for bit."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Protocol

import numpy as np
import numpy.typing as npt
from scipy.sparse import csr_matrix  # type: ignore[import-untyped]

from libs.signal_control.guards import VEHICLE_SPACING_M
from libs.signal_control.model import Intersection, Snapshot, Weighted
from libs.signal_control.phases import Movement

Vector = npt.NDArray[np.float64]


class Pressured(Protocol):
    """What the table needs of a controller: its layout and the weights of its pressure."""

    intersection: Intersection

    @property
    def pressure_weights(self) -> tuple[float, float, float, float]: ...  # up all, up halted, down all, down halted


@dataclass(frozen=True, kw_only=True)
class _Sums:
    """Weighted lane sums, one row per (light, lane): `weights @ counts`, scaled per row."""

    weights: csr_matrix
    all: Vector  # per row: the factor of all vehicles
    halted: Vector  # ... and of halted ones

    def of(self, vehicles: Vector, halting: Vector) -> Vector:
        result: Vector = self.all * (self.weights @ vehicles) + self.halted * (self.weights @ halting)
        return result


class _Rows:
    """Builds one `_Sums`: a row per (light, lane), its weighted lanes in the layout's order."""

    def __init__(self, lanes: dict[str, int]) -> None:
        self._lanes = lanes
        self.rows: dict[tuple[int, str], int] = {}
        self._indptr, self._indices, self._data = [0], list[int](), list[float]()
        self._all, self._halted = list[float](), list[float]()

    def row(self, light: int, lane: str, weighted: Weighted, factors: tuple[float, float]) -> int:
        key = (light, lane)
        if key not in self.rows:
            self.rows[key] = len(self.rows)
            for x, w in weighted:
                self._indices.append(self._lanes.setdefault(x, len(self._lanes)))
                self._data.append(w)
            self._indptr.append(len(self._indices))
            self._all.append(factors[0])
            self._halted.append(factors[1])
        return self.rows[key]

    def build(self, columns: int) -> _Sums:
        return _Sums(
            weights=_csr(self._data, self._indices, self._indptr, columns),
            all=np.array(self._all, dtype=np.float64),
            halted=np.array(self._halted, dtype=np.float64),
        )


def _csr(data: list[float], indices: list[int], indptr: list[int], columns: int) -> csr_matrix:
    """Kept as given (no duplicates summed, no sorting): the products add in this order."""
    return csr_matrix(
        (np.array(data, dtype=np.float64), np.array(indices, dtype=np.int64), np.array(indptr, dtype=np.int64)),
        shape=(len(indptr) - 1, columns),
    )


class PressureTable:
    """What every light of a control loop asks of each snapshot, for all of them at once: the
    scores of its green phases without gates (a light with gates scores itself: links held red
    count nothing) and its links into spilled-back lanes (`guards.blocked_out_lanes` and
    `links_into`)."""

    def __init__(self, controllers: Sequence[Pressured]) -> None:
        lanes: dict[str, int] = {}
        ups, downs, entries = _Rows(lanes), _Rows(lanes), _Rows(lanes)
        term_up, term_down, out_links, in_links = list[int](), list[int](), list[float](), list[float]()
        term_entry: list[int | None] = []  # per movement: the entry row of its out lane, if any
        indptr, indices = [0], list[int]()
        self._links: list[tuple[str, int]] = []  # per movement: (tls, link)
        self._greens: dict[str, tuple[int, int]] = {}  # tls -> the rows of its greens
        entry_m = []
        for light, c in enumerate(controllers):
            up_all, up_halted, down_all, down_halted = c.pressure_weights
            intersection = c.intersection
            links = intersection.program.links
            leaving, entering = Counter(m.in_lane for m in links), Counter(m.out_lane for m in links)
            # movement -> its term (upstream share minus downstream share); a link may have several
            terms: dict[Movement, int] = {}
            for m in links:
                terms[m] = len(term_up)
                self._links.append((intersection.tls_id, m.link))
                term_up.append(ups.row(light, m.in_lane, intersection.upstream.get(m.in_lane, ()), (up_all, up_halted)))
                term_down.append(
                    downs.row(light, m.out_lane, intersection.downstream.get(m.out_lane, ()), (down_all, down_halted))
                )
                out_links.append(leaving[m.in_lane])
                in_links.append(entering[m.out_lane])
                entry = intersection.entry.get(m.out_lane)
                if entry is None:
                    term_entry.append(None)
                    continue
                rows = len(entries.rows)
                term_entry.append(entries.row(light, m.out_lane, tuple((x, 1.0) for x in entry[0]), (1.0, 0.0)))
                if len(entries.rows) > rows:
                    entry_m.append(entry[1])
            first = len(indptr) - 1
            for green in intersection.program.greens:
                indices += [terms[m] for m in green.movements]
                indptr.append(len(indices))
            self._greens[intersection.tls_id] = (first, len(indptr) - 1)
        self.lanes = tuple(lanes)
        self._up, self._down = ups.build(len(lanes)), downs.build(len(lanes))
        self._term_up, self._term_down = np.array(term_up, dtype=np.int64), np.array(term_down, dtype=np.int64)
        self._out_links, self._in_links = np.array(out_links), np.array(in_links)
        self._phases = _csr([1.0] * len(indices), indices, indptr, len(term_up))
        self._entry = entries.build(len(lanes)).weights
        self._entry_m = np.array(entry_m, dtype=np.float64)
        # movements without an entry row look at one more row, never blocked
        self._term_entry = np.array([len(entry_m) if e is None else e for e in term_entry], dtype=np.int64)

    def on(self, snap: Snapshot, spacing_m: float = VEHICLE_SPACING_M) -> Pressures:
        """What the lights ask of `snap`: the gates at once, the scores when first asked for."""
        n = len(self.lanes)
        vehicles = np.fromiter(map(snap.vehicles.get, self.lanes, repeat(0)), dtype=np.float64, count=n)
        halting = np.fromiter(map(snap.halting.get, self.lanes, repeat(0)), dtype=np.float64, count=n)
        # `guards.blocked_out_lanes`: the halted queue reaches back to the junction (sums of counts: exact)
        queued_m = spacing_m * (self._entry @ halting)
        blocked = np.append((queued_m > 0) & (queued_m >= self._entry_m - spacing_m), False)
        gates: dict[str, set[int]] = {}
        for term in np.flatnonzero(blocked[self._term_entry]).tolist():
            tls, link = self._links[term]
            gates.setdefault(tls, set()).add(link)
        return Pressures(self, vehicles, halting, gates)

    def scores(self, vehicles: Vector, halting: Vector) -> list[float]:
        up, down = self._up.of(vehicles, halting), self._down.of(vehicles, halting)
        terms = up[self._term_up] / self._out_links - down[self._term_down] / self._in_links
        result: list[float] = (self._phases @ terms).tolist()
        return result

    def greens(self, tls_id: str) -> tuple[int, int]:
        return self._greens[tls_id]


class Pressures:
    """One snapshot's answers, per light."""

    def __init__(self, table: PressureTable, vehicles: Vector, halting: Vector, gates: dict[str, set[int]]) -> None:
        self._table, self._vehicles, self._halting, self._gates = table, vehicles, halting, gates
        self._scores: list[float] | None = None

    def gates(self, tls_id: str) -> set[int]:
        """The light's links into lanes whose halted queue reaches back to the junction."""
        return set(self._gates.get(tls_id, ()))

    def scores(self, tls_id: str) -> list[float]:
        """Its green phases' scores, no link held red."""
        if self._scores is None:
            self._scores = self._table.scores(self._vehicles, self._halting)
        start, end = self._table.greens(tls_id)
        return self._scores[start:end]
