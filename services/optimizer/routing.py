"""Vectorised fastest routes over a SUMO network, for many vehicles at once.

Why not sumolib's ``net.getFastestPath``: it is a pure-Python Dijkstra per vehicle, about a millisecond
each on almere-centrum, too slow to re-plan a thousand vehicles every control step. Vehicles share few
destinations (exits, garages), so one scipy.sparse.csgraph Dijkstra per *destination* on the reversed
graph serves every vehicle going there, and its predecessor array is each vehicle's route.

The graph is edge-based: its nodes are SUMO edges and its arcs SUMO connections, so turn restrictions
(a missing connection = a forbidden turn) are honoured, which a junction graph would lose.

Cost convention: ``cost[i]`` is the time (s) to traverse edge i, ``np.inf`` closes it. A route's cost is
the sum over its edges *excluding the start edge*: the vehicle is already on it, its remainder is the
same whichever way it goes on, and a vehicle on a closed edge must still be able to leave it. The
target edge counts (the vehicle has to drive it), except when the vehicle already is on its target.
``time_to`` follows the same convention.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import sumolib
from scipy.sparse import csr_matrix  # type: ignore[import-untyped]
from scipy.sparse.csgraph import dijkstra  # type: ignore[import-untyped]

VCLASS = "passenger"

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


class RoadGraph:
    """Edge-based graph of a SUMO network: nodes are the network's edges (not junctions), so turn
    restrictions (SUMO connections) are honoured; arcs are the allowed connections for vClass passenger."""

    def __init__(
        self,
        *,
        edge_ids: Sequence[str],
        length: FloatArray,
        free_time: FloatArray,
        lanes: FloatArray,
        arcs: Sequence[tuple[int, int]],
    ) -> None:
        self.edge_ids: list[str] = list(edge_ids)
        self.index: dict[str, int] = {e: i for i, e in enumerate(self.edge_ids)}
        self.length: FloatArray = np.asarray(length, dtype=np.float64)
        self.free_time: FloatArray = np.asarray(free_time, dtype=np.float64)
        self.lanes: FloatArray = np.maximum(np.asarray(lanes, dtype=np.float64), 1.0)  # passenger lanes
        n = len(self.edge_ids)
        # The *reversed* graph, built once: arc v -> u for every connection u -> v. A search from a target
        # then yields, for every edge, the time to that target and (as predecessor) the next edge to take.
        pairs = sorted(set(arcs), key=lambda a: (a[1], a[0]))
        heads = np.array([v for _, v in pairs], dtype=np.int64)
        tails = np.array([u for u, _ in pairs], dtype=np.int64)
        structure = csr_matrix((np.ones(len(pairs)), (heads, tails)), shape=(n, n))
        self._indptr: npt.NDArray[np.int32] = structure.indptr
        self._indices: npt.NDArray[np.int32] = structure.indices
        # The weight of reversed arc v -> u is cost[v] (entering v), i.e. cost[row]: store each arc's row.
        self._row: IntArray = np.repeat(np.arange(n, dtype=np.int64), np.diff(structure.indptr))
        self._successors: list[set[int]] = [set() for _ in range(n)]
        for u, v in pairs:
            self._successors[u].add(v)

    @classmethod
    def from_net(cls, net_file: str | Path) -> RoadGraph:
        """Read a .net.xml (sumolib, without internal edges): every edge with a lane for passenger cars,
        and the connections a passenger car may take between them."""
        net = sumolib.net.readNet(str(net_file), withInternal=False)
        edges = [e for e in net.getEdges() if e.getFunction() == "" and e.allows(VCLASS)]
        index = {e.getID(): i for i, e in enumerate(edges)}
        # Length and speed exactly as sumolib's router sees them (first lane's length, the edge's speed).
        length = np.array([e.getLength() for e in edges], dtype=np.float64)
        free_time = length / np.array([e.getSpeed() for e in edges], dtype=np.float64)
        lanes = np.array([sum(lane.allows(VCLASS) for lane in e.getLanes()) for e in edges], dtype=np.float64)
        arcs = [
            (i, index[follower.getID()])
            for i, e in enumerate(edges)
            for follower in e.getAllowedOutgoing(VCLASS)
            if follower.getID() in index
        ]
        return cls(edge_ids=[e.getID() for e in edges], length=length, free_time=free_time, lanes=lanes, arcs=arcs)

    def is_connected(self, route: Sequence[str]) -> bool:
        """True when every consecutive pair of the route is an allowed connection."""
        ids = [self.index.get(e, -1) for e in route]
        return all(a >= 0 for a in ids) and all(b in self._successors[a] for a, b in itertools.pairwise(ids))

    def route_cost(self, route: Sequence[str], cost: FloatArray) -> float:
        """A route's cost under the module's convention: the sum of `cost` over its edges but the first."""
        return float(sum(cost[self.index[e]] for e in route[1:]))

    def _checked(self, cost: npt.ArrayLike) -> FloatArray:
        costs = np.asarray(cost, dtype=np.float64)
        if costs.shape != (len(self.edge_ids),):
            raise ValueError(f"cost must have shape ({len(self.edge_ids)},), got {costs.shape}")
        if np.isnan(costs).any() or (costs < 0).any():
            raise ValueError("cost must be >= 0 (np.inf closes an edge), without NaN")
        return costs

    def _search(self, targets: Sequence[int], cost: FloatArray) -> tuple[FloatArray, npt.NDArray[np.int32]]:
        """Dijkstra from each target on the reversed graph weighted by `cost`. Arcs into closed edges are
        dropped rather than weighted inf: the structure stays valid whatever csgraph does with inf (and an
        explicit 0 weight, for a free edge, stays an arc because the CSR is built from its three arrays)."""
        weights = cost[self._row]
        open_arc = np.isfinite(weights)
        if open_arc.all():
            indptr, indices = self._indptr, self._indices
        else:
            kept = np.concatenate(([0], np.cumsum(open_arc)))
            indptr, indices, weights = kept[self._indptr], self._indices[open_arc], weights[open_arc]
        n = len(self.edge_ids)
        graph = csr_matrix((weights, indices, indptr), shape=(n, n))
        dist, pred = dijkstra(
            graph, directed=True, indices=np.asarray(targets, dtype=np.int64), return_predecessors=True
        )
        return np.atleast_2d(dist), np.atleast_2d(pred)

    def _paths(self, pairs: Sequence[tuple[int, int]], cost: FloatArray) -> list[list[int] | None]:
        """Fastest path (edge indices) per (start, target) index pair; -1 marks an unknown id."""
        unique = sorted({t for s, t in pairs if s >= 0 and t >= 0})
        if not unique:
            return [None] * len(pairs)
        dist, pred = self._search(unique, cost)
        row = {t: k for k, t in enumerate(unique)}
        reachable = np.isfinite(dist).tolist()
        # On the reversed graph the predecessor of edge e is the edge to take after e: follow it to the target.
        following: list[list[int]] = pred.tolist()
        paths: list[list[int] | None] = []
        for s, t in pairs:
            if s < 0 or t < 0 or not reachable[row[t]][s]:
                paths.append(None)
                continue
            nxt, path = following[row[t]], [s]
            while path[-1] != t:
                path.append(nxt[path[-1]])
            paths.append(path)
        return paths

    def _pairs(self, starts: Sequence[str], targets: Sequence[str]) -> list[tuple[int, int]]:
        if len(starts) != len(targets):
            raise ValueError("starts and targets must have the same length")
        return [(self.index.get(s, -1), self.index.get(t, -1)) for s, t in zip(starts, targets, strict=True)]

    def route_many(self, starts: Sequence[str], targets: Sequence[str], cost: npt.ArrayLike) -> list[list[str] | None]:
        """Fastest route for each (start edge, target edge) pair under per-edge `cost` (seconds to traverse
        each edge; np.inf = closed). The route includes start and target edges. None when unreachable or an
        id is unknown. Vectorised: one scipy.sparse.csgraph.dijkstra run per UNIQUE target on the reversed
        graph (vehicles share few destinations), paths read from the predecessor arrays."""
        paths = self._paths(self._pairs(starts, targets), self._checked(cost))
        return [None if p is None else [self.edge_ids[e] for e in p] for p in paths]

    def time_to(self, targets: Sequence[str], cost: npt.ArrayLike) -> FloatArray:
        """Matrix [len(targets), n_edges]: travel time from leaving every edge (the edge itself excluded, as
        in route_many) to reaching the end of each target edge, 0 on the target itself, inf where
        unreachable or the target id is unknown. Used for parking guidance costs."""
        costs = self._checked(cost)
        out = np.full((len(targets), len(self.edge_ids)), np.inf)
        known = sorted({self.index[t] for t in targets if t in self.index})
        if known:
            dist, _ = self._search(known, costs)
            row = {t: k for k, t in enumerate(known)}
            for i, t in enumerate(targets):
                if t in self.index:
                    out[i] = dist[row[self.index[t]]]
        return out

    def spread(
        self,
        starts: Sequence[str],
        targets: Sequence[str],
        cost: npt.ArrayLike,
        *,
        flow_penalty_s: float = 8.0,
        rounds: int = 4,
        max_detour: float = 1.5,
    ) -> list[list[str] | None]:
        """Like route_many, but spreads vehicles over alternatives instead of putting them all on one
        detour: vehicles are routed in `rounds` batches; after each batch every edge used gets
        cost += flow_penalty_s * (vehicles assigned to it so far) / lanes (an incremental assignment).

        Why: when a closure makes one detour the fastest, route_many sends every vehicle down it and the
        detour jams; charging each edge for the vehicles already assigned to it is the classic
        incremental traffic assignment, cheap because each batch is one vectorised search.

        Why `max_detour`: batches are coarse (200 vehicles in 4 rounds = 50 per route), so by the last
        round the penalties on the loaded routes can outweigh a long way round, and the plain assignment
        sends a whole batch on a route 1.8x the fastest, which no driver follows. A route costing more
        than `max_detour` times the vehicle's fastest (both under `cost`, penalties not counted) is
        replaced by the cheapest, under the current penalised cost, of the routes already given to
        vehicles with the same start and target (the fastest one among them). np.inf disables the bound."""
        pairs = self._pairs(starts, targets)
        base = self._checked(cost)
        fastest = self._paths(pairs, base)  # the first batch's routes, and every vehicle's bound
        load = np.zeros(len(self.edge_ids))
        options: dict[tuple[int, int], list[list[int]]] = {}  # routes given so far, per (start, target)
        chosen: list[list[int] | None] = [None] * len(pairs)
        for n, batch in enumerate(np.array_split(np.arange(len(pairs)), max(1, min(rounds, len(pairs))))):
            current = base + flow_penalty_s * load / self.lanes
            members = [i for i in batch.tolist() if fastest[i] is not None]
            found = [fastest[i] for i in members] if n == 0 else self._paths([pairs[i] for i in members], current)
            for i, path in zip(members, found, strict=True):
                best = fastest[i]
                if best is None:
                    continue
                own = options.setdefault(pairs[i], [best])
                if path is None or base[path[1:]].sum() > max_detour * base[best[1:]].sum():
                    path = min(own, key=lambda p: float(current[p[1:]].sum()))
                elif path not in own:
                    own.append(path)
                chosen[i] = path
                np.add.at(load, path, 1.0)
        return [None if p is None else [self.edge_ids[e] for e in p] for p in chosen]
