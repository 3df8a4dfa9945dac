"""Two replicas of the incident service on one PostgreSQL, the clients spread over both and passing a
call a replica cannot take (UNAVAILABLE) to the other; the replica leading the schedulers and the
outbox relay is SIGKILLed under load. The survivor takes both roles over, its relay publishes what
waited in the shared outbox, nothing acknowledged is lost or delivered twice, and a closure planned
to start after the kill starts once."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest
from almere.incidents.v1 import incidents_pb2 as ipb

from apps.natsd import NatsServer
from services.common.leader import RELAY, SCHEDULERS
from tests.chaos.conftest import LaunchStack
from tests.chaos.faults import Postgres, leading_replica, led_roles, sigkill
from tests.chaos.harness import incidents_under_load
from tests.integration.helpers import Incidents, ts

REPLICAS = ["incidents", "incidents@r2"]
DUE_S = 3.0  # the planned closure starts this long after it is planned, just before the kill


async def plan_closure(client: Incidents, *, due_s: float) -> str:
    """A planned event closing a street `due_s` from now; returns the closure's incident."""
    now = datetime.now(UTC)
    impact = ipb.Impact(
        full_closure=True,
        expected_start_time=ts(now + timedelta(seconds=due_s)),
        expected_end_time=ts(now + timedelta(hours=1)),
    )
    closure = ipb.ScheduledClosure(
        title="Stadhuisstraat closed", network_location=ipb.NetworkLocation(edge_id="spoke-w-in"), impact=impact
    )
    event = ipb.PlannedEvent(display_name="Market", closures=[closure])
    created = await client.as_("police").CreatePlannedEvent(
        ipb.CreatePlannedEventRequest(planned_event_id="market", planned_event=event)
    )
    [name] = created.planned_event.incidents
    return str(name)


async def started_once(client: Incidents, name: str, *, timeout_s: float = 15) -> list[tuple[str, str]]:
    """The closure's history once it is ACTIVE (and a scheduler round later, to see a second start)."""
    police = client.as_("police")
    deadline = time.monotonic() + timeout_s
    while (await police.GetIncident(ipb.GetIncidentRequest(name=name))).incident.state != ipb.INCIDENT_STATE_ACTIVE:
        assert time.monotonic() < deadline, f"{name} not started within {timeout_s} s"
        await asyncio.sleep(0.1)
    await asyncio.sleep(2)  # two of the survivor's scheduler rounds (every 1 s): none may start it again
    history = await police.ListIncidentHistory(ipb.ListIncidentHistoryRequest(name=name))
    return [(e.actor, e.reason) for e in history.entries]


@pytest.mark.chaos
async def test_killing_the_leader_replica_loses_and_duplicates_nothing(
    postgres: Postgres, launch_stack: LaunchStack, nats_server: NatsServer
) -> None:
    stack = await launch_stack(services=["incidents"], database_url=postgres.url)
    await asyncio.to_thread(stack.add_replica, "incidents", "r2")
    leader = await leading_replica(stack, REPLICAS)
    [survivor] = [r for r in REPLICAS if r != leader]
    async with incidents_under_load(
        stack=stack,
        bus_url=nats_server.url,
        bus_options=nats_server.client_options("observer"),
        replicas=REPLICAS,
    ) as run:
        on_survivor = run.clients[REPLICAS.index(survivor)]
        planned: list[str] = []

        async def kill() -> None:
            planned.append(await plan_closure(on_survivor, due_s=DUE_S))  # due after the kill
            await sigkill(stack.processes[leader])

        figures = await run.fault(
            f"SIGKILL of the leader replica ({leader}) of 2",
            start=kill,
            end=lambda: None,  # nothing restarts it: the survivor carries on alone
            seconds=0,
        )
        assert await led_roles(stack.metrics[survivor]) == {SCHEDULERS, RELAY}
        history = await started_once(on_survivor, planned[0])

    figures.assert_clean(max_recovery_s=10)
    assert not run.ledger.refused, f"writes refused though a replica served: {run.ledger.refused[:5]}"
    assert history == [("police", ""), ("scheduler", "scheduled start")], history
