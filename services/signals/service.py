"""SignalService wiring: its tables, streams and servicer, mounted on the shared runtime."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

from almere.signals.v1 import events_pb2, signals_pb2, signals_pb2_grpc
from grpc import aio

from contract.bus import SIGNAL_EVENTS, SIGNALS
from services.common.clock import utcnow
from services.common.feed import EventFeed
from services.common.runtime import Service, ServiceSpec
from services.signals import compaction, logic, usecases
from services.signals.api import SignalApi
from services.signals.models import TABLES, SignalsOutbox
from services.signals.steps import FLUSH_S


async def _mount(service: Service, server: aio.Server) -> list[Callable[[], Awaitable[None]]]:
    settings = service.settings
    feed = EventFeed(service.bus, SIGNALS, dict.fromkeys(SIGNAL_EVENTS, events_pb2.SignalEvent))
    bounds = logic.CycleBounds(settings.signal_cycle_min_seconds, settings.signal_cycle_max_seconds)
    network = settings.network_file.resolve() if settings.network_file else None
    lease_s = settings.signal_adaptive_lease_seconds
    api = SignalApi(
        service.engine, committer=service.committer, feed=feed, network=network, bounds=bounds, lease_s=lease_s
    )
    # The ledger refuses steps once the lease is over; the database sees the last sign of life up to
    # a flush later, so the hand-back allows for that (on whichever replica leads the schedules).
    await service.committer.submit(usecases.lease_unleased_takeovers, utcnow())
    expire = functools.partial(usecases.expire_leases, lease_s=lease_s + FLUSH_S)
    leases = service.schedule("adaptive-leases", expire)
    signals_pb2_grpc.add_SignalServiceServicer_to_server(api, server)
    compacting = service.schedule("step-retention", compaction.housekeeping(settings))
    return [service.schedule("plan-activations", usecases.activate_due), leases, compacting, feed.stop, api.drain]


SPEC = ServiceSpec(
    name="signals",
    full_names=[signals_pb2.DESCRIPTOR.services_by_name["SignalService"].full_name],
    tables=TABLES,
    outbox=SignalsOutbox,
    streams=(SIGNALS,),
    mount=_mount,
)
