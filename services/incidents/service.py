"""IncidentService wiring: its tables, streams and servicer, mounted on the shared runtime."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from almere.incidents.v1 import incidents_pb2, incidents_pb2_grpc
from almere.partners.v1 import partners_pb2
from grpc import aio

from contract.bus import INCIDENTS
from services.common.network import load_network
from services.common.retention import Retention
from services.common.runtime import Service, ServiceSpec
from services.incidents import usecases
from services.incidents.api import IncidentApi
from services.incidents.feed import incident_feed
from services.incidents.models import TABLES, IncidentsOutbox


async def _mount(service: Service, server: aio.Server) -> list[Callable[[], Awaitable[None]]]:
    path = service.settings.network_file
    network = load_network(path.resolve()) if path else None
    feed = incident_feed(service.bus)
    api = IncidentApi(
        service.engine, committer=service.committer, feed=feed, network=network, governance=service.governance
    )
    incidents_pb2_grpc.add_IncidentServiceServicer_to_server(api, server)
    retention = Retention(
        service="incidents",
        dataset=partners_pb2.DATASET_INCIDENT_REPORTS,
        expire=usecases.expire_reports,
        book=service.agreements,
        audit=service.audit,
        committer=service.committer,
        every_s=service.settings.retention_check_seconds,
        leads=service.leads,  # leader-only: one replica deletes and audits
    )
    retention.start()
    return [service.schedule("planned-events", usecases.advance_schedule), feed.stop, retention.stop]


SPEC = ServiceSpec(
    name="incidents",
    full_names=[incidents_pb2.DESCRIPTOR.services_by_name["IncidentService"].full_name],
    tables=TABLES,
    outbox=IncidentsOutbox,
    streams=(INCIDENTS,),
    mount=_mount,
)
