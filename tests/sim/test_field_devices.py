"""The twin's field devices really reach the services: after a run, the parking service's counts are
SUMO's parkingArea occupancy, the police's report of the scripted collision is an incident on the road
SUMO closed (active, then cleared when the run ends), and the plan an engineer activated reached
SUMO's traffic light."""

from __future__ import annotations

import asyncio
import csv
import json
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import pytest
from almere.incidents.v1 import incidents_pb2 as ipb
from almere.parking.v1 import parking_pb2 as ppb
from almere.signals.v1 import signals_pb2 as spb

from apps.natsd import NatsServer
from services.common.auth import token_digest
from services.incidents.service import SPEC as INCIDENTS
from services.parking.service import SPEC as PARKING
from services.signals.service import SPEC as SIGNALS
from sim.devices import FieldDevices
from sim.runner import RunSpec, prepare, run
from sim.scenarios.almere_centrum.layout import FACILITIES
from tests.integration.helpers import Incidents, Parking, Signals, read_stream


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_counts_incident_and_signal_plans_flow_between_twin_and_services(
    start_service: Callable[..., Awaitable[str]],
    tokens: dict[str, str],
    tokens_json: str,
    tmp_path: Path,
    nats_server: NatsServer,
) -> None:
    spec = RunSpec(
        scenario="almere-centrum-incident", mode="none", seed=1, out_root=tmp_path / "sim", end_s=2100, scale=0.3
    )
    scenario = prepare(spec)
    # Each garage's counter reports with its own operator's token; the twin registers them as `sim`.
    operators = {f.operator_id for f in FACILITIES}
    operator_tokens = {op: f"token-{op}-{uuid.uuid4().hex}" for op in operators}
    callers = json.loads(tokens_json)["tokens"] + [
        {"caller": f"counter-{op}", "role": f"operator:{op}", "sha256": token_digest(t)}
        for op, t in operator_tokens.items()
    ]
    parking = await start_service(PARKING, tokens=json.dumps({"tokens": callers}))
    incidents = await start_service(INCIDENTS, network_file=scenario.network)
    signals = await start_service(SIGNALS, network_file=scenario.network)
    async with grpc.aio.insecure_channel(signals) as s:
        engineer = Signals(s, tokens).as_("engineer")
        await engineer.ImportNetwork(spb.ImportNetworkRequest())
        current = (await engineer.GetPlan(spb.GetPlanRequest(name="intersections/j22/plans/1"))).plan
        retimed = spb.Plan(type=current.type, phases=current.phases, reason="longer greens")
        for phase in retimed.phases:
            if "G" in phase.state:
                phase.duration += 10
        plan = (await engineer.CreatePlan(spb.CreatePlanRequest(parent="intersections/j22", plan=retimed))).plan
        await engineer.ActivatePlan(spb.ActivatePlanRequest(name=plan.name))
    services = tmp_path / "stack"
    services.mkdir()
    keys = str(nats_server.keys["twin"].seed_file.parent)
    endpoints = {"parking": parking, "incidents": incidents, "nats": nats_server.url, "nats-keys": keys}
    (services / "endpoints.json").write_text(json.dumps(endpoints))
    credentials = {"sim": {"token": tokens["sim"]}, "engineer": {"token": tokens["engineer"]}} | {
        f"operator-{op}": {"token": t} for op, t in operator_tokens.items()
    }
    (services / "credentials.json").write_text(json.dumps(credentials))

    run_dir = await asyncio.to_thread(run, RunSpec(**{**spec.__dict__, "services_dir": services}))

    with (run_dir / "timeseries.csv").open() as f:
        last = list(csv.DictReader(f))[-1]
    async with grpc.aio.insecure_channel(parking) as p, grpc.aio.insecure_channel(incidents) as i:
        engineer = Parking(p, tokens).as_("engineer")
        for facility in FACILITIES:
            got = await engineer.GetOccupancy(ppb.GetOccupancyRequest(facility=f"facilities/{facility.facility_id}"))
            assert got.occupancy.occupied_spaces == int(float(last[f"parked:{facility.facility_id}"])), facility
            assert got.occupancy.capacity == facility.capacity
        police = Incidents(i, tokens).as_("engineer")
        listed = (await police.ListIncidents(ipb.ListIncidentsRequest())).incidents
        assert len(listed) == 1
        collision = listed[0]
        history = (await police.ListIncidentHistory(ipb.ListIncidentHistoryRequest(name=collision.name))).entries
    assert (collision.network_location.edge_id, list(collision.impact.closed_lanes)) == ("j22-j32", [1])
    # Reported at 07:30, active while the run lasted, cleared when the twin's morning ended.
    assert [e.to_state for e in history] == [
        ipb.INCIDENT_STATE_REPORTED,
        ipb.INCIDENT_STATE_ACTIVE,
        ipb.INCIDENT_STATE_CLEARED,
    ]
    assert json.loads((run_dir / "devices.json").read_text())["occupancy_reports"] > len(FACILITIES)
    applied = [json.loads(line) for line in (run_dir / "applied.jsonl").read_text().splitlines()]
    by_light = {a["tls"]: a["plan_version"] for a in applied if a["event"] == "plan_activated"}
    assert by_light["j22"] == 2 and len(by_light) == 22  # the retimed plan, and every other light's plan 1
    assert all(a["sim_s"] == 0 for a in applied)  # in force from the first step
    measurements = await read_stream(nats_server, "almere.detectors.v1.measurement.>", stream="DETECTORS")
    assert len(measurements) >= 60 * (2100 // 60 - 1)  # every loop, every minute
    stadsdreef = [m for _, m in measurements if m.edge_id == "j22-j32"]
    assert stadsdreef and sum(m.vehicle_count for m in stadsdreef) > 0


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_only_registering_a_missing_facility_needs_an_engineer(
    start_service: Callable[..., Awaitable[str]], tokens: dict[str, str], tmp_path: Path
) -> None:
    """The twin's devices act as `sim` and the operators; an engineer's token is used, and needed,
    only for facilities the parking service does not have yet."""
    parking = await start_service(PARKING)
    garage = FACILITIES[0]
    (tmp_path / "endpoints.json").write_text(json.dumps({"parking": parking, "incidents": parking}))
    devices_as = {
        "sim": {"token": tokens["sim"]},
        f"operator-{garage.operator_id}": {"token": tokens["operator"]},  # its counter; not used here
    }
    location = {garage.facility_id: (52.37, 5.22)}

    def register(credentials: dict[str, dict[str, str]]) -> None:
        (tmp_path / "credentials.json").write_text(json.dumps(credentials))
        devices = FieldDevices(tmp_path, run_id="r")
        try:
            devices.register([garage], location)
        finally:
            devices.close()

    with pytest.raises(KeyError, match="needs an 'engineer'"):
        await asyncio.to_thread(register, devices_as)
    await asyncio.to_thread(register, {**devices_as, "engineer": {"token": tokens["engineer"]}})
    await asyncio.to_thread(register, devices_as)  # registered: no engineer needed
    async with grpc.aio.insecure_channel(parking) as channel:
        found = (
            await Parking(channel, tokens)
            .as_("sim")
            .GetFacility(ppb.GetFacilityRequest(name=f"facilities/{garage.facility_id}"))
        )
    assert found.facility.operator_id == garage.operator_id
