"""One node of a 3-node JetStream cluster SIGKILLed under load, the one leading the stream: the
service keeps acknowledging writes (its outbox holds their events), the followers elect a new stream
leader, the service's relay and the witness reconnect to a surviving node, and every acknowledged
write reaches a durable consumer once; the node is then restarted and catches up."""

from __future__ import annotations

import asyncio
import time

import pytest

from apps.natsd import NatsCluster
from tests.chaos.conftest import LaunchStack
from tests.chaos.faults import stream_placement
from tests.chaos.harness import incidents_under_load

# nats-server elects a new stream leader after a randomised 4-9 s without the old one's heartbeats.
MAX_RECOVERY_S = 15.0


@pytest.fixture
def nats_server(nats_cluster: NatsCluster) -> NatsCluster:
    """The stack and the witness on the cluster (launch_stack takes the bus from here)."""
    return nats_cluster


@pytest.mark.chaos
async def test_killing_the_stream_leaders_nats_node_loses_and_duplicates_nothing(
    launch_stack: LaunchStack, nats_cluster: NatsCluster
) -> None:
    stack = await launch_stack(services=["incidents"])
    observer = nats_cluster.client_options("observer")
    async with incidents_under_load(stack=stack, bus_url=nats_cluster.url, bus_options=observer) as run:
        leader, placed = await stream_placement(nats_cluster.url, observer, "INCIDENTS")
        assert placed == {n.name for n in nats_cluster.nodes}, "a replica of the stream on every node"
        killed: list[float] = []

        async def kill() -> None:
            await asyncio.to_thread(nats_cluster.kill, leader)
            killed.append(time.monotonic())

        figures = await run.fault(
            f"SIGKILL of NATS node {leader} (stream leader of 3)",
            start=kill,
            end=lambda: None,  # a crash has no end of ours: the cluster mends itself
            seconds=0,
            after=lambda: asyncio.to_thread(nats_cluster.restart, leader),
        )
        new_leader, placed = await stream_placement(nats_cluster.url, observer, "INCIDENTS")

    assert new_leader != leader and leader in placed, f"leader {new_leader}, replicas on {placed}"
    # The service kept acknowledging while the stream had no leader: those events waited in its outbox.
    electing = run.ledger.names(after=killed[0], before=killed[0] + figures.recovery_s)
    print(f"acknowledged while the stream had no leader: {len(electing)}")
    assert electing, figures.line()
    figures.assert_clean(max_recovery_s=MAX_RECOVERY_S)
    assert not run.ledger.refused, f"writes refused while the bus failed over: {run.ledger.refused[:5]}"
