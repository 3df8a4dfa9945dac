"""Routes for many vehicles at once, through the parking area a vehicle still has ahead."""

from __future__ import annotations

from dataclasses import dataclass, field

from services.optimizer.routing import FloatArray, RoadGraph
from services.optimizer.state import Vehicle


@dataclass(frozen=True, kw_only=True)
class Reroute:
    """A new route for a vehicle, what caused it (at most one decision per vehicle and cause), why."""

    vehicle: Vehicle
    route: list[str]
    cause: str
    reason: str
    saved_s: float
    trigger: dict[str, str] = field(default_factory=dict)


def replan(
    graph: RoadGraph, cost: FloatArray, *, vehicles: list[Vehicle], via: list[str], spread: bool = True
) -> list[list[str] | None]:
    """Each vehicle's fastest route from where it is, through `via` (its parking edge; "" for none) to
    its destination. `spread`: share the first leg over alternatives instead of one detour for all."""
    starts = [v.edge_id for v in vehicles]
    first = [stop or v.destination for v, stop in zip(vehicles, via, strict=True)]
    legs = graph.spread(starts, first, cost) if spread else graph.route_many(starts, first, cost)
    onward = [i for i, stop in enumerate(via) if stop and stop != vehicles[i].destination]
    rest = graph.route_many([via[i] for i in onward], [vehicles[i].destination for i in onward], cost)
    out: list[list[str] | None] = list(legs)
    for i, tail in zip(onward, rest, strict=True):
        head = out[i]
        out[i] = None if head is None or tail is None else head + tail[1:]
    return out


def remaining_cost(graph: RoadGraph, cost: FloatArray, route: list[str], *, until: str = "") -> float:
    """Time to drive the rest of `route` (its first edge excluded) up to `until` (or to its end)."""
    end = route.index(until, 1) + 1 if until and until in route[1:] else len(route)
    return graph.route_cost(route[:end], cost)
