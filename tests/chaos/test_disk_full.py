"""The SQLite database's disk fills up under load: writes are refused with a status naming the full
disk, nothing half-written stays behind, and once space returns the service writes again by itself
(no restart), with every acknowledged write before and after stored and on the bus once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc

from apps.natsd import NatsServer
from tests.chaos.conftest import LaunchStack
from tests.chaos.faults import fill_disk
from tests.chaos.harness import incidents_under_load

FULL_S = 3.0
FULL_REFUSALS = {grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE}


async def test_disk_full_refuses_writes_clearly_and_recovers_without_restart(
    small_disk: Path, launch_stack: LaunchStack, nats_server: NatsServer
) -> None:
    stack = await launch_stack(services=["incidents"], database_url=f"sqlite:///{small_disk / 'incidents.db'}")
    service = stack.processes["incidents"]
    ballast = small_disk / "ballast"
    async with incidents_under_load(
        stack=stack, bus_url=nats_server.url, bus_options=nats_server.client_options("observer")
    ) as run:
        figures = await run.fault(
            "disk full (SQLite on a 16 MiB tmpfs)",
            start=lambda: asyncio.to_thread(fill_disk, ballast),
            end=ballast.unlink,
            seconds=FULL_S,
        )

    assert service.poll() is None and stack.processes["incidents"] is service, "the service restarted"
    figures.assert_clean(max_recovery_s=10)
    assert run.ledger.refused, "no write was refused on the full disk"
    unclear = [r for r in run.ledger.refused if r.code not in FULL_REFUSALS or "full" not in r.details]
    assert not unclear, f"writes refused without naming the full disk: {unclear[:5]}"
    # Refused writes left nothing behind: every stored incident is one a client was told about.
    assert figures.stored == figures.acknowledged, figures.line()
