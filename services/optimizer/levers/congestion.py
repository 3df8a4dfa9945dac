"""Congestion rerouting: every decision round, vehicles whose route has become clearly slower than
another get the faster one. Damped so routes do not oscillate: the gain must pass an absolute and a
relative threshold, and a vehicle once rerouted is left alone for a while."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from services.optimizer.levers.routes import Reroute, remaining_cost, replan
from services.optimizer.routing import FloatArray, RoadGraph
from services.optimizer.state import Vehicle


@dataclass(frozen=True)
class Damping:
    min_gain_s: float
    min_relative_gain: float
    hold_s: float


def reroutes(
    graph: RoadGraph,
    cost: FloatArray,
    *,
    vehicles: list[Vehicle],
    via: dict[str, str],
    now_s: float,
    last_rerouted: dict[str, float],
    damping: Damping,
) -> list[Reroute]:
    """`via`: each parking vehicle's parking edge (its route there is what can be improved);
    `last_rerouted`: when each vehicle last got a new route (any lever)."""
    candidates = [
        v
        for v in vehicles
        if len(v.route) > 2 and now_s - last_rerouted.get(v.id, -np.inf) >= damping.hold_s and v.edge_id in graph.index
    ]
    if not candidates:
        return []
    targets = [via.get(v.id) or v.destination for v in candidates]
    unique = sorted(set(targets))
    best_from = graph.time_to(unique, cost)
    row = {t: i for i, t in enumerate(unique)}
    improvable = []
    for vehicle, target in zip(candidates, targets, strict=True):
        current = remaining_cost(graph, cost, vehicle.route, until=target)
        best = float(best_from[row[target], graph.index[vehicle.edge_id]])
        if current - best >= max(damping.min_gain_s, damping.min_relative_gain * current):
            improvable.append((vehicle, current))
    if not improvable:
        return []
    routes = replan(graph, cost, vehicles=[v for v, _ in improvable], via=[via.get(v.id, "") for v, _ in improvable])
    out = []
    for (vehicle, current), route in zip(improvable, routes, strict=True):
        if route is None:
            continue
        stop = via.get(vehicle.id, "")
        gain = current - remaining_cost(graph, cost, route, until=stop)
        if gain < max(damping.min_gain_s, damping.min_relative_gain * current):
            continue  # the spread gave this one a route no better than its own
        out.append(
            Reroute(
                vehicle=vehicle,
                route=route,
                cause=f"congestion@{now_s:.0f}",
                reason=f"{gain:.0f} s faster than its route under current travel times",
                saved_s=gain,
                trigger={"route_seconds": f"{current:.0f}", "new_route_seconds": f"{current - gain:.0f}"},
            )
        )
    return out
