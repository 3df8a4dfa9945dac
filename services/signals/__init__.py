"""SignalService: intersections, timing plans and priority (almere.signals.v1)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from almere.signals.v1 import events_pb2, signals_pb2, signals_pb2_grpc
from grpc import aio

from services.common.clock import utcnow
from services.common.feed import EventFeed
from services.common.runtime import Service, ServiceSpec
from services.common.worker import Worker
from services.signals import events, logic, store
from services.signals.api import SignalApi
from services.signals.models import TABLES, SignalsOutbox

log = logging.getLogger(__name__)


async def _mount(service: Service, server: aio.Server) -> list[Callable[[], Awaitable[None]]]:
    settings = service.settings
    feed = EventFeed(service.bus, events.SUBJECT_PREFIX, dict.fromkeys(events.EVENTS, events_pb2.SignalEvent))
    bounds = logic.CycleBounds(settings.signal_cycle_min_seconds, settings.signal_cycle_max_seconds)
    network = settings.network_file.resolve() if settings.network_file else None
    signals_pb2_grpc.add_SignalServiceServicer_to_server(
        SignalApi(service.engine, service.committer, feed, network, bounds), server
    )

    async def activate_due() -> None:
        try:
            await service.committer.submit(store.activate_due, utcnow())
        except Exception:
            log.exception("could not activate scheduled plans; will retry")

    scheduler = Worker("signals-schedule", activate_due, settings.scheduler_poll_seconds)
    scheduler.start()
    return [scheduler.stop, feed.stop]


SPEC = ServiceSpec(
    name="signals",
    full_names=[signals_pb2.DESCRIPTOR.services_by_name["SignalService"].full_name],
    tables=TABLES,
    outbox=SignalsOutbox,
    streams=lambda settings: [events.signals_stream(settings)],
    mount=_mount,
)
