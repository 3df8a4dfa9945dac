"""Demo scene 2: a police officer reports a collision on the ring road that closes a lane; the traffic
control room's watch stream shows it arrive and move through its lifecycle, and every change lands
on JetStream (stream INCIDENTS) for the optimizer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import grpc
import nats
from almere.incidents.v1 import events_pb2, incidents_pb2_grpc
from almere.incidents.v1 import incidents_pb2 as pb
from almere.type.v1 import geo_pb2

from libs.nats_client import servers
from services.common.clock import to_timestamp, utcnow

# On the Hogering (schematic ring road of the centrum-mini network), northbound.
COLLISION_AT = geo_pb2.LatLng(latitude=52.3742, longitude=5.2117)
STATE = {v: n.removeprefix("INCIDENT_STATE_") for n, v in pb.IncidentState.items()}


def _auth(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


def _describe(incident: pb.Incident) -> str:
    loc, impact = incident.network_location, incident.impact
    closed = f"lane {','.join(map(str, impact.closed_lanes))} closed" if impact.closed_lanes else "no lane closed"
    limit = f", {impact.speed_limit_kmh:.0f} km/h" if impact.speed_limit_kmh else ""
    return f"{STATE[incident.state]:<9} v{incident.version} on {loc.edge_id} ({closed}{limit})"


async def _watch(stub: incidents_pb2_grpc.IncidentServiceAsyncStub, token: str, say: Callable[[str], None]) -> None:
    async for change in stub.WatchIncidents(pb.WatchIncidentsRequest(), metadata=_auth(token)):
        kind = "snapshot" if change.snapshot else "change  "
        say(f"[control room watch {kind}] {change.incident.title}: {_describe(change.incident)}")


async def _jetstream(nats_url: str, bus: dict[str, Any], say: Callable[[str], None], seen: list[str]) -> None:
    nc = await nats.connect(servers(nats_url), **bus)
    try:
        sub = await nc.jetstream().subscribe("almere.incidents.v1.>", durable="demo-optimizer", stream="INCIDENTS")
        async for msg in sub.messages:
            event = events_pb2.IncidentEvent.FromString(msg.data)
            seen.append(msg.subject)
            say(f"[JetStream] {msg.subject} v{event.version} state {STATE[event.incident.state]}")
            await msg.ack()
    finally:
        await nc.close()


async def play(
    channel: grpc.aio.Channel,
    *,
    nats_url: str,
    bus: dict[str, Any],
    tokens: dict[str, str],
    say: Callable[[str], None],
) -> bool:
    """`bus`: how to connect to NATS as the read-only observer (what a consumer of the stream sees)."""
    async with channel:
        stub = incidents_pb2_grpc.IncidentServiceStub(channel)
        published: list[str] = []
        watcher = asyncio.create_task(_watch(stub, tokens["engineer"], say))
        consumer = asyncio.create_task(_jetstream(nats_url, bus, say, published))
        await asyncio.sleep(0.5)
        now = utcnow()
        report = await stub.ReportIncident(
            pb.ReportIncidentRequest(
                request_id="demo-collision-1",
                incident=pb.Incident(
                    type=pb.INCIDENT_TYPE_COLLISION,
                    severity=pb.SEVERITY_MAJOR,
                    title="Collision on the Hogering",
                    location=COLLISION_AT,
                    impact=pb.Impact(
                        closed_lanes=[1],
                        speed_limit_kmh=30,
                        expected_start_time=to_timestamp(now),
                        expected_end_time=to_timestamp(now + timedelta(minutes=45)),
                    ),
                    notes="Two cars, no injuries; tow truck requested.",
                ),
            ),
            metadata=_auth(tokens["police"]),
        )
        incident = report.incident
        loc = incident.network_location
        say(
            f"[police] reported {incident.name}: snapped to edge {loc.edge_id} lane {list(loc.lane_indices)} "
            f"at {loc.position_meters:.0f} m ({loc.snap_distance_meters:.1f} m from the reported point)"
        )
        for state, who, why in (
            (pb.INCIDENT_STATE_CONFIRMED, "engineer", "camera confirms"),
            (pb.INCIDENT_STATE_ACTIVE, "police", "officers on site, lane closed"),
            (pb.INCIDENT_STATE_CLEARING, "police", "tow truck arrived"),
            (pb.INCIDENT_STATE_CLEARED, "engineer", "lane reopened"),
        ):
            await asyncio.sleep(0.4)
            await stub.TransitionIncident(
                pb.TransitionIncidentRequest(name=incident.name, state=state, reason=why), metadata=_auth(tokens[who])
            )
        public = await stub.GetIncident(pb.GetIncidentRequest(name=incident.name), metadata=_auth(tokens["operator"]))
        say(f"[parking operator] sees the impact but no notes ({public.incident.notes!r}) and no reporter")
        await asyncio.sleep(0.5)
        watcher.cancel()
        consumer.cancel()
        await asyncio.gather(watcher, consumer, return_exceptions=True)
    ok = len(published) == 5 and not public.incident.notes
    say(
        f"[result] the collision reached the control room's watch and JetStream ({len(published)} events)"
        if ok
        else "[result] UNEXPECTED: the incident did not flow through"
    )
    return ok
