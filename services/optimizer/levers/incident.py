"""Incident rerouting: when an incident closes or slows an edge, every equipped vehicle whose
remaining route crosses it gets a new route at once, spread over the alternatives. Acting on the
police report, before any travel time shows the blockage, is the head start this lever exists for.

A vehicle is answered once per incident, unless something else re-planned it into the incident
again since (a parking rerouter that knows nothing of it, the driver): a route that is neither the
one it had nor the one it was given gets a new answer, at most AGAIN more times."""

from __future__ import annotations

from collections.abc import Container

from services.optimizer.levers.routes import Reroute, remaining_cost, replan
from services.optimizer.routing import FloatArray, RoadGraph
from services.optimizer.state import Incident, Vehicle

AGAIN = 2
CLOSED_S = 3600.0  # what driving into a closed road is counted as losing


def cause_of(incident: Incident) -> str:
    return f"incidents/{incident.id}"


def _follows(route: list[str], known: list[list[str]]) -> bool:
    """The vehicle is still on one of the known routes (its rest is a tail of one)."""
    return any(route == r[len(r) - len(route) :] for r in known if len(r) >= len(route))


def _cause(
    vehicle: Vehicle, *, base: str, decided: Container[tuple[str, str]], known: dict[str, list[list[str]]]
) -> str:
    """The cause a new answer would carry, or "" when the vehicle needs none."""
    if (vehicle.id, base) not in decided:
        return base
    if vehicle.id not in known or _follows(vehicle.route, known[vehicle.id]):
        return ""  # as answered (or, after a restart, unknown: no repeat on a guess)
    return next((f"{base}/{n}" for n in range(1, AGAIN + 1) if (vehicle.id, f"{base}/{n}") not in decided), "")


def reroutes(
    graph: RoadGraph,
    cost: FloatArray,
    *,
    vehicles: list[Vehicle],
    via: dict[str, str],
    incidents: list[Incident],
    decided: Container[tuple[str, str]],
    known: dict[str, list[list[str]]] | None = None,
) -> list[Reroute]:
    """New routes for vehicles heading into an active incident's edge. `via`: each parking vehicle's
    parking edge; `decided`: (vehicle id, cause) pairs already answered; `known`: per vehicle, the
    routes it had and was given when answered before."""
    blocked = [i for i in incidents if i.active and i.edge_id in graph.index]
    # Who is heading into which incident's edge, found in one pass over the routes: incidents pile up
    # (a busy day keeps hundreds active) and each event would otherwise scan every route per incident.
    edges = {i.edge_id for i in blocked}
    heading: dict[str, list[Vehicle]] = {edge: [] for edge in edges}
    for vehicle in vehicles:
        for edge in edges.intersection(vehicle.route[1:]):  # a vehicle already on the edge cannot avoid it
            heading[edge].append(vehicle)
    affected: list[tuple[Vehicle, Incident, str]] = []
    for incident in blocked:
        for vehicle in heading[incident.edge_id]:
            cause = _cause(vehicle, base=cause_of(incident), decided=decided, known=known or {})
            if cause:
                affected.append((vehicle, incident, cause))
    if not affected:
        return []
    chosen: dict[str, tuple[Vehicle, Incident, str]] = {}
    for vehicle, incident, cause in affected:  # one new route per vehicle answers every incident on its way
        chosen.setdefault(vehicle.id, (vehicle, incident, cause))
    pairs = list(chosen.values())
    stops = [via.get(v.id, "") for v, _, _ in pairs]
    routes = replan(graph, cost, vehicles=[v for v, _, _ in pairs], via=stops)
    out = []
    for (vehicle, incident, cause), route in zip(pairs, routes, strict=True):
        if route is None or route == vehicle.route:
            continue
        before = remaining_cost(graph, cost, vehicle.route)
        after = graph.route_cost(route, cost)
        if after >= before:
            continue
        out.append(
            Reroute(
                vehicle=vehicle,
                route=route,
                cause=cause,
                reason=f"{'closure' if incident.full_closure else 'incident'} on {incident.edge_id} ahead",
                saved_s=min(before - after, CLOSED_S),
                trigger={
                    "incident": cause_of(incident),
                    "incident_version": str(incident.version),
                    "edge": incident.edge_id,
                    "edge_seconds": f"{cost[graph.index[incident.edge_id]]:.0f}",
                },
            )
        )
    return out
