"""The twin's field devices really reach the services: after a run, the parking service's counts are
SUMO's parkingArea occupancy, and the police's report of the scripted collision is an active incident
on the road SUMO closed."""

from __future__ import annotations

import asyncio
import csv
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import pytest
from almere.incidents.v1 import incidents_pb2 as ipb
from almere.parking.v1 import parking_pb2 as ppb

from services.incidents import SPEC as INCIDENTS
from services.parking import SPEC as PARKING
from sim.runner import RunSpec, prepare, run
from sim.scenarios.almere_centrum.layout import FACILITIES
from tests.integration.helpers import Incidents, Parking


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_counts_and_incident_reach_the_services(
    start_service: Callable[..., Awaitable[str]], tokens: dict[str, str], tmp_path: Path
) -> None:
    spec = RunSpec("almere-centrum-incident", "none", 1, tmp_path / "sim", end_s=2100, scale=0.3)
    scenario = prepare(spec)
    parking = await start_service(PARKING)
    incidents = await start_service(INCIDENTS, network_file=scenario.network)
    services = tmp_path / "stack"
    services.mkdir()
    (services / "endpoints.json").write_text(json.dumps({"parking": parking, "incidents": incidents}))
    (services / "credentials.json").write_text(json.dumps({"sim": {"token": tokens["sim"]}}))

    run_dir = await asyncio.to_thread(run, RunSpec(**{**spec.__dict__, "services_dir": services}))

    with (run_dir / "timeseries.csv").open() as f:
        last = list(csv.DictReader(f))[-1]
    async with grpc.aio.insecure_channel(parking) as p, grpc.aio.insecure_channel(incidents) as i:
        engineer = Parking(p, tokens).as_("engineer")
        for facility in FACILITIES:
            got = await engineer.GetOccupancy(ppb.GetOccupancyRequest(facility=f"facilities/{facility.facility_id}"))
            assert got.occupancy.occupied_spaces == int(float(last[f"parked:{facility.facility_id}"])), facility
            assert got.occupancy.capacity == facility.capacity
        listed = (await Incidents(i, tokens).as_("engineer").ListIncidents(ipb.ListIncidentsRequest())).incidents
    assert len(listed) == 1
    collision = listed[0]
    assert (collision.state, collision.network_location.edge_id, list(collision.impact.closed_lanes)) == (
        ipb.INCIDENT_STATE_ACTIVE,
        "j22-j32",
        [1],
    )
    assert json.loads((run_dir / "devices.json").read_text())["occupancy_reports"] > len(FACILITIES)
