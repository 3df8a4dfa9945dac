"""The services' gRPC methods over HTTP/JSON, as grpc-gateway and Envoy's JSON transcoder do: a
unary call takes the request message in its proto3 JSON form and answers the response's; a server
stream answers Server-Sent Events, one per message. The method is found in the services' own
descriptors, so every RPC of the contract is reachable without code of its own, and each call
carries the HTTP caller's token: the service's role rules and visibility decide, as over gRPC."""

from __future__ import annotations

from dataclasses import dataclass

from almere.counters.v1 import counters_pb2
from almere.incidents.v1 import incidents_pb2
from almere.optimizer.v1 import optimizer_pb2
from almere.parking.v1 import parking_pb2
from almere.partners.v1 import partners_pb2
from almere.signals.v1 import signals_pb2
from almere.whatif.v1 import whatif_pb2
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message

# The services behind the gateway, by the short name their routes use.
SERVICES: dict[str, ServiceDescriptor] = {
    "parking": parking_pb2.DESCRIPTOR.services_by_name["ParkingService"],
    "incidents": incidents_pb2.DESCRIPTOR.services_by_name["IncidentService"],
    "signals": signals_pb2.DESCRIPTOR.services_by_name["SignalService"],
    "optimizer": optimizer_pb2.DESCRIPTOR.services_by_name["OptimizerService"],
    "whatif": whatif_pb2.DESCRIPTOR.services_by_name["WhatIfService"],
    "partners": partners_pb2.DESCRIPTOR.services_by_name["PartnerService"],
    "counters": counters_pb2.DESCRIPTOR.services_by_name["CounterService"],
}


class UnknownMethod(LookupError):
    """No such service or method, or one HTTP cannot carry (a client stream)."""


@dataclass(frozen=True, kw_only=True)
class Method:
    service: str  # the short name: parking, incidents, signals, optimizer, whatif, partners, counters
    path: str  # /almere.parking.v1.ParkingService/GetFacility
    streaming: bool  # a server stream (Watch*)
    request: type[Message]
    response: type[Message]


def method(service: str, name: str) -> Method:
    descriptor = SERVICES.get(service)
    found: MethodDescriptor | None = descriptor.methods_by_name.get(name) if descriptor else None
    if descriptor is None or found is None:
        raise UnknownMethod(f"no method {service}/{name}; services: {', '.join(SERVICES)}")
    if found.client_streaming:
        raise UnknownMethod(f"{service}/{name} takes a stream of requests, which HTTP/JSON cannot carry: use gRPC")
    return Method(
        service=service,
        path=f"/{descriptor.full_name}/{name}",
        streaming=found.server_streaming,
        request=message_factory.GetMessageClass(found.input_type),
        response=message_factory.GetMessageClass(found.output_type),
    )
