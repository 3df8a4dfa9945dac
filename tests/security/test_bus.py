"""The bus admits only its users, each within its subject permissions, and carries no restricted field."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import nats
import pytest
from almere.incidents.v1 import incidents_pb2 as pb
from nats.aio.client import Client

from apps.natsd import NatsServer
from contract.bus import DEFAULT_LIMITS, DETECTORS, INCIDENTS, Stream, ensure_stream
from contract.bus_access import USERS
from tests.integration.helpers import Incidents, read_stream

SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the bus is the subject here


class Violations:
    """The permission errors nats-server sent a connection (asynchronously, as -ERR)."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self._arrived = asyncio.Event()

        async def record(exc: Exception) -> None:  # nats-py takes coroutine functions only
            self.errors.append(str(exc).lower())
            self._arrived.set()

        self.record = record

    async def wait_for(self, subject: str) -> None:
        async def seen() -> None:
            while not any("permissions violation" in e and subject.lower() in e for e in self.errors):
                self._arrived.clear()
                await self._arrived.wait()

        await asyncio.wait_for(seen(), 5)


async def connect(server: NatsServer, user: str, violations: Violations) -> Client:
    return await nats.connect(server.url, error_cb=violations.record, **server.client_options(user))


async def stored(server: NatsServer, stream: str) -> int:
    nc = await nats.connect(server.url, **server.client_options("observer"))
    try:
        return int((await nc.jetstream().stream_info(stream)).state.messages)
    finally:
        await nc.close()


@pytest.fixture
async def police_action(incidents: str, tokens: dict[str, str]) -> AsyncIterator[tuple[Incidents, pb.Incident]]:
    """A police action with notes, reported by the police through the incident service."""
    async with grpc.aio.insecure_channel(incidents) as channel:
        client = Incidents(channel, tokens)
        reported = await client.report(type=pb.INCIDENT_TYPE_POLICE_ACTION, notes="suspect in a grey van")
        yield client, reported


async def test_an_anonymous_client_cannot_connect(nats_server: NatsServer) -> None:
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await nats.connect(nats_server.url, allow_reconnect=False, max_reconnect_attempts=0)


async def test_a_wrong_key_cannot_connect(nats_server: NatsServer, tmp_path_factory: pytest.TempPathFactory) -> None:
    from apps.natsd import issue_bus_keys

    stranger = issue_bus_keys(tmp_path_factory.mktemp("stranger"), ["parking"])["parking"]
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await nats.connect(
            nats_server.url, nkeys_seed=str(stranger.seed_file), allow_reconnect=False, max_reconnect_attempts=0
        )


@SQLITE
async def test_the_twin_cannot_forge_an_incident_nor_read_the_stream(
    nats_server: NatsServer, police_action: tuple[Incidents, pb.Incident]
) -> None:
    before = await stored(nats_server, INCIDENTS.name)
    violations = Violations()
    twin = await connect(nats_server, "twin", violations)
    try:
        forged = INCIDENTS.subject("incident_reported", "forged")
        await twin.publish(forged, b"\x0a\x06forged")
        await violations.wait_for(forged)
        await twin.subscribe(INCIDENTS.subjects)
        await violations.wait_for(INCIDENTS.subjects)
        with pytest.raises(nats.errors.TimeoutError):  # the JetStream API call is refused: no answer
            await twin.jetstream(timeout=1).pull_subscribe(INCIDENTS.subjects, durable="twin-peek", stream="INCIDENTS")
    finally:
        await twin.close()
    assert await stored(nats_server, INCIDENTS.name) == before


async def test_the_twin_publishes_measurements_and_nothing_else(nats_server: NatsServer) -> None:
    violations = Violations()
    twin = await connect(nats_server, "twin", violations)
    try:
        await ensure_stream(twin.jetstream(), DETECTORS.config(DEFAULT_LIMITS), update=False)
        await twin.publish(DETECTORS.subject("measurement", "loop-1"), b"")
        await twin.flush()
        await twin.publish("almere.signals.v1.plan_activated.stadhuisplein", b"")
        await violations.wait_for("almere.signals.v1.plan_activated.stadhuisplein")
    finally:
        await twin.close()
    assert await stored(nats_server, DETECTORS.name) == 1


READERS = [(user.name, stream) for user in USERS.values() for stream in user.consumes]


@pytest.mark.parametrize(("user", "stream"), READERS, ids=[f"{u}-{s.name}" for u, s in READERS])
async def test_every_reader_follows_its_streams_in_both_consumer_kinds(
    nats_server: NatsServer, user: str, stream: Stream
) -> None:
    """An ordered consumer (the twin's replay of the plans in force) and a durable one (a service's
    feed) are created through different JetStream API subjects; a missing grant only shows as a
    timeout when the reader starts."""
    reader = await connect(nats_server, user, Violations())
    try:
        js = reader.jetstream()
        await ensure_stream(js, stream.config(DEFAULT_LIMITS), update=False)
        # A work queue takes only consumers that acknowledge (its jobs are pulled by durables).
        if not stream.work_queue:
            ordered = await js.subscribe(stream.subjects, stream=stream.name, ordered_consumer=True)
            await ordered.unsubscribe()
        durable = await js.pull_subscribe(stream.subjects, durable=f"probe-{user}", stream=stream.name)
        await durable.unsubscribe()
    finally:
        await reader.close()


async def test_a_service_cannot_read_another_users_replies(nats_server: NatsServer) -> None:
    """JetStream delivers a consumer's messages to its inbox: another user listening there would read
    the optimizer's INCIDENTS deliveries."""
    violations = Violations()
    parking = await connect(nats_server, "parking", violations)
    try:
        await parking.subscribe("_INBOX_optimizer.>")
        await violations.wait_for("_inbox_optimizer.>")
        await parking.subscribe("_INBOX.>")
        await violations.wait_for("_inbox.>")
    finally:
        await parking.close()


@SQLITE
async def test_the_observer_reads_but_cannot_publish(nats_server: NatsServer, parking: str) -> None:
    violations = Violations()
    observer = await connect(nats_server, "observer", violations)
    try:
        await observer.publish("almere.parking.v1.occupancy_changed.garage-a", b"")
        await violations.wait_for("almere.parking.v1.occupancy_changed.garage-a")
    finally:
        await observer.close()
    assert await stored(nats_server, "PARKING") == 0


@SQLITE
async def test_restricted_fields_never_travel_on_the_bus(
    nats_server: NatsServer, police_action: tuple[Incidents, pb.Incident]
) -> None:
    client, reported = police_action
    watch = client.as_("police").WatchIncidents(pb.WatchIncidentsRequest())
    engineer_watch = client.as_("engineer").WatchIncidents(pb.WatchIncidentsRequest())
    for w in (watch, engineer_watch):
        assert (await asyncio.wait_for(w.read(), 5)).snapshot
    await client.as_("police").TransitionIncident(
        pb.TransitionIncidentRequest(name=reported.name, state=pb.INCIDENT_STATE_ACTIVE, reason="unit on site")
    )
    change = await asyncio.wait_for(watch.read(), 5)
    engineer_change = await asyncio.wait_for(engineer_watch.read(), 5)
    for w in (watch, engineer_watch):
        w.cancel()
    # The police read the notes over gRPC, from the store; engineers do not see a police action's notes.
    assert (change.snapshot, change.incident.notes, change.incident.reporter) == (
        False,
        "suspect in a grey van",
        "police",
    )
    assert change.incident.state == pb.INCIDENT_STATE_ACTIVE
    assert engineer_change.incident.notes == "" and engineer_change.incident.state == pb.INCIDENT_STATE_ACTIVE
    events = await read_stream(nats_server, INCIDENTS.subjects, stream=INCIDENTS.name)
    assert len(events) == 2
    for _, event in events:
        assert event.incident.name == reported.name
        assert (event.incident.notes, event.incident.reporter) == ("", "")
