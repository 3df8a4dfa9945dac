"""services/optimizer/routing.py on real SUMO networks (built by netconvert), checked against sumolib's
own router and against the network's connections as sumolib reads them, not against our graph."""

from __future__ import annotations

import itertools
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import sumolib

from services.optimizer.routing import RoadGraph
from sim.named_networks import build_network
from sim.scenarios.almere_centrum import layout

WEST_IN = layout.edge_id("ext-w", layout.node_id(0, 2))
EAST_OUT = layout.edge_id(layout.node_id(5, 2), "ext-e")


@pytest.fixture(scope="module")
def graph(almere_net: Path) -> RoadGraph:
    return RoadGraph.from_net(almere_net)


@pytest.fixture(scope="module")
def net(almere_net: Path) -> sumolib.net.Net:
    return sumolib.net.readNet(str(almere_net), withInternal=False)


def random_pairs(graph: RoadGraph, n: int, seed: int = 7) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    pairs: list[tuple[str, str]] = []
    while len(pairs) < n:
        start, target = rng.sample(graph.edge_ids, 2)
        pairs.append((start, target))
    return pairs


def connected_in_sumo(net: sumolib.net.Net, route: list[str]) -> bool:
    """Each consecutive pair is a connection a passenger car may take, as sumolib reads the network."""
    edges = [net.getEdge(e) for e in route]
    return all(b in a.getAllowedOutgoing("passenger") for a, b in itertools.pairwise(edges))


@pytest.mark.parametrize("fastest", [True, False], ids=["getFastestPath", "getShortestPath"])
def test_route_many_matches_sumolib(graph: RoadGraph, net: sumolib.net.Net, fastest: bool) -> None:
    # getFastestPath weighs edges by length / speed, getShortestPath by length alone; both count the
    # start edge, which our convention leaves out.
    cost = graph.free_time if fastest else graph.length
    pairs = random_pairs(graph, 50)
    routes = graph.route_many([s for s, _ in pairs], [t for _, t in pairs], cost)
    identical = 0
    for (start, target), route in zip(pairs, routes, strict=True):
        router = net.getFastestPath if fastest else net.getShortestPath
        path, sumo_cost = router(net.getEdge(start), net.getEdge(target), vClass="passenger")
        assert path is not None and route is not None
        expected = sumo_cost - cost[graph.index[start]]
        assert graph.route_cost(route, cost) == pytest.approx(expected, abs=1e-6)
        assert route[0] == start and route[-1] == target and connected_in_sumo(net, route)
        identical += route == [e.getID() for e in path]  # else an exact tie, of equal cost (checked above)
    assert identical >= 48


def test_closed_edge_is_avoided_and_route_stays_connected(graph: RoadGraph, net: sumolib.net.Net) -> None:
    pairs = random_pairs(graph, 60, seed=11)
    free = graph.route_many([s for s, _ in pairs], [t for _, t in pairs], graph.free_time)
    checked = 0
    for (start, target), route in zip(pairs, free, strict=True):
        assert route is not None
        if len(route) < 4:
            continue
        closed = route[len(route) // 2]
        cost = graph.free_time.copy()
        cost[graph.index[closed]] = np.inf
        (detour,) = graph.route_many([start], [target], cost)
        if detour is None:  # the closed edge was the only way: then no route may exist at all
            assert graph.time_to([target], cost)[0, graph.index[start]] == np.inf
            continue
        assert closed not in detour
        assert detour[0] == start and detour[-1] == target and connected_in_sumo(net, detour)
        assert np.isfinite(graph.route_cost(detour, cost))
        assert graph.route_cost(detour, cost) >= graph.route_cost(route, graph.free_time) - 1e-9
        checked += 1
    assert checked >= 20


def test_vehicle_on_a_closed_edge_can_still_leave_it(graph: RoadGraph) -> None:
    (route,) = graph.route_many([WEST_IN], [EAST_OUT], graph.free_time)
    assert route is not None
    cost = graph.free_time.copy()
    cost[graph.index[WEST_IN]] = np.inf
    assert graph.route_many([WEST_IN], [EAST_OUT], cost) == [route]


def test_unknown_and_unreachable_give_none(graph: RoadGraph, net: sumolib.net.Net) -> None:
    cost = graph.free_time.copy()
    # Close every edge leading into the target: nothing reaches it any more.
    for incoming in net.getEdge(EAST_OUT).getIncoming():
        cost[graph.index[incoming.getID()]] = np.inf
    starts = ["no-such-edge", WEST_IN, WEST_IN, WEST_IN, EAST_OUT]
    targets = [EAST_OUT, "no-such-edge", EAST_OUT, WEST_IN, EAST_OUT]
    routes = graph.route_many(starts, targets, cost)
    assert routes[:3] == [None, None, None]
    assert routes[3] is not None and routes[3][0] == WEST_IN
    assert routes[4] == [EAST_OUT]  # already there
    # A closed target cannot be reached either.
    closed_target = graph.free_time.copy()
    closed_target[graph.index[EAST_OUT]] = np.inf
    assert graph.route_many([WEST_IN], [EAST_OUT], closed_target) == [None]
    assert graph.route_many([], [], cost) == []


def test_zero_cost_edges_are_still_arcs(graph: RoadGraph, net: sumolib.net.Net) -> None:
    # csgraph drops zero weights of a dense matrix or of a CSR that gets its zeros eliminated; free edges
    # must stay traversable.
    pairs = random_pairs(graph, 20, seed=3)
    routes = graph.route_many([s for s, _ in pairs], [t for _, t in pairs], np.zeros(len(graph.edge_ids)))
    for (start, target), route in zip(pairs, routes, strict=True):
        assert route is not None and route[0] == start and route[-1] == target and connected_in_sumo(net, route)


def test_costs_are_validated(graph: RoadGraph) -> None:
    with pytest.raises(ValueError, match="shape"):
        graph.route_many([WEST_IN], [EAST_OUT], graph.free_time[:-1])
    negative = graph.free_time.copy()
    negative[0] = -1.0
    with pytest.raises(ValueError, match=">= 0"):
        graph.route_many([WEST_IN], [EAST_OUT], negative)
    with pytest.raises(ValueError, match="same length"):
        graph.route_many([WEST_IN], [], graph.free_time)


def test_spread_uses_alternatives_within_bounds(graph: RoadGraph, net: sumolib.net.Net) -> None:
    cost = graph.free_time
    routes = graph.spread([WEST_IN] * 200, [EAST_OUT] * 200, cost)
    (fastest,) = graph.route_many([WEST_IN], [EAST_OUT], cost)
    assert fastest is not None
    best = graph.route_cost(fastest, cost)
    counts = Counter(tuple(r) for r in routes if r is not None)
    assert sum(counts.values()) == 200
    assert len(counts) >= 2
    assert tuple(fastest) in counts
    for route in counts:
        assert connected_in_sumo(net, list(route)) and route[0] == WEST_IN and route[-1] == EAST_OUT
        assert graph.route_cost(list(route), cost) <= 1.5 * best + 1e-9
    # route_many, by contrast, puts everyone on the one fastest route.
    assert set(map(tuple, graph.route_many([WEST_IN] * 200, [EAST_OUT] * 200, cost))) == {tuple(fastest)}


def test_spread_respects_closures_and_unreachable(graph: RoadGraph) -> None:
    (fastest,) = graph.route_many([WEST_IN], [EAST_OUT], graph.free_time)
    assert fastest is not None
    cost = graph.free_time.copy()
    closed = fastest[len(fastest) // 2]
    cost[graph.index[closed]] = np.inf
    routes = graph.spread([WEST_IN] * 40 + ["no-such-edge"], [EAST_OUT] * 40 + [EAST_OUT], cost)
    assert routes[-1] is None
    assert all(r is not None and closed not in r for r in routes[:-1])


def test_time_to_agrees_with_route_costs(graph: RoadGraph) -> None:
    rng = np.random.default_rng(5)
    cost = graph.free_time * rng.uniform(1.0, 3.0, len(graph.edge_ids))
    cost[rng.choice(len(graph.edge_ids), 5, replace=False)] = np.inf
    targets = [f.edge for f in layout.FACILITIES] + [EAST_OUT, "no-such-edge"]
    times = graph.time_to(targets, cost)
    assert times.shape == (len(targets), len(graph.edge_ids))
    assert np.all(times[-1] == np.inf)
    for k, target in enumerate(targets[:-1]):
        assert times[k, graph.index[target]] == 0.0
        routes = graph.route_many(graph.edge_ids, [target] * len(graph.edge_ids), cost)
        for start, route in zip(graph.edge_ids, routes, strict=True):
            if route is None:
                assert times[k, graph.index[start]] == np.inf
            else:
                assert times[k, graph.index[start]] == pytest.approx(graph.route_cost(route, cost), abs=1e-6)
    assert np.isfinite(times[:-1]).mean() > 0.8


def test_only_passenger_edges_are_in_the_graph(tmp_path: Path) -> None:
    net_file = build_network("centrum-mini", tmp_path)
    net = sumolib.net.readNet(str(net_file), withInternal=False)
    graph = RoadGraph.from_net(net_file)
    barred = {e.getID() for e in net.getEdges() if not e.allows("passenger")}
    assert barred, "centrum-mini has a promenade closed to cars"
    assert set(graph.edge_ids) == {e.getID() for e in net.getEdges()} - barred
    assert graph.route_many([next(iter(barred))], [graph.edge_ids[0]], graph.free_time) == [None]
    pairs = [(s, t) for s in graph.edge_ids for t in graph.edge_ids if s != t]
    for route in graph.route_many([s for s, _ in pairs], [t for _, t in pairs], graph.free_time):
        assert route is None or (not barred & set(route) and graph.is_connected(route))
