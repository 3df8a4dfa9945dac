"""OptimizerService wiring: config -> engine -> durable consumers -> servicer (almere.optimizer.v1)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import grpc
from almere.detectors.v1 import detectors_pb2
from almere.incidents.v1 import events_pb2 as ievents
from almere.optimizer.v1 import decisions_pb2, optimizer_pb2, optimizer_pb2_grpc
from almere.parking.v1 import events_pb2 as pevents
from almere.signals.v1 import events_pb2 as sevents
from almere.signals.v1 import signals_pb2_grpc
from grpc import aio
from nats.aio.msg import Msg

from contract import bus
from services.common.clock import utcnow
from services.common.feed import EventFeed
from services.common.runtime import Service, ServiceSpec
from services.optimizer import store
from services.optimizer.adaptive_control import AdaptiveControl
from services.optimizer.api import OptimizerApi, SerialCommitter
from services.optimizer.consumers import DurableConsumer, Source
from services.optimizer.decision_engine import DecisionEngine
from services.optimizer.models import TABLES, OptimizerOutbox
from services.optimizer.routing import RoadGraph
from services.optimizer.state import DECISION_MEMORY
from services.optimizer.store import Writes

SOURCES = [
    Source(bus.PARKING.name, bus.PARKING.subjects, "optimizer-parking"),
    Source(bus.INCIDENTS.name, bus.INCIDENTS.subjects, "optimizer-incidents"),
    Source(bus.SIGNALS.name, bus.SIGNALS.subjects, "optimizer-signals"),
    Source(bus.DETECTORS.name, bus.DETECTORS.subjects, "optimizer-detectors", only_new=True),
]


def _handler(engine: DecisionEngine, signals: AdaptiveControl, stream: str) -> Callable[[Msg], Writes]:
    def handle(msg: Msg) -> Writes:
        engine.consumed[stream] += 1
        kind = msg.subject.split(".")[3]
        if stream == bus.PARKING.name:
            if kind in (bus.FACILITY_CREATED, bus.FACILITY_UPDATED):
                return engine.on_facility(pevents.FacilityChangedEvent.FromString(msg.data))
            if kind == bus.OCCUPANCY_CHANGED:
                return engine.on_occupancy(pevents.OccupancyChangedEvent.FromString(msg.data))
        elif stream == bus.INCIDENTS.name:
            return engine.on_incident(ievents.IncidentEvent.FromString(msg.data), utcnow())
        elif stream == bus.DETECTORS.name:
            engine.on_detector(detectors_pb2.Measurement.FromString(msg.data), utcnow())
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

    def load() -> store.Loaded:
        return store.load(service.engine, utcnow() - DECISION_MEMORY)

    engine = DecisionEngine(graph, await asyncio.to_thread(load))

    async def submit(writes: Writes) -> None:
        await service.committer.submit(store.save, (writes, utcnow()))

    keeper = SerialCommitter(engine, submit, load)
    feed = EventFeed(service.bus, bus.OPTIMIZER, dict.fromkeys(bus.DECISION_EVENTS, decisions_pb2.Decision))
    channel = grpc.aio.insecure_channel(settings.signals_address) if settings.signals_address else None
    signals = AdaptiveControl(
        settings.network_file,
        signals_pb2_grpc.SignalServiceStub(channel) if channel else None,
        settings.service_token,
    )
    optimizer_pb2_grpc.add_OptimizerServiceServicer_to_server(OptimizerApi(engine, keeper, feed, signals), server)

    consumers = [
        DurableConsumer(service.bus, source, _handler(engine, signals, source.stream), keeper) for source in SOURCES
    ]
    for consumer in consumers:
        await consumer.start()
    forgetting = service.schedule("forget-decisions", store.forget_decisions)
    closing = [lambda: channel.close(None)] if channel else []
    return [*(c.stop for c in consumers), feed.stop, forgetting, *closing]


SPEC = ServiceSpec(
    name="optimizer",
    full_names=[optimizer_pb2.DESCRIPTOR.services_by_name["OptimizerService"].full_name],
    tables=TABLES,
    outbox=OptimizerOutbox,
    # The optimizer may start before the services that own the streams it reads: it creates them too.
    streams=(bus.OPTIMIZER, bus.PARKING, bus.INCIDENTS, bus.SIGNALS, bus.DETECTORS),
    mount=_mount,
)
