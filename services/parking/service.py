"""ParkingService wiring: its tables, streams and servicer, mounted on the shared runtime."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from almere.parking.v1 import parking_pb2, parking_pb2_grpc
from grpc import aio

from contract.bus import PARKING
from services.common.retention import Retention
from services.common.runtime import Service, ServiceSpec
from services.parking import history_retention, usecases
from services.parking.api import ParkingApi
from services.parking.feed import occupancy_feed
from services.parking.models import TABLES, ParkingOutbox
from services.parking.sharing import DATASET, Sharing
from services.parking.travel_times import TravelTimes


async def _mount(service: Service, server: aio.Server) -> list[Callable[[], Awaitable[None]]]:
    feed = occupancy_feed(service.bus)
    travel_times = TravelTimes(service.settings)
    sharing = Sharing(governance=service.governance, engine=service.engine)
    api = ParkingApi(service.engine, committer=service.committer, feed=feed, travel_times=travel_times, sharing=sharing)
    parking_pb2_grpc.add_ParkingServiceServicer_to_server(api, server)
    retention = Retention(
        service="parking",
        dataset=DATASET,
        expire=usecases.expire_history,
        book=service.agreements,
        audit=service.audit,
        committer=service.committer,
        every_s=service.settings.retention_check_seconds,
        leads=service.leads,  # leader-only: one replica deletes and audits
    )
    retention.start()
    history = service.schedule("history-retention", history_retention.housekeeping(service.settings))
    return [feed.stop, travel_times.close, retention.stop, history]


SPEC = ServiceSpec(
    name="parking",
    full_names=[parking_pb2.DESCRIPTOR.services_by_name["ParkingService"].full_name],
    tables=TABLES,
    outbox=ParkingOutbox,
    streams=(PARKING,),
    mount=_mount,
)
