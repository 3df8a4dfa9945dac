"""PartnerService wiring: its tables, stream and servicer, on the shared runtime."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from almere.partners.v1 import partners_pb2, partners_pb2_grpc
from grpc import aio

from contract.bus import PARTNER_ACCESS, PARTNERS
from services.common.consumer import CommittingConsumer
from services.common.runtime import Service, ServiceSpec
from services.partners import usecases
from services.partners.api import PartnerApi
from services.partners.models import TABLES, PartnersOutbox


async def _mount(service: Service, server: aio.Server) -> list[Callable[[], Awaitable[None]]]:
    partners_pb2_grpc.add_PartnerServiceServicer_to_server(
        PartnerApi(service.engine, committer=service.committer, governance=service.governance), server
    )
    # The services' records of who read partners' data: each partner's audit.
    audit = CommittingConsumer(
        service.bus,
        stream=PARTNER_ACCESS,
        durable="partners-audit",
        committer=service.committer,
        handler=usecases.record_reads,
        item=lambda message: usecases.DataRead(sequence=message.metadata.sequence.stream, data=message.data),
    )
    await audit.start()
    return [audit.stop]


SPEC = ServiceSpec(
    name="partners",
    full_names=[partners_pb2.DESCRIPTOR.services_by_name["PartnerService"].full_name],
    tables=TABLES,
    outbox=PartnersOutbox,
    streams=(PARTNERS, PARTNER_ACCESS),
    mount=_mount,
)
