"""WhatIfService wiring: its tables, streams, results consumer and servicer, on the shared runtime."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from almere.whatif.v1 import whatif_pb2, whatif_pb2_grpc
from grpc import aio

from contract.bus import DETECTORS, WHATIF_RESULTS, WHATIF_RUNS
from services.common.clock import utcnow
from services.common.consumer import CommittingConsumer
from services.common.runtime import Service, ServiceSpec
from services.whatif import usecases
from services.whatif.api import WhatIfApi
from services.whatif.models import TABLES, WhatIfOutbox


async def _mount(service: Service, server: aio.Server) -> list[Callable[[], Awaitable[None]]]:
    settings = service.settings
    api = WhatIfApi(service.engine, committer=service.committer, bus=service.bus, settings=settings)
    whatif_pb2_grpc.add_WhatIfServiceServicer_to_server(api, server)
    reports_dir = settings.whatif_reports_dir or settings.gateway_reports_dir
    # Run results from the workers and observations from the twin; a run already stored is dropped.
    consumer = CommittingConsumer(
        service.bus,
        stream=WHATIF_RESULTS,
        durable="whatif-results",
        committer=service.committer,
        handler=usecases.record_results,
        item=lambda message: usecases.Incoming(
            subject=message.subject, data=message.data, now=utcnow(), reports_dir=reports_dir
        ),
    )
    await consumer.start()
    return [consumer.stop]


SPEC = ServiceSpec(
    name="whatif",
    full_names=[whatif_pb2.DESCRIPTOR.services_by_name["WhatIfService"].full_name],
    tables=TABLES,
    outbox=WhatIfOutbox,
    streams=(WHATIF_RUNS,),
    # DETECTORS: the live picture's last measurement per loop.
    consumes=(WHATIF_RESULTS, DETECTORS),
    mount=_mount,
)
