"""OptimizerService wiring: config -> decisions -> durable consumers -> servicer (almere.optimizer.v1)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable

from almere.detectors.v1 import detectors_pb2
from almere.incidents.v1 import events_pb2 as ievents
from almere.optimizer.v1 import decisions_pb2, optimizer_pb2, optimizer_pb2_grpc
from almere.parking.v1 import events_pb2 as pevents
from almere.partners.v1 import partners_pb2 as partners_pb
from almere.signals.v1 import events_pb2 as sevents
from almere.signals.v1 import signals_pb2_grpc
from grpc import aio
from nats.aio.msg import Msg

from contract import bus
from services.common.agreements import AgreementBook
from services.common.channels import open_channel
from services.common.clock import utcnow
from services.common.feed import EventFeed
from services.common.runtime import Service, ServiceSpec
from services.common.terms import Outcome
from services.optimizer import decision_retention, usecases
from services.optimizer.adaptive_control import AdaptiveControl
from services.optimizer.api import OptimizerApi, SerialCommitter
from services.optimizer.consumers import DurableConsumer, Source
from services.optimizer.decision_engine import DecisionEngine
from services.optimizer.models import TABLES, OptimizerOutbox
from services.optimizer.routing import RoadGraph
from services.optimizer.state import DECISION_MEMORY
from services.optimizer.usecases import Writes

SOURCES = [
    Source(stream=bus.PARKING.name, subject=bus.PARKING.subjects, durable="optimizer-parking"),
    Source(stream=bus.INCIDENTS.name, subject=bus.INCIDENTS.subjects, durable="optimizer-incidents"),
    Source(stream=bus.SIGNALS.name, subject=bus.SIGNALS.subjects, durable="optimizer-signals"),
    Source(stream=bus.DETECTORS.name, subject=bus.DETECTORS.subjects, durable="optimizer-detectors", only_new=True),
    Source(stream=bus.COUNTS.name, subject=bus.COUNTS.subjects, durable="optimizer-counts", only_new=True),
]


def _shares_reports(book: AgreementBook, event: ievents.IncidentEvent) -> bool:
    """Whether a partner's agreement lets the optimizer act on its reports (before the police verify
    them; after, the incident is theirs)."""
    partner = event.incident.partner_report.partner.removeprefix("partners/")
    if not partner:
        return False
    access = book.optimizer_access(partner, dataset=partners_pb.DATASET_INCIDENT_REPORTS, now=utcnow())
    return access.outcome in (Outcome.FULL, Outcome.DEGRADED)


def _handler(
    decisions: DecisionEngine, signals: AdaptiveControl, stream: str, book: AgreementBook
) -> Callable[[Msg], Writes]:
    def handle(msg: Msg) -> Writes:
        decisions.consumed[stream] += 1
        kind = msg.subject.split(".")[3]
        if stream == bus.PARKING.name:
            if kind in (bus.FACILITY_CREATED, bus.FACILITY_UPDATED):
                return decisions.on_facility(pevents.FacilityChangedEvent.FromString(msg.data))
            if kind == bus.OCCUPANCY_CHANGED:
                return decisions.on_occupancy(pevents.OccupancyChangedEvent.FromString(msg.data))
        elif stream == bus.INCIDENTS.name:
            event = ievents.IncidentEvent.FromString(msg.data)
            return decisions.on_incident(event, utcnow(), report_shared=_shares_reports(book, event))
        elif stream in (bus.DETECTORS.name, bus.COUNTS.name):
            decisions.on_detector(detectors_pb2.Measurement.FromString(msg.data), utcnow())
        elif kind in (bus.PRIORITY_DECIDED, bus.PRIORITY_ENDED):
            signals.on_priority(sevents.SignalEvent.FromString(msg.data))
        # Signal plans are counted, not used: travel times already show what a plan does.
        return Writes()

    return handle


async def _mount(service: Service, server: aio.Server) -> list[Callable[[], Awaitable[None]]]:
    settings = service.settings
    if settings.network_file is None:
        raise RuntimeError("the optimizer needs the city's SUMO network: set ALMERE_NETWORK_FILE")
    graph = await asyncio.to_thread(RoadGraph.from_net, settings.network_file)

    def load() -> usecases.Loaded:
        return usecases.load(service.engine, utcnow() - DECISION_MEMORY)

    decisions = DecisionEngine(graph, await asyncio.to_thread(load))

    async def submit(writes: Writes) -> None:
        await service.committer.submit(usecases.save, (writes, utcnow()))

    serial_committer = SerialCommitter(decisions, submit=submit, reload=load)
    feed = EventFeed(service.bus, bus.OPTIMIZER, dict.fromkeys(bus.DECISION_EVENTS, decisions_pb2.Decision))
    channel = open_channel(settings, settings.signals_address) if settings.signals_address else None
    signals = AdaptiveControl(
        settings.network_file,
        signals=signals_pb2_grpc.SignalServiceStub(channel) if channel else None,
        token=settings.service_token,
        lease_s=settings.signal_adaptive_lease_seconds,
    )
    api = OptimizerApi(
        decisions, serial_committer=serial_committer, feed=feed, signals=signals, governance=service.governance
    )
    optimizer_pb2_grpc.add_OptimizerServiceServicer_to_server(api, server)

    # Every replica reads every event (durables of its own): its picture is whole or it is wrong.
    consumers = [
        DurableConsumer(
            service.bus,
            dataclasses.replace(source, durable=f"{source.durable}-{settings.replica}"),
            handle=_handler(decisions, signals, source.stream, service.agreements),
            serial_committer=serial_committer,
        )
        for source in SOURCES
    ]
    for consumer in consumers:
        await consumer.start()
    forgetting = service.schedule("decision-retention", decision_retention.housekeeping(settings))
    closing = [lambda: channel.close(None)] if channel else []
    return [*(c.stop for c in consumers), feed.stop, forgetting, *closing]


SPEC = ServiceSpec(
    name="optimizer",
    full_names=[optimizer_pb2.DESCRIPTOR.services_by_name["OptimizerService"].full_name],
    tables=TABLES,
    outbox=OptimizerOutbox,
    # DETECTORS has no service of its own: the optimizer, its reader, keeps its configuration.
    streams=(bus.OPTIMIZER, bus.DETECTORS),
    consumes=(bus.PARKING, bus.INCIDENTS, bus.SIGNALS, bus.COUNTS),
    mount=_mount,
)
