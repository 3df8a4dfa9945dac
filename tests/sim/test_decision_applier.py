"""The twin applying an incident reroute that arrives after the vehicle drove past where the optimizer
last saw it: planned from where it is, around the incident, instead of dropped; and a report round's
decisions arriving early over the bus held until the round's answer is due."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from almere.optimizer.v1 import decisions_pb2

from sim.decision_applier import DecisionApplier
from sim.runner import RunSpec, prepare
from tests.sim import start_libsumo

SUBJECT = "almere.optimizer.v1.route_advice."


def _advice(name: str, vehicle: str, incident: str) -> bytes:
    """Route advice computed from an edge the vehicle has left (not on its route any more)."""
    return decisions_pb2.Decision(
        name=name,
        lever=decisions_pb2.LEVER_INCIDENT_REROUTING,
        route_advice=decisions_pb2.RouteAdvice(vehicle_id=vehicle, edges=["behind-it", incident]),
        trigger={"incident": "incidents/i-1", "edge": incident, "edge_seconds": "3600"},
    ).SerializeToString()


def _through_vehicle(libsumo: Any) -> tuple[str, list[str]]:
    """A through vehicle off any junction with at least four roads still ahead."""
    while libsumo.simulation.getTime() < 900:
        libsumo.simulationStep()
        for v in libsumo.vehicle.getIDList():
            ahead = libsumo.vehicle.getRoute(v)[libsumo.vehicle.getRouteIndex(v) :]
            if v.startswith("through") and not libsumo.vehicle.getLaneID(v).startswith(":") and len(ahead) >= 4:
                return v, list(ahead)
    raise AssertionError("no through vehicle with four roads ahead")


def test_a_late_incident_reroute_is_planned_from_where_the_vehicle_is(tmp_path: Path) -> None:
    scenario = prepare(RunSpec(scenario="almere-centrum", mode="sumo", seed=1, out_root=tmp_path, end_s=900, scale=0.5))
    libsumo = start_libsumo(scenario.config, scenario.parking)
    applier = DecisionApplier(tmp_path / "applied.jsonl", plans=False)
    try:
        vehicle, ahead = _through_vehicle(libsumo)
        incident = ahead[2]
        applier.apply(libsumo, 0, subject=SUBJECT + vehicle, payload=_advice("decisions/1", vehicle, incident))
        now_ahead = libsumo.vehicle.getRoute(vehicle)[libsumo.vehicle.getRouteIndex(vehicle) :]
        # Around the incident, and the incident's cost was only for this plan.
        assert incident not in now_ahead and now_ahead[-1] == ahead[-1]
        assert libsumo.vehicle.getAdaptedTraveltime(vehicle, libsumo.simulation.getTime(), incident) < 0
        # An incident no longer ahead of the vehicle: nothing to avoid, the advice is dropped.
        elsewhere = next(e for e in libsumo.edge.getIDList() if not e.startswith(":") and e not in now_ahead)
        applier.apply(libsumo, 0, subject=SUBJECT + vehicle, payload=_advice("decisions/2", vehicle, elsewhere))
    finally:
        libsumo.close()
        applier.close()
    log = [json.loads(line) for line in (tmp_path / "applied.jsonl").read_text().splitlines()]
    assert [(e["vehicle"], e["trigger"]["edge"]) for e in log] == [(vehicle, incident)]
    assert applier.skipped == 1


def test_a_rounds_decision_from_the_bus_waits_until_the_round_is_due(tmp_path: Path) -> None:
    """The runner applies a report round's answer `latency_s` after the report; a copy of one of its
    decisions that the bus brings sooner waits for that moment (when a car is told must not depend on
    how fast the bus was), while an incident's reroute, decided on the police's report, goes at once."""
    scenario = prepare(RunSpec(scenario="almere-centrum", mode="sumo", seed=1, out_root=tmp_path, end_s=900, scale=0.5))
    libsumo = start_libsumo(scenario.config, scenario.parking)
    applier = DecisionApplier(tmp_path / "applied.jsonl", plans=False)
    applier.latency_s = 2
    try:
        vehicle, ahead = _through_vehicle(libsumo)
        reported = libsumo.simulation.getTime()
        detour = decisions_pb2.Decision(
            name="decisions/round",
            lever=decisions_pb2.LEVER_CONGESTION_REROUTING,
            route_advice=decisions_pb2.RouteAdvice(vehicle_id=vehicle),  # no edges: SUMO re-plans it
            sim_time_seconds=reported,
        )
        applier.apply(libsumo, reported + 1, subject=SUBJECT + vehicle, payload=detour.SerializeToString())
        applier.apply(
            libsumo, reported + 1, subject=SUBJECT + vehicle, payload=_advice("decisions/i", vehicle, ahead[2])
        )
        assert [json.loads(line)["lever"] for line in (tmp_path / "applied.jsonl").read_text().splitlines()] == [
            "LEVER_INCIDENT_REROUTING"
        ]
        libsumo.simulationStep()
        applier.retry(libsumo, reported + 1)
        applier.retry(libsumo, reported + 2)
        applier.decide(libsumo, reported + 2, detour)  # the round's own answer: applied once already
    finally:
        libsumo.close()
        applier.close()
    log = [json.loads(line) for line in (tmp_path / "applied.jsonl").read_text().splitlines()]
    assert [(e["lever"], e["sim_s"]) for e in log] == [
        ("LEVER_INCIDENT_REROUTING", reported + 1),
        ("LEVER_CONGESTION_REROUTING", reported + 2),
    ]
