"""Test clients: service stubs that call as a given test caller, and a JetStream reader."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import grpc
import nats
from almere.counters.v1 import counters_pb2_grpc
from almere.detectors.v1 import detectors_pb2
from almere.incidents.v1 import events_pb2 as ievents_pb2
from almere.incidents.v1 import incidents_pb2 as ipb
from almere.incidents.v1 import incidents_pb2_grpc
from almere.optimizer.v1 import decisions_pb2
from almere.parking.v1 import events_pb2, parking_pb2_grpc
from almere.parking.v1 import parking_pb2 as pb
from almere.partners.v1 import events_pb2 as pevents_pb2
from almere.partners.v1 import partners_pb2_grpc
from almere.signals.v1 import events_pb2 as sevents_pb2
from almere.signals.v1 import signals_pb2_grpc
from almere.type.v1 import geo_pb2
from google.protobuf.timestamp_pb2 import Timestamp
from nats.js.api import RawStreamMsg
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError

from apps.natsd import NatsServer
from contract.bus import AGREEMENT_SET, PARTNER_EVENTS, SIGNAL_EVENTS

CENTRE = (52.3731, 5.2194)


def ts(when: datetime | None = None) -> Timestamp:
    out = Timestamp()
    out.FromDatetime(when or datetime.now(UTC))
    return out


def facility(
    capacity: int = 100, operator: str = "op-a", lat: float = CENTRE[0], lng: float = CENTRE[1], **extra: Any
) -> pb.Facility:
    fields: dict[str, Any] = {"display_name": "Test garage", "kind": pb.FACILITY_KIND_GARAGE, **extra}
    return pb.Facility(
        operator_id=operator, capacity=capacity, location=geo_pb2.LatLng(latitude=lat, longitude=lng), **fields
    )


class Client:
    """A service stub whose calls carry a caller's token: `await client.as_("operator").GetFacility(...)`."""

    def __init__(self, stub: Any, tokens: dict[str, str]) -> None:
        self.stub = stub
        self.tokens = tokens

    def as_(self, caller: str, *, purpose: str = "") -> _As:
        """Calls as `caller`, declaring `purpose` (what partners' agreements ask readers for) if given."""
        declared = (("x-almere-purpose", purpose),) if purpose else ()
        return _As(self.stub, (("authorization", f"Bearer {self.tokens[caller]}"), *declared))


class Parking(Client):
    def __init__(self, channel: grpc.aio.Channel, tokens: dict[str, str]) -> None:
        super().__init__(parking_pb2_grpc.ParkingServiceStub(channel), tokens)

    async def create(self, facility_id: str, caller: str = "engineer", **kw: Any) -> pb.Facility:
        reply = await self.as_(caller).CreateFacility(
            pb.CreateFacilityRequest(facility_id=facility_id, facility=facility(**kw))
        )
        return reply.facility

    async def report(
        self, facility_id: str, occupied: int, sequence: int, caller: str = "operator", when: datetime | None = None
    ) -> pb.ReportOccupancyResponse:
        return await self.as_(caller).ReportOccupancy(
            pb.ReportOccupancyRequest(
                facility=f"facilities/{facility_id}",
                occupied_spaces=occupied,
                source_time=ts(when),
                sequence=sequence,
            )
        )


class Incidents(Client):
    def __init__(self, channel: grpc.aio.Channel, tokens: dict[str, str]) -> None:
        super().__init__(incidents_pb2_grpc.IncidentServiceStub(channel), tokens)

    async def report(self, caller: str = "police", request_id: str | None = None, **fields: Any) -> ipb.Incident:
        incident = ipb.Incident(
            **{"type": ipb.INCIDENT_TYPE_COLLISION, "title": "Collision on the Hogering", **fields}  # type: ignore[arg-type]
        )
        if not incident.HasField("location") and not incident.network_location.edge_id:
            incident.location.CopyFrom(geo_pb2.LatLng(latitude=52.3742, longitude=5.2117))  # on ring-w-n
        reply = await self.as_(caller).ReportIncident(
            ipb.ReportIncidentRequest(request_id=request_id or uuid.uuid4().hex, incident=incident)
        )
        return reply.incident


class Signals(Client):
    def __init__(self, channel: grpc.aio.Channel, tokens: dict[str, str]) -> None:
        super().__init__(signals_pb2_grpc.SignalServiceStub(channel), tokens)


class Counters(Client):
    def __init__(self, channel: grpc.aio.Channel, tokens: dict[str, str]) -> None:
        super().__init__(counters_pb2_grpc.CounterServiceStub(channel), tokens)


class Partners(Client):
    def __init__(self, channel: grpc.aio.Channel, tokens: dict[str, str]) -> None:
        super().__init__(partners_pb2_grpc.PartnerServiceStub(channel), tokens)


class _As:
    def __init__(self, stub: Any, metadata: tuple[tuple[str, str], ...]) -> None:
        self._stub = stub
        self._metadata = metadata

    def __getattr__(self, method: str) -> Any:
        rpc = getattr(self._stub, method)
        return lambda request, **kw: rpc(request, metadata=self._metadata, **kw)


DECODERS: dict[str, Any] = {
    "measurement": detectors_pb2.Measurement,
    "counted": detectors_pb2.Measurement,
    **dict.fromkeys(SIGNAL_EVENTS, sevents_pb2.SignalEvent),
    "incident_reported": ievents_pb2.IncidentEvent,
    "incident_updated": ievents_pb2.IncidentEvent,
    "incident_state_changed": ievents_pb2.IncidentEvent,
    "occupancy_changed": events_pb2.OccupancyChangedEvent,
    "status_changed": events_pb2.StatusChangedEvent,
    "facility_created": events_pb2.FacilityChangedEvent,
    "facility_updated": events_pb2.FacilityChangedEvent,
    "forecast_updated": events_pb2.ForecastUpdatedEvent,
    "route_advice": decisions_pb2.Decision,
    "parking_guidance": decisions_pb2.Decision,
    **dict.fromkeys(PARTNER_EVENTS, pevents_pb2.PartnerChangedEvent),
    AGREEMENT_SET: pevents_pb2.AgreementChangedEvent,
}


async def read_stream(
    server: NatsServer,
    subject: str = "almere.parking.v1.>",
    durable: str = "test-reader",
    idle: float = 0.5,
    stream: str = "PARKING",
) -> list[tuple[str, Any]]:
    """Every message on `subject` through a durable pull consumer, as (subject, decoded event), read
    as the bus's read-only observer."""
    nc = await nats.connect(server.url, **server.client_options("observer"))
    try:
        js = nc.jetstream(timeout=20)
        sub = await js.pull_subscribe(subject, durable=durable, stream=stream)
        out: list[tuple[str, Any]] = []
        while True:
            try:
                batch = await sub.fetch(500, timeout=idle)
            except TimeoutError:  # nats raises its own subclass or asyncio's, depending on the path
                return out
            for msg in batch:
                out.append((msg.subject, DECODERS[msg.subject.split(".")[3]].FromString(msg.data)))
                await msg.ack()
    finally:
        await nc.close()


async def wait_for_last_message(
    js: JetStreamContext, stream: str, subject: str, until: Callable[[RawStreamMsg], bool]
) -> RawStreamMsg:
    """The newest message of `subject` in `stream` once it satisfies `until` (the outbox relay
    publishes some time after the commit); the caller bounds the wait."""
    while True:
        with contextlib.suppress(NotFoundError):
            msg = await js.get_last_msg(stream, subject)
            if until(msg):
                return msg
        await asyncio.sleep(0.02)
