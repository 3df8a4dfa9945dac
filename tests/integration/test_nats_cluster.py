"""The bus on a 3-node JetStream cluster: a service creates its streams with three replicas; when the
stream leader's node is SIGKILLed, publishes are acknowledged again within seconds (clients reconnect
to another node, a new leader is elected), a durable consumer sees every acknowledged message exactly
once, the service keeps publishing, and the node comes back and catches up."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import grpc
import nats
import nats.errors
import pytest
from nats.js.api import ConsumerConfig
from nats.js.errors import NoStreamResponseError

from apps.natsd import NatsCluster
from contract.bus import FACILITY_CREATED, OCCUPANCY_CHANGED, PARKING
from services.common.bus import MSG_ID_HEADER, Bus, connect_options
from services.common.config import Settings
from services.parking.service import SPEC as PARKING_SERVICE
from tests.integration.helpers import Parking

SUBJECT = PARKING.subject(OCCUPANCY_CHANGED, "failover-test")
# From the leader's death to the next acknowledged publish: the followers elect a new leader after a
# randomised 4-9 s without its heartbeats (nats-server's Raft), the client reconnects meanwhile.
MAX_GAP_S = 15.0


@pytest.fixture
def nats_server(nats_cluster: NatsCluster) -> NatsCluster:
    """Every fixture that takes the bus (settings, start_service) gets the cluster."""
    return nats_cluster


@pytest.fixture
def database_url(tmp_path: Path) -> Iterator[str]:
    """SQLite only: what is tested here is the bus."""
    yield f"sqlite:///{tmp_path / 'parking.db'}"


async def _publish_acknowledged(bus: Bus, msg_id: str, deadline_s: float = 20.0) -> int:
    """Publish until JetStream acknowledges (the relay's way: the same id again, which the duplicate
    window drops if the first attempt was stored after all); returns the stream sequence."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            ack = await bus.js.publish(SUBJECT, msg_id.encode(), headers={MSG_ID_HEADER: msg_id}, timeout=1)
            return ack.seq
        except (nats.errors.TimeoutError, NoStreamResponseError, nats.errors.ConnectionReconnectingError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


async def test_writes_survive_the_stream_leaders_node_and_it_catches_up(
    nats_cluster: NatsCluster,
    settings: Settings,
    start_service: Callable[..., Awaitable[str]],
    tokens: dict[str, str],
) -> None:
    parking_at = await start_service(PARKING_SERVICE, stream_replicas=3)

    def as_user(user: str) -> Settings:
        return settings.model_copy(update={"nats_nkey_seed_file": nats_cluster.keys[user].seed_file})

    reader = await Bus.connect(as_user("observer"), "observer")
    info = await reader.js.stream_info(PARKING.name)
    assert info.cluster is not None and info.cluster.leader
    leader = nats_cluster.node(info.cluster.leader)
    # The publisher connects as a service does (services.common.bus.connect_options), but to the
    # leader's node first: its connection goes down with the leader and must come back on another.
    others = [n.url for n in nats_cluster.nodes if n is not leader]
    options = connect_options(as_user("parking"), "parking") | {
        "servers": [leader.url, *others],
        "dont_randomize": True,
    }
    nc = await nats.connect(**options)
    bus = Bus(nc, nc.jetstream(timeout=5))
    try:
        assert info.config.num_replicas == 3
        placed = {info.cluster.leader, *(r.name for r in info.cluster.replicas or [])}
        assert placed == {n.name for n in nats_cluster.nodes}, "a replica of the stream on every node"
        assert nc.connected_url is not None and nc.connected_url.port == leader.port
        consumer = await reader.js.pull_subscribe(
            SUBJECT, durable="failover", stream=PARKING.name, config=ConsumerConfig(ack_wait=30)
        )

        acknowledged: dict[str, int] = {}
        for i in range(50):
            acknowledged[f"m-{i}"] = await _publish_acknowledged(bus, f"m-{i}")
        seen: list[tuple[str, int]] = []

        async def consume(count: int) -> None:
            deadline = time.monotonic() + 20
            while len(seen) < count and time.monotonic() < deadline:
                try:
                    batch = await consumer.fetch(count - len(seen), timeout=1)
                except (nats.errors.TimeoutError, nats.errors.ConnectionReconnectingError):
                    continue
                for msg in batch:
                    seen.append((msg.headers[MSG_ID_HEADER] if msg.headers else "", msg.metadata.sequence.stream))
                    await msg.ack_sync()

        await consume(25)

        await asyncio.to_thread(nats_cluster.kill, leader.name)
        gaps = []
        last = time.monotonic()
        for i in range(50, 100):
            acknowledged[f"m-{i}"] = await _publish_acknowledged(bus, f"m-{i}")
            gaps.append(time.monotonic() - last)
            last = time.monotonic()
        assert max(gaps) < MAX_GAP_S, f"no acknowledged publish for {max(gaps):.1f} s after the leader died"
        after = await bus.js.stream_info(PARKING.name)
        assert after.cluster is not None and after.cluster.leader not in (None, leader.name)
        assert nc.connected_url is not None and nc.connected_url.port != leader.port

        # The service, whose connection may have been to the dead node, still writes and publishes.
        async with grpc.aio.insecure_channel(parking_at) as channel:
            await Parking(channel, tokens).create("garage-after-failover", capacity=10)
        facility_subject = PARKING.subject(FACILITY_CREATED, "garage-after-failover")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            state = await bus.js.stream_info(PARKING.name, subjects_filter=facility_subject)
            if state.state.subjects:
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("the parking service's event did not reach the stream after the failover")

        await consume(100)
        # Every acknowledged message once, at the sequence its acknowledgement named.
        assert sorted(seen, key=lambda s: s[1]) == sorted(acknowledged.items(), key=lambda s: s[1])
        assert len({msg_id for msg_id, _ in seen}) == 100

        await asyncio.to_thread(nats_cluster.restart, leader.name)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            cluster = (await bus.js.stream_info(PARKING.name)).cluster
            back = [r for r in (cluster.replicas or []) if r.name == leader.name] if cluster else []
            if back and back[0].current and not back[0].lag:
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail(f"{leader.name} did not catch up after its restart")
        print(f"longest wait for an acknowledgement across the failover: {max(gaps):.2f} s")
    finally:
        await reader.close()
        await bus.close()
