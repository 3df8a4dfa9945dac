"""Defences found in review: one bad write cannot take its batch down, replicas sharing a database
do not lose updates, unknown fields are never stored, restricted fields stay restricted, and
out-of-range input is INVALID_ARGUMENT rather than INTERNAL."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from almere.incidents.v1 import incidents_pb2 as ipb
from almere.parking.v1 import parking_pb2 as pb
from almere.signals.v1 import signals_pb2 as spb
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.timestamp_pb2 import Timestamp
from sqlmodel import Session

from apps.natsd import NatsServer
from services.common.db import GroupCommitter, make_engine
from services.common.errors import Internal, InvalidArgument
from services.incidents.service import SPEC as INCIDENTS
from services.parking.service import SPEC as PARKING
from services.signals.service import SPEC as SIGNALS
from tests.integration.helpers import Incidents, Parking, Signals, read_stream, ts

Start = Callable[..., Awaitable[str]]


def _handler(session: Session, items: Sequence[str]) -> list[Any]:
    results: list[Any] = []
    for item in items:
        if item == "crash":
            raise RuntimeError("a bug in one item")
        results.append(InvalidArgument("refused") if item == "refused" else item.upper())
    return results


async def test_one_crashing_item_fails_alone(database_url: str) -> None:
    committer = GroupCommitter(engine=make_engine(database_url), service="test")
    committer.start()
    try:
        results = await asyncio.gather(
            *(committer.submit(_handler, item) for item in ("a", "crash", "b", "refused", "c")),
            return_exceptions=True,
        )
    finally:
        await committer.stop()
    assert results[0] == "A" and results[2] == "B" and results[4] == "C"
    assert isinstance(results[1], Internal) and "nothing was stored" in results[1].message
    assert isinstance(results[3], InvalidArgument)


async def test_two_replicas_sharing_a_database_lose_no_gate_counts(
    start_service: Start, tokens: dict[str, str], database_url: str
) -> None:
    first, second = await start_service(PARKING), await start_service(PARKING)
    async with grpc.aio.insecure_channel(first) as a, grpc.aio.insecure_channel(second) as b:
        replicas = [Parking(a, tokens), Parking(b, tokens)]
        await replicas[0].create("garage-a", capacity=10_000)

        async def one_entry(client: Parking, n: int) -> None:
            async def batch():  # type: ignore[no-untyped-def]
                yield pb.RecordGateEventsRequest(
                    facility="facilities/garage-a",
                    batch_id=f"b{n}",
                    events=[pb.GateEvent(direction=pb.GATE_DIRECTION_ENTRY, event_time=ts())],
                )

            await client.as_("operator").RecordGateEvents(batch())

        await asyncio.gather(*(one_entry(replicas[n % 2], n) for n in range(200)))
        final = await replicas[1].as_("engineer").GetOccupancy(pb.GetOccupancyRequest(facility="facilities/garage-a"))
    assert (final.occupancy.occupied_spaces, final.occupancy.version) == (200, 201)


def _with_unknown_field(message: Any, size: int) -> bytes:
    """The message's bytes plus field 999 (length-delimited), which the contract does not know."""
    payload = b"x" * size
    tag, length = (999 << 3) | 2, len(payload)

    def varint(value: int) -> bytes:
        out = b""
        while True:
            byte, value = value & 0x7F, value >> 7
            out += bytes([byte | (0x80 if value else 0)])
            if not value:
                return out

    return bytes(message.SerializeToString() + varint(tag) + varint(length) + payload)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_unknown_fields_are_dropped_before_storing_or_publishing(
    start_service: Start, tokens: dict[str, str], nats_server: NatsServer
) -> None:
    address = await start_service(INCIDENTS)
    request = ipb.ReportIncidentRequest(
        request_id="r1",
        incident=ipb.Incident(type=ipb.INCIDENT_TYPE_HAZARD, network_location=ipb.NetworkLocation(edge_id="e1")),
    )
    async with grpc.aio.insecure_channel(address) as channel:
        report = channel.unary_unary(
            "/almere.incidents.v1.IncidentService/ReportIncident",
            request_serializer=lambda raw: raw,
            response_deserializer=ipb.ReportIncidentResponse.FromString,
        )
        auth = (("authorization", f"Bearer {tokens['police']}"),)
        reply = await report(_with_unknown_field(request, 200_000), metadata=auth)
        await Incidents(channel, tokens).report(network_location=ipb.NetworkLocation(edge_id="e2"))
    assert reply.incident.name.startswith("incidents/")
    events = await read_stream(nats_server, "almere.incidents.v1.>", stream="INCIDENTS")
    assert len(events) == 2  # the relay was not blocked by an oversized event
    assert all(event.incident.ByteSize() < 2_000 for _, event in events)  # type: ignore[attr-defined]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_restricted_notes_and_other_agencies_plans_stay_protected(
    start_service: Start, tokens: dict[str, str]
) -> None:
    async with grpc.aio.insecure_channel(await start_service(INCIDENTS)) as channel:
        client = Incidents(channel, tokens)
        action = await client.report(
            type=ipb.INCIDENT_TYPE_POLICE_ACTION,
            notes="undercover unit",
            network_location=ipb.NetworkLocation(edge_id="e1"),
        )
        retype = ipb.UpdateIncidentRequest(
            incident=ipb.Incident(name=action.name, type=ipb.INCIDENT_TYPE_HAZARD),
            update_mask=FieldMask(paths=["type"]),
        )
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client.as_("engineer").UpdateIncident(retype)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        seen = (await client.as_("engineer").GetIncident(ipb.GetIncidentRequest(name=action.name))).incident
        assert seen.notes == "" and seen.type == ipb.INCIDENT_TYPE_POLICE_ACTION
        now = datetime.now(UTC)
        closure = ipb.ScheduledClosure(
            network_location=ipb.NetworkLocation(edge_id="e1"),
            impact=ipb.Impact(
                expected_start_time=ts(now + timedelta(hours=1)), expected_end_time=ts(now + timedelta(hours=2))
            ),
        )
        planned = ipb.PlannedEvent(display_name="Road works", type=ipb.INCIDENT_TYPE_ROAD_WORKS, closures=[closure])
        created = await client.as_("engineer").CreatePlannedEvent(
            ipb.CreatePlannedEventRequest(planned_event_id="works", planned_event=planned)
        )
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client.as_("police").CancelPlannedEvent(ipb.CancelPlannedEventRequest(name="plannedEvents/works"))
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        still = await client.as_("engineer").GetIncident(
            ipb.GetIncidentRequest(name=created.planned_event.incidents[0])
        )
        assert still.incident.state == ipb.INCIDENT_STATE_CONFIRMED


def _far_future() -> Timestamp:
    return Timestamp(seconds=253402300799)  # 9999-12-31T23:59:59Z


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_out_of_range_input_is_invalid_argument(
    start_service: Start, tokens: dict[str, str], network_file: Any
) -> None:
    parking = await start_service(PARKING)
    incidents = await start_service(INCIDENTS)
    signals = await start_service(SIGNALS, network_file=network_file)
    async with (
        grpc.aio.insecure_channel(parking) as p,
        grpc.aio.insecure_channel(incidents) as i,
        grpc.aio.insecure_channel(signals) as s,
    ):
        park, inc, sig = Parking(p, tokens), Incidents(i, tokens), Signals(s, tokens)
        await park.create("garage-a")
        await sig.as_("engineer").ImportNetwork(spb.ImportNetworkRequest())
        token = base64.urlsafe_b64encode(json.dumps({"after": "x", "query": "stadhuisplein"}).encode()).decode()
        calls = [
            park.as_("operator").UpdateFacility(
                pb.UpdateFacilityRequest(
                    facility=pb.Facility(name="facilities/garage-a", time_zone="Europe"),
                    update_mask=FieldMask(paths=["time_zone"]),
                )
            ),
            inc.report(
                impact=ipb.Impact(expected_start_time=ts(), expected_end_time=_far_future()),
                network_location=ipb.NetworkLocation(edge_id="ring-w-n"),
            ),
            sig.as_("ems").RequestPriority(
                spb.RequestPriorityRequest(
                    parent="intersections/stadhuisplein",
                    priority=spb.Priority(
                        priority_class=spb.PRIORITY_CLASS_EMERGENCY, approach_edge_id="spoke-w-in", eta=_far_future()
                    ),
                )
            ),
            sig.as_("engineer").ListPlans(spb.ListPlansRequest(parent="intersections/stadhuisplein", page_token=token)),
        ]
        for call in calls:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
        history = spb.ListIntersectionHistoryRequest(parent="intersections/stadhuisplein")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await sig.as_("optimizer").ListIntersectionHistory(history)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
