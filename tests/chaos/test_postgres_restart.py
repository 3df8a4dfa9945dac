"""PostgreSQL goes down hard (every server process quits at once, as in a crash) under load and comes
back: writes meanwhile are refused UNAVAILABLE, the service reconnects by itself (no restart), and
nothing acknowledged is lost or delivered twice."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from almere.incidents.v1 import incidents_pb2 as ipb

from apps.natsd import NatsServer
from tests.chaos.conftest import LaunchStack
from tests.chaos.faults import Postgres
from tests.chaos.harness import incidents_under_load

DOWN_S = 3.0


@pytest.mark.chaos
async def test_postgres_crash_and_restart_is_survived_without_a_restart(
    postgres: Postgres, launch_stack: LaunchStack, nats_server: NatsServer
) -> None:
    stack = await launch_stack(services=["incidents"], database_url=postgres.url)
    service = stack.processes["incidents"]
    async with incidents_under_load(
        stack=stack, bus_url=nats_server.url, bus_options=nats_server.client_options("observer")
    ) as run:
        reads: list[grpc.StatusCode] = []

        async def crash() -> None:
            await asyncio.to_thread(postgres.stop, "immediate")
            try:  # a read meanwhile says so too
                await run.client.as_("police").ListIncidents(ipb.ListIncidentsRequest(page_size=1), timeout=20)
            except grpc.aio.AioRpcError as err:
                reads.append(err.code())

        figures = await run.fault(
            f"PostgreSQL crash + restart ({DOWN_S:.0f} s down)",
            start=crash,
            end=lambda: asyncio.to_thread(postgres.start),
            seconds=DOWN_S,
        )

    assert service.poll() is None and stack.processes["incidents"] is service, "the service restarted"
    figures.assert_clean(max_recovery_s=15)
    assert run.ledger.refused, "no write was refused while PostgreSQL was down"
    assert reads == [grpc.StatusCode.UNAVAILABLE]
    unclear = [r for r in run.ledger.refused if r.code != grpc.StatusCode.UNAVAILABLE or "database" not in r.details]
    assert not unclear, f"writes refused without saying the database is unavailable: {unclear[:5]}"
