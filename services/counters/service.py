"""CounterService wiring: its tables, stream and servicer, and the retention of partners' counts, on
the shared runtime."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from almere.counters.v1 import counters_pb2, counters_pb2_grpc
from grpc import aio

from contract.bus import COUNTS
from services.common.retention import Retention
from services.common.runtime import Service, ServiceSpec
from services.counters import usecases
from services.counters.api import DATASET, CounterApi
from services.counters.models import TABLES, CountersOutbox


async def _mount(service: Service, server: aio.Server) -> list[Callable[[], Awaitable[None]]]:
    api = CounterApi(service.engine, committer=service.committer, governance=service.governance)
    counters_pb2_grpc.add_CounterServiceServicer_to_server(api, server)
    retention = Retention(
        service="counters",
        dataset=DATASET,
        expire=usecases.expire_counts,
        book=service.agreements,
        audit=service.audit,
        committer=service.committer,
        every_s=service.settings.retention_check_seconds,
        leads=service.leads,  # leader-only: one replica deletes and audits
    )
    retention.start()
    return [retention.stop]


SPEC = ServiceSpec(
    name="counters",
    full_names=[counters_pb2.DESCRIPTOR.services_by_name["CounterService"].full_name],
    tables=TABLES,
    outbox=CountersOutbox,
    streams=(COUNTS,),
    mount=_mount,
)
