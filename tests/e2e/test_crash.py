"""Kill a service with SIGKILL while clients write; after a restart every acknowledged write is in the
database and its event reached a durable JetStream consumer exactly once."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from almere.parking.v1 import parking_pb2 as pb
from sqlalchemy import create_engine, func, select, table, text

from apps.natsd import NatsServer
from apps.stack import free_port, wait_serving
from tests.integration.helpers import Incidents, Parking, read_stream

pytestmark = pytest.mark.e2e
WRITERS = 16
KILL_AFTER = 300  # acknowledged writes before the SIGKILL


@dataclass(frozen=True)
class Workload:
    """What one service's clients write, and how to find it again in its tables and stream."""

    service: str
    # one writer: keeps writing until the service stops answering; appends a key per acknowledged write
    writer: Callable[[grpc.aio.Channel, dict[str, str], int, list[str], asyncio.Event], Awaitable[None]]
    # key of each stored write -> (entity id, version) of the change it made
    stored_sql: str
    stream: str
    subjects: str
    # ALMERE_SERVE_PROCESSES: with more than one, the SIGKILL hits the parent of the serving
    # processes and the relay, which die with it.
    processes: int = 1


async def _until_unavailable(write: Callable[[int], Awaitable[str]], acked: list[str], enough: asyncio.Event) -> None:
    n = 0
    while True:
        n += 1
        try:
            acked.append(await write(n))
        except grpc.aio.AioRpcError:
            return
        if len(acked) >= KILL_AFTER:
            enough.set()


async def parking_writer(
    channel: grpc.aio.Channel, tokens: dict[str, str], i: int, acked: list[str], enough: asyncio.Event
) -> None:
    client = Parking(channel, tokens)
    facility_id = f"garage-{i}"
    await client.create(facility_id)

    async def write(sequence: int) -> str:
        reply = await client.report(facility_id, sequence % 90, sequence)
        assert reply.outcome == pb.REPORT_OUTCOME_ACCEPTED
        return f"{facility_id}/{sequence}"

    await _until_unavailable(write, acked, enough)


async def incident_writer(
    channel: grpc.aio.Channel, tokens: dict[str, str], i: int, acked: list[str], enough: asyncio.Event
) -> None:
    client = Incidents(channel, tokens)

    async def write(n: int) -> str:
        await client.report(request_id=f"r{i}-{n}")
        return f"r{i}-{n}"

    await _until_unavailable(write, acked, enough)


PARKING_WRITES = Workload(
    "parking",
    parking_writer,
    "SELECT facility_id || '/' || sequence, facility_id, version FROM parking_occupancy_sample",
    "PARKING",
    "almere.parking.v1.occupancy_changed.>",
)
WORKLOADS = {
    "parking": PARKING_WRITES,
    "parking-2-processes": dataclasses.replace(PARKING_WRITES, processes=2),
    "incidents": Workload(
        "incidents",
        incident_writer,
        "SELECT request_id, id, version FROM incidents_incident",
        "INCIDENTS",
        "almere.incidents.v1.incident_reported.>",
    ),
}


def service_env(
    tmp_path: Path, database_url: str, nats: NatsServer, tokens_json: str, *, service: str, **extra: str
) -> tuple[dict[str, str], str]:
    """A service process's environment (its own bus identity) on a free loopback port, and its address."""
    port = free_port("127.0.0.1")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALMERE_")}
    env.update(
        ALMERE_DATA_DIR=str(tmp_path / "data"),
        ALMERE_DATABASE_URL=database_url,
        ALMERE_NATS_URL=nats.url,
        ALMERE_NATS_NKEY_SEED_FILE=str(nats.keys[service].seed_file),
        ALMERE_TOKENS=tokens_json,
        ALMERE_PORT=str(port),
        ALMERE_LOG_LEVEL="WARNING",
        **extra,
    )
    return env, f"127.0.0.1:{port}"


def start_service(service: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "apps.cli", "serve", service], env=env, stdout=out, stderr=subprocess.STDOUT
        )


@pytest.mark.parametrize("workload", sorted(WORKLOADS))
@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
async def test_sigkill_loses_no_acknowledged_write_and_publishes_each_once(
    tmp_path: Path, nats_server: NatsServer, database_url: str, tokens: dict[str, str], tokens_json: str, workload: str
) -> None:
    w = WORKLOADS[workload]
    env, address = service_env(
        tmp_path, database_url, nats_server, tokens_json, service=w.service, ALMERE_SERVE_PROCESSES=str(w.processes)
    )
    log = tmp_path / f"{w.service}.log"
    service = start_service(w.service, env, log)
    acked: list[str] = []
    try:
        await asyncio.to_thread(wait_serving, address)
        async with grpc.aio.insecure_channel(address) as channel:
            enough = asyncio.Event()
            tasks = [asyncio.create_task(w.writer(channel, tokens, i, acked, enough)) for i in range(WRITERS)]
            await asyncio.wait_for(enough.wait(), 60)
            service.send_signal(signal.SIGKILL)
            await asyncio.wait_for(asyncio.gather(*tasks), 30)
        service.wait(10)
        acked_at_kill = len(acked)

        service = start_service(w.service, env, log)
        await asyncio.to_thread(wait_serving, address)
        engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg://", 1))
        outbox = select(func.count()).select_from(table(f"{w.service}_outbox"))
        for _ in range(100):  # the restarted relay publishes what the killed one left in the outbox
            with engine.connect() as conn:
                if conn.execute(outbox).scalar_one() == 0:
                    break
            await asyncio.sleep(0.1)
        with engine.connect() as conn:
            stored = {key: (entity, version) for key, entity, version in conn.execute(text(w.stored_sql))}
            outbox_left = conn.execute(outbox).scalar_one()
        engine.dispose()
    finally:
        service.kill()
        service.wait(10)

    assert acked_at_kill >= KILL_AFTER
    missing = [a for a in acked if a not in stored]
    assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {missing[:3]}"
    assert outbox_left == 0
    events = await read_stream(nats_server, w.subjects, "crash", stream=w.stream)
    id_field = "facility_id" if w.service == "parking" else "incident_id"
    delivered = Counter((getattr(e, id_field), e.version) for _, e in events)
    duplicates = [k for k, n in delivered.items() if n > 1]
    assert not duplicates, f"delivered more than once: {duplicates[:3]}"
    # Every committed change (acknowledged or not) was published exactly once, and nothing else.
    assert set(delivered) == set(stored.values())
    print(f"\n{w.service}: acknowledged {acked_at_kill}, stored {len(stored)}, delivered {len(events)} (each once)")


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
async def test_sigkill_of_the_optimizer_loses_and_repeats_no_decision(
    tmp_path: Path,
    nats_server: NatsServer,
    database_url: str,
    tokens: dict[str, str],
    tokens_json: str,
    almere_net: Path,
) -> None:
    """Navigation systems report cars heading into a jam; every answer holds decisions. SIGKILL the
    optimizer mid-stream: after a restart every decision a reporter received is on the bus exactly
    once, and the restarted optimizer does not decide again for the same cars."""
    from almere.optimizer.v1 import optimizer_pb2 as opb
    from almere.optimizer.v1 import optimizer_pb2_grpc

    from services.optimizer.routing import RoadGraph
    from sim.scenarios.almere_centrum import layout

    graph = RoadGraph.from_net(almere_net)
    jammed = layout.edge_id("j22", "j32")
    route = graph.route_many([layout.edge_id("ext-w", "j02")], [layout.edge_id("j52", "ext-e")], graph.free_time)[0]
    assert route and jammed in route
    env, address = service_env(
        tmp_path, database_url, nats_server, tokens_json, service="optimizer", ALMERE_NETWORK_FILE=str(almere_net)
    )
    log = tmp_path / "optimizer.log"
    auth = (("authorization", f"Bearer {tokens['sim']}"),)
    jam = [opb.EdgeTravelTime(edge_id=jammed, travel_time_seconds=1500)] * 8
    received: list[str] = []
    cars: list[opb.VehicleState] = []
    service = start_service("optimizer", env, log)
    try:
        await asyncio.to_thread(wait_serving, address)
        async with grpc.aio.insecure_channel(address) as channel:
            stub = optimizer_pb2_grpc.OptimizerServiceStub(channel)
            n = 0
            while len(received) < KILL_AFTER // 2:
                n += 1  # five new cars each round, all heading into the jam
                batch = [opb.VehicleState(vehicle_id=f"car-{n}-{k}", edge_id=route[0], route=route) for k in range(5)]
                cars = batch
                reply = await stub.ReportVehicles(
                    opb.ReportVehiclesRequest(vehicles=batch, edge_travel_times=jam, sim_time_seconds=30 * n),
                    metadata=auth,
                )
                received += [d.name for d in reply.decisions]
            service.send_signal(signal.SIGKILL)  # right after an answer: its events may not be published yet
        service.wait(10)
        service = start_service("optimizer", env, log)
        await asyncio.to_thread(wait_serving, address)
        async with grpc.aio.insecure_channel(address) as channel:
            stub = optimizer_pb2_grpc.OptimizerServiceStub(channel)
            again = await stub.ReportVehicles(
                opb.ReportVehiclesRequest(vehicles=cars, edge_travel_times=jam, sim_time_seconds=30 * (n + 1)),
                metadata=auth,
            )
        engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg://", 1))
        outbox = select(func.count()).select_from(table("optimizer_outbox"))
        for _ in range(100):  # the restarted relay publishes what the killed one left in the outbox
            with engine.connect() as conn:
                if conn.execute(outbox).scalar_one() == 0:
                    break
            await asyncio.sleep(0.1)
        engine.dispose()
    finally:
        service.kill()
        service.wait(10)

    # The last cars were answered before the kill: after it they are not answered again (their
    # routes are unchanged, the restart does not guess), but they are still congested.
    assert [d for d in again.decisions if d.route_advice.vehicle_id in {c.vehicle_id for c in cars}] == []
    events = await read_stream(nats_server, "almere.optimizer.v1.>", "crash", stream="OPTIMIZER")
    delivered = Counter(e.name for _, e in events)
    assert not [k for k, c in delivered.items() if c > 1], "a decision was published twice"
    assert set(received) <= set(delivered), "a decision a reporter received never reached the bus"
    print(f"\noptimizer: {len(received)} decisions answered before the kill, {len(delivered)} on the bus, each once")
