"""The durable consumer of WHATIF_RESULTS: run results from the workers and observations from the
twin. A message is acknowledged only after what it changed is committed, so a restart resumes
where the last commit ended; a run already stored is dropped (redeliveries change nothing)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from contract.bus import WHATIF_RESULTS
from services.common.bus import Bus
from services.common.clock import utcnow
from services.common.db import GroupCommitter
from services.whatif import usecases

log = logging.getLogger(__name__)

DURABLE = "whatif-results"
BATCH = 64
FETCH_WAIT_S = 0.25


class ResultsConsumer:
    def __init__(self, bus: Bus, *, committer: GroupCommitter, reports_dir: Path | None) -> None:
        self._bus = bus
        self._committer = committer
        self._reports_dir = reports_dir
        self._running = False
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.EXPLICIT, max_ack_pending=1000, ack_wait=60
        )
        self._subscription = await self._bus.js.pull_subscribe(
            WHATIF_RESULTS.subjects, durable=DURABLE, stream=WHATIF_RESULTS.name, config=config
        )
        self._running = True
        self._task = asyncio.create_task(self._loop(), name="consume-whatif-results")

    async def stop(self) -> None:
        self._running = False
        if self._task is not None:
            await self._task
            self._task = None
            await self._subscription.unsubscribe()

    async def _loop(self) -> None:
        while self._running:
            try:
                messages = await self._subscription.fetch(BATCH, timeout=FETCH_WAIT_S)
            except TimeoutError:
                continue
            except Exception as exc:
                log.warning("fetch from %s failed: %s", WHATIF_RESULTS.name, exc)
                await asyncio.sleep(0.5)
                continue
            for message in messages:
                await self._process(message)

    async def _process(self, message: Msg) -> None:
        item = usecases.Incoming(
            subject=message.subject, data=message.data, now=utcnow(), reports_dir=self._reports_dir
        )
        try:
            await self._committer.submit(usecases.record_results, item)
        except Exception:
            log.exception("could not record %s; it will be redelivered", message.subject)
            with contextlib.suppress(Exception):
                await message.nak(delay=1)
            return
        with contextlib.suppress(Exception):
            await message.ack()
