"""The optimizer's levers steering real SUMO vehicles (the engine in-process, the twin's own
navigation and controller code): a closure forces reroutes that avoid it, and parking guidance never
promises a facility more vehicles than it has free spaces."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from almere.incidents.v1 import events_pb2 as ievents
from almere.incidents.v1 import incidents_pb2 as ipb
from almere.optimizer.v1 import decisions_pb2 as dpb
from almere.parking.v1 import events_pb2 as pevents
from almere.parking.v1 import parking_pb2 as ppb

from services.common.clock import to_timestamp, utcnow
from services.optimizer.inprocess import InProcessOptimizer
from services.optimizer.routing import RoadGraph
from sim.decision_applier import DecisionApplier
from sim.navigation import Navigation
from sim.runner import RunSpec, prepare
from sim.scenarios.almere_centrum import layout
from tests.sim import start_libsumo

CLOSED = layout.edge_id("j22", "j32")
# Smaller than the SUMO areas: the optimizer believes garages are small, so guidance runs out of room.
CAPACITY = 25


@pytest.fixture
def sumo(tmp_path: Path) -> Any:
    spec = RunSpec(scenario="almere-centrum", mode="coordinated", seed=3, out_root=tmp_path, end_s=1800, scale=0.7)
    scenario = prepare(spec)
    libsumo = start_libsumo(scenario.config, scenario.parking, scenario.guided_rerouters)
    yield libsumo, scenario
    libsumo.close()


def _facilities(optimizer: InProcessOptimizer) -> None:
    for n, f in enumerate(layout.FACILITIES):
        facility = ppb.Facility(capacity=CAPACITY, entrance_edge_ids=[f.edge])
        facility.location.latitude, facility.location.longitude = layout.position(1 + n % 4, 1 + n % 3)
        optimizer.decisions.on_facility(
            pevents.FacilityChangedEvent(facility_id=f.facility_id, version=1, facility=facility)
        )


def _count(optimizer: InProcessOptimizer, sumo: Any, version: int) -> None:
    for f in layout.FACILITIES:
        occupied = sumo.parkingarea.getVehicleCount(f.facility_id)
        event = pevents.OccupancyChangedEvent(
            facility_id=f.facility_id,
            version=version,
            occur_time=to_timestamp(utcnow()),
            occupancy=ppb.Occupancy(occupied_spaces=min(occupied, CAPACITY), capacity=CAPACITY),
        )
        optimizer.decisions.on_occupancy(event)


def arrived(optimizer: InProcessOptimizer, facility: str) -> int:
    """Promises of vehicles parked since the last count: the space is theirs, the count will show it."""
    return sum(r.facility_id == facility and r.arrived is not None for r in optimizer.decisions.reservations.values())


def test_levers_steer_sumo_vehicles(sumo: Any, tmp_path: Path) -> None:
    engine, scenario = sumo
    optimizer = InProcessOptimizer(RoadGraph.from_net(scenario.network))
    _facilities(optimizer)
    applier = DecisionApplier(tmp_path / "applied.jsonl", plans=False, vehicle_prefix="t:")
    navigation = Navigation(
        report_vehicles=optimizer.ReportVehicles,
        metadata=(),
        equipped=1.0,
        seed=3,
        prefix="t:",
        walks={},
        areas={f.facility_id for f in layout.FACILITIES},
    )
    edges = [e for e in engine.edge.getIDList() if not e.startswith(":")]
    rerouted: list[str] = []
    now, version = 0.0, 1
    while now < 1800:
        engine.simulationStep()
        now = engine.simulation.getTime()
        applier.retry(engine, now)
        if now % 60 == 0:
            version += 1
            _count(optimizer, engine, version)
        if now == 900:  # the Stadsdreef closes; the optimizer hears it from the police at once
            for lane in range(engine.edge.getLaneNumber(CLOSED)):
                engine.lane.setAllowed(f"{CLOSED}_{lane}", ["authority"])
            closure = ipb.Incident(state=ipb.INCIDENT_STATE_ACTIVE)
            closure.network_location.edge_id = CLOSED
            closure.impact.full_closure = True
            writes = optimizer.decisions.on_incident(
                ievents.IncidentEvent(incident_id="c", version=1, incident=closure), utcnow()
            )
            assert writes.decisions, "nobody equipped was heading for the closed road"
            for taken in writes.decisions:
                applier.decide(engine, now, taken.decision)
                rerouted.append(applier.local_id(taken.vehicle_id))
        if now == 960:  # a minute on, every vehicle told about the closure has been re-planned
            applied = [json.loads(line) for line in (tmp_path / "applied.jsonl").read_text().splitlines()]
            followed = {e["vehicle"] for e in applied if e["lever"] == "LEVER_INCIDENT_REROUTING"}
            assert len(followed) >= 0.8 * len(rerouted)
            for vehicle in followed & set(engine.vehicle.getIDList()):
                remaining = engine.vehicle.getRoute(vehicle)[engine.vehicle.getRouteIndex(vehicle) + 1 :]
                assert CLOSED not in remaining, f"{vehicle} still heads into the closure"
        if now % 30 == 0:
            for decision in navigation.report(engine, now, edges):
                applier.decide(engine, now, decision)
            # After every round: no facility is promised more vehicles than it has free spaces (others
            # park without guidance too, so promises a garage can no longer keep were moved).
            promised = optimizer.decisions.promised()
            for f in optimizer.decisions.facilities.values():
                free = f.capacity - f.occupied
                assert promised[f.id] <= max(0, free) + arrived(optimizer, f.id), f"{f.id}: {promised[f.id]} > {free}"
    applier.close()
    per_lever = optimizer.decisions.per_lever
    assert per_lever[dpb.Lever.Name(dpb.LEVER_PARKING_GUIDANCE)] > 20
    # Vehicles that set off towards the closure later were rerouted in later rounds.
    assert per_lever[dpb.Lever.Name(dpb.LEVER_INCIDENT_REROUTING)] > len(rerouted)
    assert applier.applied > 20
