"""`almere serve whatif-worker`: the what-if runs' worker process (a pod of the chart's whatifWorkers,
or one process beside the what-if service under `almere up`), configured like the services."""

from __future__ import annotations

import asyncio
import logging
import os

from apps.whatif.worker import work
from services.common.bus import connect_options
from services.common.config import Settings
from services.common.observability import configure_logging
from services.common.server import stop_on_signals

log = logging.getLogger(__name__)
USER = "whatif-worker"


def run_worker(settings: Settings) -> int:
    configure_logging(settings)
    processes = settings.whatif_worker_processes or os.cpu_count() or 1

    async def main() -> None:
        stop = stop_on_signals()
        log.info("what-if worker: %d SUMO processes at once", processes)
        await work(
            connect_options=connect_options(settings, USER),
            processes=processes,
            stop=stop,
            root=settings.data_dir / "whatif-worker",  # the scenarios it built stay for the next runs
        )

    asyncio.run(main())
    return 0
