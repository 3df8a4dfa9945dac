"""Incident rerouting: when an incident closes or slows an edge, every equipped vehicle whose
remaining route crosses it gets a new route at once, spread over the alternatives. Acting on the
police report, before any travel time shows the blockage, is the head start this lever exists for."""

from __future__ import annotations

from services.optimizer.levers.routes import Reroute, remaining_cost, replan
from services.optimizer.routing import FloatArray, RoadGraph
from services.optimizer.state import Incident, Vehicle


def cause_of(incident: Incident) -> str:
    return f"incidents/{incident.id}"


def reroutes(
    graph: RoadGraph,
    cost: FloatArray,
    vehicles: list[Vehicle],
    via: dict[str, str],
    incidents: list[Incident],
    decided: set[tuple[str, str]],
) -> list[Reroute]:
    """New routes for vehicles heading into an active incident's edge. `via`: each parking vehicle's
    parking edge; `decided`: (vehicle id, cause) pairs already answered (none is answered twice)."""
    affected: list[tuple[Vehicle, Incident]] = []
    for incident in incidents:
        if not incident.active or incident.edge_id not in graph.index:
            continue
        cause = cause_of(incident)
        for vehicle in vehicles:
            # A vehicle already on the edge cannot avoid it.
            if incident.edge_id in vehicle.route[1:] and (vehicle.id, cause) not in decided:
                affected.append((vehicle, incident))
    if not affected:
        return []
    chosen: dict[str, tuple[Vehicle, Incident]] = {}
    for vehicle, incident in affected:  # one new route per vehicle answers every incident on its way
        chosen.setdefault(vehicle.id, (vehicle, incident))
    pairs = list(chosen.values())
    stops = [via.get(v.id, "") for v, _ in pairs]
    routes = replan(graph, cost, [v for v, _ in pairs], stops)
    out = []
    for (vehicle, incident), route in zip(pairs, routes, strict=True):
        if route is None or route == vehicle.route:
            continue
        before = remaining_cost(graph, cost, vehicle.route)
        after = graph.route_cost(route, cost)
        if after >= before:
            continue
        out.append(
            Reroute(
                vehicle,
                route,
                cause_of(incident),
                f"{'closure' if incident.full_closure else 'incident'} on {incident.edge_id} ahead",
                before - after if before != float("inf") else after,
                {
                    "incident": cause_of(incident),
                    "incident_version": str(incident.version),
                    "edge": incident.edge_id,
                    "edge_seconds": f"{cost[graph.index[incident.edge_id]]:.0f}",
                },
            )
        )
    return out
