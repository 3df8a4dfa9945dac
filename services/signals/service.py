"""SignalService wiring: its tables, streams and servicer, mounted on the shared runtime."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from almere.signals.v1 import events_pb2, signals_pb2, signals_pb2_grpc
from grpc import aio

from contract.bus import SIGNAL_EVENTS, SIGNALS
from services.common.feed import EventFeed
from services.common.runtime import Service, ServiceSpec
from services.signals import logic, usecases
from services.signals.api import SignalApi
from services.signals.models import TABLES, SignalsOutbox


async def _mount(service: Service, server: aio.Server) -> list[Callable[[], Awaitable[None]]]:
    settings = service.settings
    feed = EventFeed(service.bus, SIGNALS, dict.fromkeys(SIGNAL_EVENTS, events_pb2.SignalEvent))
    bounds = logic.CycleBounds(settings.signal_cycle_min_seconds, settings.signal_cycle_max_seconds)
    network = settings.network_file.resolve() if settings.network_file else None
    api = SignalApi(service.engine, committer=service.committer, feed=feed, network=network, bounds=bounds)
    signals_pb2_grpc.add_SignalServiceServicer_to_server(api, server)
    return [service.schedule("plan-activations", usecases.activate_due), feed.stop, api.drain]


SPEC = ServiceSpec(
    name="signals",
    full_names=[signals_pb2.DESCRIPTOR.services_by_name["SignalService"].full_name],
    tables=TABLES,
    outbox=SignalsOutbox,
    streams=(SIGNALS,),
    mount=_mount,
)
