"""`almere serve parking` with ALMERE_SERVE_PROCESSES=2: two serving processes share the port, each
connection lands on one of them, every report is stored and published once by the one relay
process, and SIGTERM stops all of them in order (exit status 0, nothing left running)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import grpc
import pytest
from almere.parking.v1 import parking_pb2 as pb

from apps.natsd import NatsServer
from apps.stack import free_port, wait_serving
from tests.integration.helpers import Parking, read_stream

CONNECTIONS = 6
REPORTS = 20


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        out = subprocess.run(["pgrep", "-P", str(todo.pop())], capture_output=True, text=True).stdout
        children = [int(p) for p in out.split()]
        found += children
        todo += children
    return found


def _still_running(pids: list[int], wait: float = 5.0) -> list[int]:
    """Those of `pids` still running after up to `wait` seconds (multiprocessing's resource tracker
    ends a moment after its parent)."""
    deadline = time.monotonic() + wait
    while (running := [p for p in pids if Path(f"/proc/{p}").exists()]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return running


def _start(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "apps.cli", "serve", "parking"], env=env)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="children die with the parent on Linux only")
async def test_two_serving_processes_store_and_publish_every_report_once(
    tmp_path: Path, nats_server: NatsServer, tokens: dict[str, str], tokens_json: str
) -> None:
    port = free_port("127.0.0.1")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALMERE_")}
    env.update(
        ALMERE_DATA_DIR=str(tmp_path / "data"),
        ALMERE_NATS_URL=nats_server.url,
        ALMERE_NATS_NKEY_SEED_FILE=str(nats_server.keys["parking"].seed_file),
        ALMERE_TOKENS=tokens_json,
        ALMERE_PORT=str(port),
        ALMERE_LOG_FILE=str(tmp_path / "parking.log"),
        ALMERE_SERVE_PROCESSES="2",
        ALMERE_GRACE_SECONDS="1",
    )
    service = await asyncio.to_thread(_start, env)
    try:
        started = time.monotonic()
        await asyncio.to_thread(wait_serving, f"127.0.0.1:{port}", 60)
        print(f"serving after {time.monotonic() - started:.1f} s")
        children = await asyncio.to_thread(_descendants, service.pid)
        # One connection each (no shared subchannel), spread by the kernel over both processes.
        channels = [
            grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)])
            for _ in range(CONNECTIONS)
        ]
        try:

            async def write(i: int, channel: grpc.aio.Channel) -> None:
                client = Parking(channel, tokens)
                await client.create(f"garage-{i}")
                for sequence in range(1, REPORTS + 1):
                    reply = await client.report(f"garage-{i}", sequence, sequence)
                    assert reply.outcome == pb.REPORT_OUTCOME_ACCEPTED

            await asyncio.gather(*(write(i, c) for i, c in enumerate(channels)))
        finally:
            for channel in channels:
                await channel.close()
        print(f"written after {time.monotonic() - started:.1f} s")
        service.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(service.wait, 30) == 0
        print(f"stopped after {time.monotonic() - started:.1f} s")
    finally:
        service.kill()
        service.wait(10)
    assert await asyncio.to_thread(_still_running, children) == []
    logs = {p.name for p in await asyncio.to_thread(lambda: list(tmp_path.glob("parking-*.log")))}
    assert logs >= {"parking-serve-0.log", "parking-serve-1.log", "parking-relay.log"}
    events = await read_stream(nats_server, "almere.parking.v1.occupancy_changed.>")
    delivered = Counter((e.facility_id, e.occupancy.sequence) for _, e in events)
    expected = {(f"garage-{i}", s) for i in range(CONNECTIONS) for s in range(1, REPORTS + 1)}
    assert set(delivered) == expected and max(delivered.values()) == 1
