"""Speed of the optimizer's vectorised routing (services/optimizer/routing.py) on almere-centrum: routes
for 1,000 vehicles whose destinations are ~12 edges (the parking facilities' edges and the exits), as in
real traffic, against the baseline measured in the same run: sumolib's per-vehicle Python Dijkstra
(``net.getFastestPath``) over the same pairs.

sumolib's readNet keeps an LRU routing cache of the searches from each start edge (maxcache=1000), so
on a 110-edge network a warm cache answers almost every query from memory; it is reset before every
repeat, and a run without the cache is shown too. Every method's routes are checked against sumolib's
(same travel time) before they are timed. Times are the median of --repeats runs.

Run: `.venv/bin/python loadtest/bench_routing.py [--vehicles 1000] [--repeats 5]`."""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import sumolib

from services.optimizer.routing import RoadGraph
from sim.scenarios import almere_centrum
from sim.scenarios.almere_centrum import layout

TARGET_MS = 200.0


def median_ms(action: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vehicles", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        net_file = almere_centrum.build(Path(tmp), seed=1, scale=0.1, horizon_s=600).network
        graph = RoadGraph.from_net(net_file)
        net = sumolib.net.readNet(str(net_file), withInternal=False)
        uncached = sumolib.net.readNet(str(net_file), withInternal=False, maxcache=0)

    exits = [e for e in graph.edge_ids if "-ext-" in e]
    destinations = sorted({f.edge for f in layout.FACILITIES} | set(exits))
    rng = random.Random(args.seed)
    starts = [rng.choice(graph.edge_ids) for _ in range(args.vehicles)]
    targets = [rng.choice(destinations) for _ in range(args.vehicles)]
    cost = graph.free_time

    def sumolib_routes(network: sumolib.net.Net) -> list[tuple[list[str] | None, float]]:
        if network is net:
            network.initRoutingCache()  # a cold cache per repeat, as for a fresh set of vehicles
        out: list[tuple[list[str] | None, float]] = []
        for s, t in zip(starts, targets, strict=True):
            path, c = network.getFastestPath(network.getEdge(s), network.getEdge(t), vClass="passenger")
            out.append((None if path is None else [e.getID() for e in path], c - cost[graph.index[s]]))
        return out

    # Correctness first: every method must find routes of the baseline's travel time.
    reference = sumolib_routes(net)
    spread = graph.spread(starts, targets, cost)
    for name, routes in (("route_many", graph.route_many(starts, targets, cost)), ("spread", spread)):
        for route, (path, expected) in zip(routes, reference, strict=True):
            if (route is None) != (path is None):
                raise SystemExit(f"{name}: reachability differs from sumolib")
            if route is not None and name == "route_many" and abs(graph.route_cost(route, cost) - expected) > 1e-6:
                raise SystemExit(f"{name}: route of {graph.route_cost(route, cost):.3f} s, sumolib {expected:.3f} s")
    detour = max(
        graph.route_cost(r, cost) / max(expected, 1e-9)
        for r, (_, expected) in zip(spread, reference, strict=True)
        if r is not None
    )

    connections = sum(len(net.getEdge(e).getAllowedOutgoing("passenger")) for e in graph.edge_ids)
    print(
        f"almere-centrum: {len(graph.edge_ids)} edges, {connections} connections; {args.vehicles} vehicles, "
        f"{len(set(targets))} distinct targets, median of {args.repeats}\n"
    )
    results = {
        "sumolib getFastestPath (baseline)": median_ms(lambda: sumolib_routes(net), args.repeats),
        "sumolib, no routing cache": median_ms(lambda: sumolib_routes(uncached), args.repeats),
        "RoadGraph.route_many": median_ms(lambda: graph.route_many(starts, targets, cost), args.repeats),
        "RoadGraph.spread (4 rounds)": median_ms(lambda: graph.spread(starts, targets, cost), args.repeats),
    }
    closed = cost.copy()
    closed[np.random.default_rng(args.seed).choice(len(closed), 3, replace=False)] = np.inf
    results["route_many, 3 edges closed"] = median_ms(lambda: graph.route_many(starts, targets, closed), args.repeats)
    base = results["sumolib getFastestPath (baseline)"]
    scale = 1000 / args.vehicles
    print(f"{'method':<36} {'ms/1,000 veh':>12} {'vehicles/s':>11} {'speed-up':>9}")
    for label, ms in results.items():
        print(f"{label:<36} {ms * scale:12.1f} {args.vehicles / ms * 1000:11,.0f} {base / ms:8.1f}x")
    print(f"\nspread: longest route {detour:.2f}x the vehicle's fastest (bound 1.5x)")
    worst = max(results["RoadGraph.route_many"], results["RoadGraph.spread (4 rounds)"]) * scale
    verdict = "met" if worst < TARGET_MS else "MISSED"
    print(f"target route_many / spread < {TARGET_MS:.0f} ms per 1,000 vehicles: {verdict} ({worst:.1f} ms)")
    return 0 if worst < TARGET_MS else 1


if __name__ == "__main__":
    sys.exit(main())
