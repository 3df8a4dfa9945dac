"""A network partition between a service and NATS: the link goes silent (nothing closed) while
clients keep writing; what the service acknowledged meanwhile sits in its outbox and reaches the bus,
once each, after the link heals."""

from __future__ import annotations

from urllib.parse import urlparse

import grpc
import pytest

from apps.natsd import NatsServer
from tests.chaos.conftest import LaunchStack
from tests.chaos.harness import incidents_under_load
from tests.tcp_proxy import TcpProxy

CLEAR_REFUSALS = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED}


@pytest.mark.parametrize(
    "partition_s",
    # 30 s: several times the relay's wait for JetStream's acknowledgements (5 s).
    [pytest.param(3.0, id="3s"), pytest.param(30.0, id="30s", marks=pytest.mark.chaos)],
)
async def test_partition_from_nats_loses_and_duplicates_nothing(
    launch_stack: LaunchStack, nats_server: NatsServer, partition_s: float
) -> None:
    target = urlparse(nats_server.url)
    assert target.hostname and target.port
    proxy = TcpProxy(target.hostname, target.port)
    port = await proxy.start()
    try:
        stack = await launch_stack(services=["incidents"], nats_url=f"nats://127.0.0.1:{port}")
        async with incidents_under_load(
            stack=stack, bus_url=nats_server.url, bus_options=nats_server.client_options("observer")
        ) as run:
            figures = await run.fault(
                f"partition service-NATS {partition_s:.0f} s",
                start=proxy.partition,
                end=proxy.heal,
                seconds=partition_s,
            )
    finally:
        await proxy.close()

    # The cut was real: the service kept acknowledging, and those writes were not on the bus yet.
    assert figures.during and figures.held_back, figures.line()
    figures.assert_clean(max_recovery_s=15)
    unclear = [r for r in run.ledger.refused if r.code not in CLEAR_REFUSALS or not r.details]
    assert not unclear, f"writes refused without a clear status: {unclear[:5]}"
