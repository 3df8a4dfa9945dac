"""The optimizer's levers and decisions on the real almere-centrum network (no bus, no database)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from almere.incidents.v1 import events_pb2 as ievents
from almere.incidents.v1 import incidents_pb2 as ipb
from almere.optimizer.v1 import decisions_pb2 as dpb
from almere.optimizer.v1 import optimizer_pb2 as pb
from almere.parking.v1 import events_pb2 as pevents
from almere.parking.v1 import parking_pb2 as ppb

from services.common.clock import to_timestamp
from services.optimizer.decision_engine import DecisionEngine
from services.optimizer.levers import congestion, incident, parking
from services.optimizer.routing import RoadGraph
from services.optimizer.state import Facility, Incident, Vehicle
from services.optimizer.usecases import Loaded
from sim.scenarios.almere_centrum import layout

WEST_IN = layout.edge_id("ext-w", "j02")
EAST_OUT = layout.edge_id("j52", "ext-e")
STADSDREEF = layout.edge_id("j22", "j32")  # the middle arterial: where the scripted collision happens
NOW = datetime(2026, 11, 25, 9, tzinfo=UTC)


@pytest.fixture(scope="module")
def graph(almere_net: Path) -> RoadGraph:
    return RoadGraph.from_net(almere_net)


def through(graph: RoadGraph, n: int, start: str = WEST_IN, end: str = EAST_OUT) -> list[Vehicle]:
    route = graph.route_many([start], [end], graph.free_time)[0]
    assert route is not None
    return [Vehicle(id=f"v{i}", edge_id=start, route=list(route)) for i in range(n)]


def test_an_incident_reroutes_every_vehicle_heading_into_it_over_several_alternatives(graph: RoadGraph) -> None:
    vehicles = through(graph, 60)
    assert STADSDREEF in vehicles[0].route, "the free-flow route west to east runs over the Stadsdreef"
    collision = Incident(id="c1", version=2, edge_id=STADSDREEF, active=True, closed_lanes=[1], speed_limit_kmh=5)
    cost = graph.free_time.copy()
    cost[graph.index[STADSDREEF]] = graph.length[graph.index[STADSDREEF]] / (5 / 3.6)
    found = incident.reroutes(graph, cost, vehicles=vehicles, via={}, incidents=[collision], decided=set())
    assert {r.vehicle.id for r in found} == {v.id for v in vehicles}
    assert all(STADSDREEF not in r.route and graph.is_connected(r.route) for r in found)
    assert all(r.route[0] == WEST_IN and r.route[-1] == EAST_OUT for r in found)
    assert len({tuple(r.route) for r in found}) >= 2, "all 60 sent down one detour"
    assert all(r.cause == "incidents/c1" and r.trigger["incident_version"] == "2" for r in found)
    # Answered once: the same vehicles are not decided again for the same incident.
    decided = {(r.vehicle.id, r.cause) for r in found}
    assert incident.reroutes(graph, cost, vehicles=vehicles, via={}, incidents=[collision], decided=decided) == []
    # Cleared: nothing to do.
    cleared = Incident(id="c1", version=3, edge_id=STADSDREEF, active=False)
    assert incident.reroutes(graph, cost, vehicles=vehicles, via={}, incidents=[cleared], decided=set()) == []


def test_a_vehicle_on_the_incident_edge_or_past_it_is_left_alone(graph: RoadGraph) -> None:
    (vehicle,) = through(graph, 1)
    on_it = Vehicle(id="on", edge_id=STADSDREEF, route=vehicle.route[vehicle.route.index(STADSDREEF) :])
    collision = Incident(id="c1", version=1, edge_id=STADSDREEF, active=True, full_closure=True)
    cost = graph.free_time.copy()
    cost[graph.index[STADSDREEF]] = np.inf
    assert incident.reroutes(graph, cost, vehicles=[on_it], via={}, incidents=[collision], decided=set()) == []


def test_an_incident_reroute_keeps_a_parkers_garage_on_the_route(graph: RoadGraph) -> None:
    forum = next(f for f in layout.FACILITIES if f.facility_id == "garage-forum")
    first = graph.route_many([WEST_IN], [forum.edge], graph.free_time)[0]
    rest = graph.route_many([forum.edge], [EAST_OUT], graph.free_time)[0]
    assert first and rest
    parker = Vehicle(id="p", edge_id=WEST_IN, route=first + rest[1:], parking=True, parking_area_id=forum.facility_id)
    blocked = next(e for e in first[1:-1] if e in graph.index)
    cost = graph.free_time.copy()
    cost[graph.index[blocked]] = np.inf
    closure = Incident(id="x", version=1, edge_id=blocked, active=True, full_closure=True)
    found = incident.reroutes(graph, cost, vehicles=[parker], via={"p": forum.edge}, incidents=[closure], decided=set())
    assert len(found) == 1 and blocked not in found[0].route and forum.edge in found[0].route
    assert found[0].route[-1] == EAST_OUT and graph.is_connected(found[0].route)


def test_congestion_rerouting_needs_a_clear_gain_and_leaves_rerouted_vehicles_alone(graph: RoadGraph) -> None:
    vehicles = through(graph, 5)
    damping = congestion.Damping(min_gain_s=30, min_relative_gain=0.15, hold_s=300)
    slow = graph.free_time.copy()
    slow[graph.index[STADSDREEF]] += 10  # a little slower: not worth a new route
    assert (
        congestion.reroutes(graph, slow, vehicles=vehicles, via={}, now_s=1000, last_rerouted={}, damping=damping) == []
    )
    jam = graph.free_time.copy()
    jam[graph.index[STADSDREEF]] = 400
    found = congestion.reroutes(graph, jam, vehicles=vehicles, via={}, now_s=1000, last_rerouted={}, damping=damping)
    assert len(found) == 5 and all(STADSDREEF not in r.route and r.saved_s >= 30 for r in found)
    # Damping: rerouted 100 s ago, a vehicle keeps its route even though the jam would justify a change.
    assert (
        congestion.reroutes(
            graph, jam, vehicles=vehicles, via={}, now_s=1000, last_rerouted={"v0": 900.0}, damping=damping
        )[0].vehicle.id
        != "v0"
    )
    assert (
        len(
            congestion.reroutes(
                graph, jam, vehicles=vehicles, via={}, now_s=1000, last_rerouted={"v0": 900.0}, damping=damping
            )
        )
        == 4
    )


def _facility(fid: str, capacity: int, occupied: int = 0) -> Facility:
    f = next(x for x in layout.FACILITIES if x.facility_id == fid)
    lat, lon = layout.position(*[int(c) for c in f.edge.split("-")[0][1:]])
    return Facility(
        id=fid,
        version=1,
        capacity=capacity,
        occupied=occupied,
        available=True,
        edge_id=f.edge,
        latitude=lat,
        longitude=lon,
    )


def test_guidance_never_promises_more_spaces_than_are_free(graph: RoadGraph) -> None:
    forum = _facility("garage-forum", 20, occupied=10)
    flevo = _facility("garage-flevo", 30, occupied=25)
    offers = parking.offers([forum, flevo], promised={"garage-forum": 4}, freeing={}, reserve=2)
    assert {o.facility.id: o.spaces for o in offers} == {"garage-forum": 4, "garage-flevo": 3}
    vehicles = [
        Vehicle(id=f"v{i}", edge_id=WEST_IN, route=[WEST_IN], parking=True, walk_to=(forum.latitude, forum.longitude))
        for i in range(40)
    ]
    assigned = parking.assign(graph, graph.free_time, vehicles=vehicles, available=offers)
    per_facility = Counter(a.facility.id for a in assigned)
    assert per_facility == {"garage-forum": 4, "garage-flevo": 3}, "more vehicles than promised spaces"
    # Spaces about to be freed may cover the reserve, never more than is free now.
    freed = parking.offers([flevo], promised={}, freeing={"garage-flevo": 50}, reserve=2)
    assert freed[0].spaces == 5
    # A garage whose count its operator keeps from the optimizer is unknown, not empty: no offer.
    forum.counted = False
    assert [o.facility.id for o in parking.offers([forum, flevo], promised={}, freeing={}, reserve=0)] == [
        "garage-flevo"
    ]


def test_guidance_weighs_drive_search_and_walk(graph: RoadGraph) -> None:
    forum, stadhuis = _facility("garage-forum", 100), _facility("garage-stadhuisplein", 100)
    walker = Vehicle(
        id="w", edge_id=WEST_IN, route=[WEST_IN], parking=True, walk_to=(stadhuis.latitude, stadhuis.longitude)
    )
    (choice,) = parking.assign(
        graph,
        graph.free_time,
        vehicles=[walker],
        available=parking.offers([forum, stadhuis], promised={}, freeing={}, reserve=0),
    )
    assert choice.facility.id == "garage-stadhuisplein" and choice.walk_s < 60
    # Halfway between the two: the walk is the same, so the drive decides, until the expected search
    # at an almost full garage outweighs it.
    halfway = ((forum.latitude + stadhuis.latitude) / 2, (forum.longitude + stadhuis.longitude) / 2)
    both = Vehicle(id="h", edge_id=WEST_IN, route=[WEST_IN], parking=True, walk_to=halfway)
    (first,) = parking.assign(
        graph,
        graph.free_time,
        vehicles=[both],
        available=parking.offers([forum, stadhuis], promised={}, freeing={}, reserve=0),
    )
    fuller = [_facility(f.id, 100, occupied=99 if f.id == first.facility.id else 0) for f in (forum, stadhuis)]
    (second,) = parking.assign(
        graph, graph.free_time, vehicles=[both], available=parking.offers(fuller, promised={}, freeing={}, reserve=0)
    )
    assert second.facility.id != first.facility.id and second.search_s == 0
    assert parking.search_s(0.99) > 100 and parking.search_s(0.5) == 0


def _decisions(graph: RoadGraph) -> DecisionEngine:
    decisions = DecisionEngine(graph, Loaded())
    for n, f in enumerate(layout.FACILITIES):
        facility = ppb.Facility(capacity=f.capacity, entrance_edge_ids=[f.edge])
        lat, lon = layout.position(n % 5, 2)
        facility.location.latitude, facility.location.longitude = lat, lon
        decisions.on_facility(pevents.FacilityChangedEvent(facility_id=f.facility_id, version=1, facility=facility))
    return decisions


def _parker(graph: RoadGraph, vehicle: str, area: str) -> pb.VehicleState:
    """A car entering from the west, bound for `area`, then leaving east."""
    route = graph.route_many([WEST_IN], [EAST_OUT], graph.free_time)[0] or []
    return pb.VehicleState(
        vehicle_id=vehicle, edge_id=WEST_IN, route=route, purpose=pb.VEHICLE_PURPOSE_PARKING, parking_area_id=area
    )


def _report(graph: RoadGraph, sim_s: float, states: list[pb.VehicleState]) -> pb.ReportVehiclesRequest:
    return pb.ReportVehiclesRequest(vehicles=states, sim_time_seconds=sim_s)


def test_engine_promises_spaces_until_a_count_includes_the_parked_vehicle(graph: RoadGraph) -> None:
    decisions = _decisions(graph)
    parker = _parker(graph, "r1:visitor-1", "garage-forum")
    parker.walk_destination.latitude, parker.walk_destination.longitude = layout.position(3, 1)
    writes = decisions.on_report(_report(graph, 30, [parker]), NOW)
    (taken,) = writes.decisions
    guided = taken.decision.parking_guidance
    assert taken.decision.lever == dpb.LEVER_PARKING_GUIDANCE and guided.vehicle_id == "r1:visitor-1"
    area_edge = decisions.facilities[guided.parking_area_id].edge_id
    assert area_edge in guided.edges and guided.edges[0] == WEST_IN and guided.edges[-1] == EAST_OUT
    assert decisions.promised()[guided.parking_area_id] == 1
    # The next round (the vehicle follows the guidance) does not guide it again.
    parker.parking_area_id = guided.parking_area_id
    assert decisions.on_report(_report(graph, 60, [parker]), NOW + timedelta(seconds=1)).decisions == []
    # Parked: the promise holds until a count made after it parked.
    parked = pb.VehicleState(
        vehicle_id="r1:visitor-1",
        edge_id=area_edge,
        route=[area_edge],
        purpose=pb.VEHICLE_PURPOSE_PARKED,
        parked_at=guided.parking_area_id,
    )
    decisions.on_report(_report(graph, 90, [parked]), NOW + timedelta(seconds=2))
    assert decisions.promised()[guided.parking_area_id] == 1
    count = pevents.OccupancyChangedEvent(
        facility_id=guided.parking_area_id,
        version=2,
        occur_time=to_timestamp(NOW + timedelta(seconds=3)),
        occupancy=ppb.Occupancy(occupied_spaces=1, capacity=decisions.facilities[guided.parking_area_id].capacity),
    )
    released = decisions.on_occupancy(count)
    assert released.released == ["r1:visitor-1"] and decisions.promised()[guided.parking_area_id] == 0
    # A vehicle that leaves the road without parking frees its promise at once.
    decisions.on_report(_report(graph, 120, [parker.__class__(vehicle_id="r1:visitor-2", edge_id=WEST_IN)]), NOW)
    assert "r1:visitor-2" not in decisions.reservations


def test_engine_answers_an_incident_at_once_and_its_clearing_stops_the_reroutes(graph: RoadGraph) -> None:
    decisions = _decisions(graph)
    route = graph.route_many([WEST_IN], [EAST_OUT], graph.free_time)[0] or []
    states = [pb.VehicleState(vehicle_id=f"v{i}", edge_id=WEST_IN, route=route) for i in range(10)]
    decisions.on_report(_report(graph, 30, states), NOW)
    collision = ipb.Incident(state=ipb.INCIDENT_STATE_ACTIVE)
    collision.network_location.edge_id = STADSDREEF
    collision.impact.closed_lanes.append(1)
    collision.impact.speed_limit_kmh = 5
    writes = decisions.on_incident(ievents.IncidentEvent(incident_id="c1", version=2, incident=collision), NOW)
    assert len(writes.decisions) == 10
    assert all(STADSDREEF not in t.decision.route_advice.edges for t in writes.decisions)
    assert all(t.decision.trigger["incident"] == "incidents/c1" for t in writes.decisions)
    # The same event again (a redelivery) changes nothing.
    again = decisions.on_incident(ievents.IncidentEvent(incident_id="c1", version=2, incident=collision), NOW)
    assert not again
    collision.state = ipb.INCIDENT_STATE_CLEARED
    decisions.on_incident(ievents.IncidentEvent(incident_id="c1", version=3, incident=collision), NOW)
    fresh = [pb.VehicleState(vehicle_id="late", edge_id=WEST_IN, route=route)]
    assert decisions.on_report(_report(graph, 3600, fresh), NOW).decisions == []


def test_guidance_expects_drivers_without_guidance_to_keep_arriving(graph: RoadGraph) -> None:
    forum, stadhuis = _facility("garage-forum", 100, occupied=95), _facility("garage-stadhuisplein", 100)
    walker = Vehicle(id="w", edge_id=WEST_IN, route=[WEST_IN], parking=True, walk_to=(forum.latitude, forum.longitude))
    calm = parking.offers([forum, stadhuis], promised={}, freeing={}, reserve=0)
    assert parking.assign(graph, graph.free_time, vehicles=[walker], available=calm)[0].facility.id == "garage-forum"
    # Forum fills at one car every 10 s: its last 5 spaces are gone before this driver gets there.
    busy = parking.offers([forum, stadhuis], promised={}, freeing={}, reserve=0, inflow={"garage-forum": 0.1})
    (choice,) = parking.assign(graph, graph.free_time, vehicles=[walker], available=busy)
    assert choice.facility.id == "garage-stadhuisplein"


def test_engine_measures_the_inflow_of_drivers_without_guidance(graph: RoadGraph) -> None:
    decisions = _decisions(graph)
    for n, (sim_s, occupied) in enumerate([(30, 10), (90, 40)]):
        decisions.on_occupancy(
            pevents.OccupancyChangedEvent(
                facility_id="garage-forum",
                version=10 + n,
                occur_time=to_timestamp(NOW),
                occupancy=ppb.Occupancy(occupied_spaces=occupied, capacity=350),
            )
        )
        decisions.on_report(_report(graph, sim_s, []), NOW)
    assert decisions.fleets[""].inflow["garage-forum"] == pytest.approx(30 / 60)


def test_a_vehicle_replanned_into_the_incident_by_someone_else_is_answered_again(graph: RoadGraph) -> None:
    decisions = _decisions(graph)
    route = graph.route_many([WEST_IN], [EAST_OUT], graph.free_time)[0] or []
    state = pb.VehicleState(vehicle_id="v", edge_id=WEST_IN, route=route)
    decisions.on_report(_report(graph, 30, [state]), NOW)
    collision = ipb.Incident(state=ipb.INCIDENT_STATE_ACTIVE)
    collision.network_location.edge_id = STADSDREEF
    collision.impact.speed_limit_kmh = 5
    (first,) = decisions.on_incident(
        ievents.IncidentEvent(incident_id="c1", version=1, incident=collision), NOW
    ).decisions
    advised = list(first.decision.route_advice.edges)
    # Still reporting the old route (the advice not applied yet), or the advised one: no new answer.
    assert decisions.on_report(_report(graph, 60, [state]), NOW).decisions == []
    state.route[:] = advised
    assert decisions.on_report(_report(graph, 90, [state]), NOW).decisions == []
    # A parking rerouter that knows nothing of the collision sends it back through it: answered again.
    detour = graph.route_many([WEST_IN], ["j21-j22"], graph.free_time)[0] or []
    back = graph.route_many(["j21-j22"], [EAST_OUT], graph.free_time)[0] or []
    state.route[:] = detour + back[1:]
    assert state.route != route and STADSDREEF in state.route
    (again,) = decisions.on_report(_report(graph, 120, [state]), NOW).decisions
    assert again.cause == "incidents/c1/1" and STADSDREEF not in again.decision.route_advice.edges


def test_the_engine_forgets_answers_older_than_any_trip(graph: RoadGraph) -> None:
    from services.optimizer.decision_engine import DECISION_MEMORY

    decisions = _decisions(graph)
    decisions.decided[("old-trip", "guidance/garage-forum")] = NOW - DECISION_MEMORY - timedelta(minutes=1)
    decisions.decided[("this-trip", "guidance/garage-forum")] = NOW - timedelta(minutes=5)
    decisions.on_report(_report(graph, 10, [pb.VehicleState(vehicle_id="gone", edge_id=WEST_IN)]), NOW)
    decisions.last_rerouted["gone"] = 10.0
    decisions.on_report(_report(graph, 30, []), NOW)  # it left
    assert set(decisions.decided) == {("this-trip", "guidance/garage-forum")} and "gone" not in decisions.last_rerouted


def test_each_reporter_keeps_its_own_vehicles_promises_and_clock(graph: RoadGraph) -> None:
    decisions = _decisions(graph)
    parker = _parker(graph, "twin:p", "garage-forum")
    route = list(parker.route)
    (guided,) = decisions.on_report(_report(graph, 30, [parker]), NOW, reporter="twin").decisions
    assert decisions.promised()[guided.decision.parking_guidance.parking_area_id] == 1
    # A navigation backend reports its own cars on the wall clock: the twin's car and promise stay.
    app = pb.VehicleState(vehicle_id="app:x", edge_id=WEST_IN, route=route)
    writes = decisions.on_report(pb.ReportVehiclesRequest(vehicles=[app]), NOW, reporter="app")
    assert writes.released == [] and set(decisions.vehicles) == {"twin:p", "app:x"}
    assert decisions.fleets["twin"].clock_s == 30 and decisions.fleets["app"].clock_s == NOW.timestamp()
    # The twin no longer lists its car (it left without parking): only then is the promise released.
    assert decisions.on_report(_report(graph, 60, []), NOW, reporter="twin").released == ["twin:p"]
    assert set(decisions.vehicles) == {"app:x"}


def test_no_guidance_to_a_facility_closed_when_the_driver_gets_there(graph: RoadGraph) -> None:
    decisions = _decisions(graph)
    # Every facility but the Forum closes at 09:00 Amsterdam time; it is 09:55 there (08:55 UTC).
    hours = ppb.OpeningWindow(day_of_week=3, opens="07:00", closes="10:00")
    for n, f in enumerate(layout.FACILITIES):
        facility = ppb.Facility(capacity=f.capacity, entrance_edge_ids=[f.edge], time_zone="Europe/Amsterdam")
        facility.location.latitude, facility.location.longitude = layout.position(n % 5, 2)
        if f.facility_id != "garage-forum":
            facility.opening_hours.append(hours)
        decisions.on_facility(pevents.FacilityChangedEvent(facility_id=f.facility_id, version=2, facility=facility))
    parker = _parker(graph, "p", "garage-flevo")
    wednesday = datetime(2026, 11, 25, 8, 55, tzinfo=UTC)  # 09:55 in Amsterdam: closing in 5 minutes
    (guided,) = decisions.on_report(_report(graph, 30, [parker]), wednesday).decisions
    assert guided.decision.parking_guidance.parking_area_id == "garage-forum"
