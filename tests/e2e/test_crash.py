"""Kill the parking service with SIGKILL while operators report; after a restart every acknowledged
report is in the database and reached a durable JetStream consumer exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import grpc
import pytest
from almere.parking.v1 import parking_pb2 as pb
from sqlalchemy import create_engine, text

from services.common.natsd import NatsServer
from services.stack import wait_serving
from tests.integration.helpers import Parking, read_stream

pytestmark = pytest.mark.e2e
REPORTERS = 16
KILL_AFTER = 300  # acknowledged reports before the SIGKILL


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_service(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "services.cli", "serve", "parking"], env=env, stdout=out, stderr=subprocess.STDOUT
        )


async def reporter(client: Parking, facility_id: str, acked: list[tuple[str, int]], enough: asyncio.Event) -> None:
    """An operator's counter: reports until the service stops answering."""
    sequence = 0
    while True:
        sequence += 1
        try:
            reply = await client.report(facility_id, sequence % 90, sequence)
        except grpc.aio.AioRpcError:
            return
        assert reply.outcome == pb.REPORT_OUTCOME_ACCEPTED
        acked.append((facility_id, sequence))
        if len(acked) >= KILL_AFTER:
            enough.set()


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
async def test_sigkill_loses_no_acknowledged_report_and_publishes_each_once(
    tmp_path: Path, nats_server: NatsServer, database_url: str, tokens: dict[str, str], tokens_json: str
) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALMERE_")}
    env.update(
        ALMERE_DATA_DIR=str(tmp_path / "data"),
        ALMERE_DATABASE_URL=database_url,
        ALMERE_NATS_URL=nats_server.url,
        ALMERE_TOKENS=tokens_json,
        ALMERE_PORT=str(port),
        ALMERE_LOG_LEVEL="WARNING",
    )
    address = f"127.0.0.1:{port}"
    service = start_service(env, tmp_path / "parking.log")
    acked: list[tuple[str, int]] = []
    try:
        await asyncio.to_thread(wait_serving, address)
        async with grpc.aio.insecure_channel(address) as channel:
            client = Parking(channel, tokens)
            facilities = [f"garage-{i}" for i in range(REPORTERS)]
            for facility_id in facilities:
                await client.create(facility_id)
            enough = asyncio.Event()
            tasks = [asyncio.create_task(reporter(client, f, acked, enough)) for f in facilities]
            await asyncio.wait_for(enough.wait(), 60)
            service.send_signal(signal.SIGKILL)
            await asyncio.wait_for(asyncio.gather(*tasks), 30)
        service.wait(10)
        acked_at_kill = len(acked)

        service = start_service(env, tmp_path / "parking.log")
        await asyncio.to_thread(wait_serving, address)
        engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg://", 1))
        for _ in range(100):  # the restarted relay publishes what the killed one left in the outbox
            with engine.connect() as conn:
                if conn.execute(text("SELECT count(*) FROM parking_outbox")).scalar_one() == 0:
                    break
            await asyncio.sleep(0.1)
        with engine.connect() as conn:
            stored = {
                (f, s): v
                for f, s, v in conn.execute(text("SELECT facility_id, sequence, version FROM parking_occupancy_sample"))
            }
            outbox_left = conn.execute(text("SELECT count(*) FROM parking_outbox")).scalar_one()
        engine.dispose()
    finally:
        service.kill()
        service.wait(10)

    assert acked_at_kill >= KILL_AFTER
    missing = [a for a in acked if a not in stored]
    assert not missing, f"{len(missing)} acknowledged reports lost, e.g. {missing[:3]}"
    assert outbox_left == 0
    events = [e for s, e in await read_stream(nats_server.url, "almere.parking.v1.occupancy_changed.>", "crash")]
    delivered = Counter((e.facility_id, e.version) for e in events)
    duplicates = {k: n for k, n in delivered.items() if n > 1}
    assert not duplicates, f"delivered more than once: {list(duplicates)[:3]}"
    # Every committed change (acknowledged or not) was published exactly once, and nothing else.
    assert set(delivered) == {(f, v) for (f, _), v in stored.items()}
    print(f"\nacknowledged {acked_at_kill}, stored {len(stored)}, delivered {len(events)} (each once)")
