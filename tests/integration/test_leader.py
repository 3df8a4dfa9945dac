"""Replicas of one service on one database (a SQLite file, PostgreSQL): exactly one leads the
schedulers and the relay, another takes over within seconds when it stops or is killed, a leader
whose lock connection breaks steps down, and every replica serves reads and writes. The optimizer's
replicas each see every event."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import nats
import pytest
from almere.incidents.v1 import incidents_pb2 as pb
from almere.optimizer.v1 import optimizer_pb2 as opb
from almere.optimizer.v1 import optimizer_pb2_grpc
from google.protobuf.field_mask_pb2 import FieldMask
from sqlalchemy import create_engine, make_url, text
from sqlmodel import Session

from apps.natsd import NatsServer
from services.common.config import Settings
from services.common.db import make_engine
from services.common.leader import RELAY, SCHEDULERS, Leadership, claims_for, lock_key
from services.common.runtime import Service, ServiceSpec
from tests.integration.helpers import Client, Incidents, Parking, read_stream, ts, wait_for_last_message
from tests.tcp_proxy import TcpProxy

POLL_S = 0.2
ROOT = Path(__file__).resolve().parents[2]


async def _until(condition: Callable[[], bool], what: str, within: float = 10.0) -> float:
    """Seconds until `condition()` holds, polled; fails after `within` seconds."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > within:
            pytest.fail(f"no {what} within {within} s")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


def _leadership(database_url: str, roles: Sequence[str] = (SCHEDULERS,)) -> Leadership:
    engine = make_engine(database_url)
    claims = claims_for(engine, service="incidents", lease_s=5 * POLL_S, poll_s=POLL_S)
    return Leadership(claims, service="incidents", roles=roles, poll_s=POLL_S)


def _leaders(replicas: Sequence[Leadership | Service], role: str = SCHEDULERS) -> list[int]:
    return [i for i, r in enumerate(replicas) if r.leads(role)]


# --- the election alone -----------------------------------------------------------------------------


async def test_one_of_three_leads_each_role_and_another_takes_over_when_it_stops(database_url: str) -> None:
    replicas = [_leadership(database_url, (SCHEDULERS, RELAY)) for _ in range(3)]
    for replica in replicas:
        await replica.start()
    try:
        assert len(_leaders(replicas, SCHEDULERS)) == 1 and len(_leaders(replicas, RELAY)) == 1
        await asyncio.sleep(3 * POLL_S)  # a few rounds: still one each
        [leader] = _leaders(replicas, SCHEDULERS)
        assert len(_leaders(replicas, RELAY)) == 1
        stopped = replicas.pop(leader)
        await stopped.stop()
        rest = replicas
        took = await _until(lambda: len(_leaders(rest)) == 1, "new leader", within=5)
        print(f"\nfail-over after a graceful stop: {took:.2f} s (poll {POLL_S} s)")
        assert took < 3 * POLL_S + 1
        await asyncio.sleep(3 * POLL_S)
        assert len(_leaders(rest)) == 1 and not stopped.leads(SCHEDULERS)
    finally:
        for replica in replicas:
            await replica.stop()


CHILD = """
import asyncio, sys
from services.common.db import make_engine
from services.common.leader import SCHEDULERS, Leadership, claims_for

async def main() -> None:
    claims = claims_for(make_engine(sys.argv[1]), service="incidents", lease_s=1.0, poll_s=0.2)
    leadership = Leadership(claims, service="incidents", roles=[SCHEDULERS], poll_s=0.2)
    await leadership.start()
    print("leads" if leadership.leads(SCHEDULERS) else "follows", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_a_killed_leader_is_replaced_within_seconds(database_url: str) -> None:
    """SIGKILL: no goodbye. PostgreSQL frees the session's lock as the socket closes; the kernel
    frees the flock with the process."""
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, database_url, cwd=ROOT, stdout=asyncio.subprocess.PIPE
    )
    follower = _leadership(database_url)
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), 30)
        assert line.strip() == b"leads"
        await follower.start()
        await asyncio.sleep(3 * POLL_S)
        assert not follower.leads(SCHEDULERS)
        child.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        took = await _until(lambda: follower.leads(SCHEDULERS), "take-over after SIGKILL", within=10)
        print(f"\nfail-over after SIGKILL of the leader: {took:.2f} s (poll {POLL_S} s)")
        assert time.monotonic() - killed < 3
    finally:
        if child.returncode is None:
            child.kill()
        await child.wait()
        await follower.stop()


async def test_a_leader_whose_lock_connection_breaks_steps_down(database_url: str) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("a flock has no connection to lose")
    leader = _leadership(database_url)
    await leader.start()
    admin = create_engine(database_url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        assert leader.leads(SCHEDULERS)
        with admin.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT")
            key = lock_key(conn.execute(text("SELECT current_schema()")).scalar_one(), "incidents", SCHEDULERS)
            unsigned = key & 0xFFFF_FFFF_FFFF_FFFF
            pid = conn.execute(
                text(
                    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
                    " AND classid::bigint = :high AND objid::bigint = :low AND objsubid = 1"
                ),
                {"high": unsigned >> 32, "low": unsigned & 0xFFFF_FFFF},
            ).scalar_one()
            # The leader's session dies (a failover of the database, an administrator); this session
            # takes the lock at once, so the old leader finds it gone when it reconnects.
            conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
            took = await _until(lambda: not leader.leads(SCHEDULERS), "step-down", within=5)
            print(f"\nstep-down after the lock connection broke: {took:.2f} s")
            await asyncio.sleep(3 * POLL_S)
            assert not leader.leads(SCHEDULERS)  # it reconnected, and follows
            conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
            await _until(lambda: leader.leads(SCHEDULERS), "leadership back", within=5)
    finally:
        await leader.stop()
        admin.dispose()


async def test_a_partitioned_leader_steps_down_before_another_takes_over(database_url: str) -> None:
    """The leader's link to PostgreSQL goes silent: it stops leading when its check does not come
    back within a poll; the server ends its silent session after the lease, and only then may a
    follower take the lock."""
    if not database_url.startswith("postgresql"):
        pytest.skip("a flock has no link to lose")
    url = make_url(database_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    through_proxy = url.set(port=await proxy.start()).render_as_string(hide_password=False)
    leader, follower = _leadership(through_proxy), _leadership(database_url)
    await leader.start()
    await follower.start()
    try:
        assert leader.leads(SCHEDULERS) and not follower.leads(SCHEDULERS)
        proxy.partition()
        cut = time.monotonic()
        stepped_down = await _until(lambda: not leader.leads(SCHEDULERS), "step-down", within=5)
        took_over = await _until(lambda: follower.leads(SCHEDULERS), "take-over", within=10) + stepped_down
        print(f"\npartition: leader stepped down after {stepped_down:.2f} s, follower led after {took_over:.2f} s")
        assert stepped_down < 3 * POLL_S + 0.3 and time.monotonic() - cut < 5 * POLL_S + 2
        assert stepped_down < took_over  # never two leaders: the lease outlasts the step-down
    finally:
        await proxy.close()
        await leader.stop()
        await follower.stop()


# --- replicas of a service --------------------------------------------------------------------------


class Replicas:
    """Replicas of services in-process on one database and bus, on free loopback ports."""

    def __init__(self, settings: Settings, nats_server: NatsServer) -> None:
        self._settings = settings
        self._nats = nats_server
        self.running: list[Service] = []

    async def start(self, spec: ServiceSpec, **overrides: object) -> tuple[Service, str]:
        own = {
            "nats_nkey_seed_file": self._nats.keys[spec.name].seed_file,
            "leader_poll_seconds": POLL_S,
            "leader_lease_seconds": 5 * POLL_S,
            "scheduler_poll_seconds": POLL_S,
        }
        service = Service(spec, self._settings.model_copy(update={**own, **overrides}))
        port = await service.start(port=0)
        self.running.append(service)
        return service, f"127.0.0.1:{port}"

    async def stop(self, service: Service) -> None:
        self.running.remove(service)
        await service.stop()


@pytest.fixture
async def replicas(settings: Settings, nats_server: NatsServer) -> AsyncIterator[Replicas]:
    running = Replicas(settings, nats_server)
    yield running
    for service in reversed(running.running):
        await service.stop()


def _festival(starts_in_s: float) -> pb.PlannedEvent:
    now = datetime.now(UTC)
    return pb.PlannedEvent(
        display_name="Festival",
        closures=[
            pb.ScheduledClosure(
                title="Stadhuisstraat closed",
                network_location=pb.NetworkLocation(edge_id="spoke-w-in"),
                impact=pb.Impact(
                    full_closure=True,
                    expected_start_time=ts(now + timedelta(seconds=starts_in_s)),
                    expected_end_time=ts(now + timedelta(hours=2)),
                ),
            )
        ],
    )


async def _activated_once(client: Incidents, nats_server: NatsServer, event_id: str) -> None:
    """The planned event's closure becomes ACTIVE, with one history entry and one event."""
    police = client.as_("police")
    created = await police.CreatePlannedEvent(
        pb.CreatePlannedEventRequest(planned_event_id=event_id, planned_event=_festival(0.5))
    )
    [name] = created.planned_event.incidents
    state = [pb.INCIDENT_STATE_CONFIRMED]

    async def poll() -> None:
        while state[0] != pb.INCIDENT_STATE_ACTIVE:
            state[0] = (await police.GetIncident(pb.GetIncidentRequest(name=name))).incident.state
            await asyncio.sleep(0.05)

    await asyncio.wait_for(poll(), 10)
    await asyncio.sleep(5 * POLL_S)  # more ticks on every replica: none may move it again
    history = await police.ListIncidentHistory(pb.ListIncidentHistoryRequest(name=name))
    assert [(e.actor, e.reason) for e in history.entries] == [("police", ""), ("scheduler", "scheduled start")]
    changed = [
        e.incident.state
        for s, e in await read_stream(
            nats_server, "almere.incidents.v1.>", f"r-{uuid.uuid4().hex[:8]}", idle=0.5, stream="INCIDENTS"
        )
        if ".incident_state_changed." in s and e.incident.name == name
    ]
    assert changed == [pb.INCIDENT_STATE_ACTIVE]


async def _publish_delays(client: Incidents, nats_server: NatsServer) -> list[float]:
    """Seconds from each of a few reports' reply to its event on the stream."""
    nc = await nats.connect(nats_server.url, **nats_server.client_options("observer"))
    delays = []
    try:
        js = nc.jetstream()
        for _ in range(8):
            incident = await client.report()
            replied = time.monotonic()
            subject = f"almere.incidents.v1.incident_reported.{incident.name.removeprefix('incidents/')}"
            await asyncio.wait_for(wait_for_last_message(js, "INCIDENTS", subject, lambda _: True), 10)
            delays.append(time.monotonic() - replied)
    finally:
        await nc.close()
    return delays


async def test_incident_replicas_schedule_once_serve_everywhere_and_fail_over(
    replicas: Replicas,
    nats_server: NatsServer,
    network_file: Path,
    tokens: dict[str, str],
) -> None:
    from services.incidents.service import SPEC

    started = [await replicas.start(SPEC, network_file=network_file) for _ in range(2)]
    services = [s for s, _ in started]
    [leader] = _leaders(services, SCHEDULERS)
    assert len(_leaders(services, RELAY)) == 1
    follower = 1 - leader
    runs: list[int] = []

    def counting(index: int) -> Callable[[Session, Sequence[Any]], list[None]]:
        def handler(_session: Session, items: Sequence[Any]) -> list[None]:
            runs.append(index)
            return [None] * len(items)

        return handler

    stop_counting = [s.schedule("count", counting(i)) for i, s in enumerate(services)]
    channels = [grpc.aio.insecure_channel(address) for _, address in started]
    try:
        clients = [Incidents(c, tokens) for c in channels]
        # Written on the follower (its relay idle: the leader's publishes it), read on the leader.
        reported = await clients[follower].report()
        assert (await clients[leader].as_("police").GetIncident(pb.GetIncidentRequest(name=reported.name))).incident
        await _activated_once(clients[follower], nats_server, "festival-a")
        assert runs and set(runs) == {leader}

        await replicas.stop(services[leader])
        took = await _until(
            lambda: services[follower].leads(SCHEDULERS) and services[follower].leads(RELAY), "take-over", within=5
        )
        print(f"\nincident service fail-over after the leader stopped: {took:.2f} s")
        runs.clear()
        await _activated_once(clients[follower], nats_server, "festival-b")
        assert runs and set(runs) == {follower}
        await stop_counting[follower]()
    finally:
        for channel in channels:
            await channel.close(None)


async def test_each_optimizer_replica_sees_every_event(
    replicas: Replicas,
    nats_server: NatsServer,
    almere_net: Path,
    tokens: dict[str, str],
) -> None:
    """Durables of each replica's own: with one shared durable each replica would get part of the
    events, and a facility known to one replica only."""
    from services.optimizer.service import SPEC as OPTIMIZER
    from services.parking.service import SPEC as PARKING

    _, parking_address = await replicas.start(PARKING)
    optimizers = [await replicas.start(OPTIMIZER, network_file=almere_net, replica_id=f"r{i}") for i in range(2)]
    channels = [grpc.aio.insecure_channel(a) for a in (parking_address, *(a for _, a in optimizers))]
    try:
        parking = Parking(channels[0], tokens)
        for i in range(6):
            await parking.create(f"garage-{i}")
        for i in range(6):
            await parking.report(f"garage-{i}", occupied=10 + i, sequence=1)
        published = 0
        while published < 12:  # facility_created and occupancy_changed, once relayed
            published = len(
                await read_stream(nats_server, "almere.parking.v1.>", f"r-{uuid.uuid4().hex[:8]}", idle=0.3)
            )
        stubs = [Client(optimizer_pb2_grpc.OptimizerServiceStub(c), tokens) for c in channels[1:]]
        statuses = [opb.GetStatusResponse() for _ in stubs]

        async def whole() -> None:
            while any(s.consumed.get("PARKING", 0) < published for s in statuses):
                for i, stub in enumerate(stubs):
                    statuses[i] = await stub.as_("engineer").GetStatus(opb.GetStatusRequest())
                await asyncio.sleep(0.05)

        await asyncio.wait_for(whole(), 15)
        assert [(s.consumed["PARKING"], s.facilities) for s in statuses] == [(published, 6)] * 2
        nc = await nats.connect(nats_server.url, **nats_server.client_options("optimizer"))
        try:
            for replica in ("r0", "r1"):
                info = await nc.jetstream().consumer_info("PARKING", f"optimizer-parking-{replica}")
                assert info.config.inactive_threshold  # a replica gone for good leaves nothing behind
        finally:
            await nc.close()
    finally:
        for channel in channels:
            await channel.close(None)


async def test_replicas_changing_one_incident_serialise(
    settings: Settings, replicas: Replicas, nats_server: NatsServer, network_file: Path, tokens: dict[str, str]
) -> None:
    """The same move on two replicas at once: one wins, the other is refused against the winner's
    result (FAILED_PRECONDITION); two edits of different fields both land (no lost update). A
    follower's writes reach the bus at once: it wakes the leader's relay (PostgreSQL)."""
    from services.incidents.service import SPEC

    # No scheduled ticks (their commits would wake the leader's relay anyway).
    started = [await replicas.start(SPEC, network_file=network_file, scheduler_poll_seconds=600) for _ in range(2)]
    channels = [grpc.aio.insecure_channel(address) for _, address in started]
    try:
        if settings.database_url and settings.database_url.startswith("postgresql"):  # SQLite: the poll
            [follower] = [i for i, (s, _) in enumerate(started) if not s.leads(RELAY)]
            delays = await _publish_delays(Incidents(channels[follower], tokens), nats_server)
            print(f"\nfollower's writes on the bus after (s): {', '.join(f'{d:.3f}' for d in delays)}")
            assert max(delays) < 0.6  # rung at once, not at the leader's next poll (every 1 s)
        a, b = (Incidents(c, tokens).as_("police") for c in channels)
        reported = [await Incidents(channels[0], tokens).report() for _ in range(5)]

        async def code(call: Awaitable[Any]) -> grpc.StatusCode:
            try:
                await call
            except grpc.aio.AioRpcError as err:
                return err.code()
            return grpc.StatusCode.OK

        for incident in reported:
            activate = pb.TransitionIncidentRequest(name=incident.name, state=pb.INCIDENT_STATE_ACTIVE)
            codes = await asyncio.gather(code(a.TransitionIncident(activate)), code(b.TransitionIncident(activate)))
            assert sorted(codes, key=str) == sorted([grpc.StatusCode.OK, grpc.StatusCode.FAILED_PRECONDITION], key=str)
            history = await a.ListIncidentHistory(pb.ListIncidentHistoryRequest(name=incident.name))
            assert [e.action for e in history.entries] == ["reported", "transitioned"]

        for incident in reported:
            title = pb.Incident(name=incident.name, title="Two cars")
            notes = pb.Incident(name=incident.name, notes="Lane 2 blocked")
            await asyncio.gather(
                a.UpdateIncident(pb.UpdateIncidentRequest(incident=title, update_mask=FieldMask(paths=["title"]))),
                b.UpdateIncident(pb.UpdateIncidentRequest(incident=notes, update_mask=FieldMask(paths=["notes"]))),
            )
            final = (await b.GetIncident(pb.GetIncidentRequest(name=incident.name))).incident
            assert (final.title, final.notes, final.version) == ("Two cars", "Lane 2 blocked", 4)
    finally:
        for channel in channels:
            await channel.close(None)


async def test_a_controller_moving_between_signal_replicas_keeps_every_step(
    replicas: Replicas, almere_net: Path, tokens: dict[str, str]
) -> None:
    """The optimizer's calls may land on either replica (its connection moved, a replica restarted):
    each replica numbers steps from what it knows, so the second records after what the first
    recorded, renumbering; no step is lost and the numbers stay unique and in order."""
    from almere.signals.v1 import signals_pb2 as spb

    from services.signals.service import SPEC as SIGNALS
    from services.signals.steps import FLUSH_S
    from tests.integration.helpers import Signals

    light = "intersections/j12"
    started = [await replicas.start(SIGNALS, network_file=almere_net) for _ in range(2)]
    channels = [grpc.aio.insecure_channel(address) for _, address in started]
    try:
        first, second = (Signals(c, tokens) for c in channels)
        await first.as_("engineer").ImportNetwork(spb.ImportNetworkRequest())
        (timing,) = (await first.as_("engineer").ListPlans(spb.ListPlansRequest(parent=light))).plans
        green = next(p.state for p in timing.phases if "G" in p.state and "y" not in p.state)
        takeover = spb.Plan(type=spb.PLAN_TYPE_ADAPTIVE, phases=[spb.Phase(state=green, duration=5.0)])
        await first.as_("optimizer").ProposePlan(spb.ProposePlanRequest(parent=light, plan=takeover))
        await first.as_("engineer").ApprovePlan(spb.ApprovePlanRequest(name=f"{light}/plans/2"))
        step = spb.ApplyStepsRequest(steps=[spb.Step(intersection=light, phases=takeover.phases, reason="t")])
        # Both replicas learn of the light, then the calls alternate before either has recorded.
        for replica in (first, second, first, second, second, first):
            (result,) = (await replica.as_("optimizer").ApplySteps(step)).results
            assert result.HasField("step"), result.refusal

        async def listed() -> list[int]:
            reply = await first.as_("engineer").ListSteps(spb.ListStepsRequest(parent=light, page_size=100))
            return [s.sequence for s in reply.steps]

        deadline = time.monotonic() + 10 * FLUSH_S + 5
        while len(await listed()) < 6:
            assert time.monotonic() < deadline, await listed()
            await asyncio.sleep(0.1)
        assert await listed() == [6, 5, 4, 3, 2, 1]
    finally:
        for channel in channels:
            await channel.close(None)
