"""ParkingService wiring: its tables, streams and servicer, mounted on the shared runtime."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from almere.parking.v1 import parking_pb2, parking_pb2_grpc
from grpc import aio

from contract.bus import PARKING
from services.common.retention import Retention
from services.common.runtime import Service, ServiceSpec
from services.parking import forecast, history_retention, usecases
from services.parking.api import ParkingApi
from services.parking.feed import occupancy_feed
from services.parking.forecast_bus import ForecastPublisher
from services.parking.models import TABLES, ParkingOutbox
from services.parking.sharing import DATASET, Sharing
from services.parking.travel_times import TravelTimes


async def _mount(service: Service, server: aio.Server) -> list[Callable[[], Awaitable[None]]]:
    feed = occupancy_feed(service.bus)
    travel_times = TravelTimes(service.settings)
    sharing = Sharing(governance=service.governance, engine=service.engine)
    forecasts = forecast.Forecasts(service.engine)  # learned models shared by the calls and the bus
    api = ParkingApi(
        service.engine,
        committer=service.committer,
        feed=feed,
        travel_times=travel_times,
        sharing=sharing,
        forecasts=forecasts,
    )
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
    publisher = ForecastPublisher(
        engine=service.engine,
        forecasts=forecasts,
        committer=service.committer,
        bus=sharing.bus_access,
        leads=service.leads,  # leader-only: one replica publishes
        poll_s=service.settings.scheduler_poll_seconds,
    )
    publisher.start()
    return [feed.stop, travel_times.close, retention.stop, history, publisher.stop]


SPEC = ServiceSpec(
    name="parking",
    full_names=[parking_pb2.DESCRIPTOR.services_by_name["ParkingService"].full_name],
    tables=TABLES,
    outbox=ParkingOutbox,
    streams=(PARKING,),
    mount=_mount,
)
