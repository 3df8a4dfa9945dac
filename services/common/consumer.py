"""A durable JetStream consumer whose messages become group-commit items. A message is acknowledged
only after what it changed is committed, so a restart resumes where the last commit ended; the
handler makes redeliveries change nothing."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from contract.bus import Stream
from services.common.bus import Bus
from services.common.db import BatchHandler, GroupCommitter

log = logging.getLogger(__name__)

BATCH = 64
FETCH_WAIT_S = 0.25


class CommittingConsumer:
    def __init__(
        self,
        bus: Bus,
        *,
        stream: Stream,
        durable: str,
        committer: GroupCommitter,
        handler: BatchHandler,
        item: Callable[[Msg], Any],
    ) -> None:
        self._bus = bus
        self._stream = stream
        self._durable = durable
        self._committer = committer
        self._handler = handler
        self._item = item
        self._running = False
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.EXPLICIT, max_ack_pending=1000, ack_wait=60
        )
        self._subscription = await self._bus.js.pull_subscribe(
            self._stream.subjects, durable=self._durable, stream=self._stream.name, config=config
        )
        self._running = True
        self._task = asyncio.create_task(self._loop(), name=f"consume-{self._durable}")

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
                log.warning("fetch from %s failed: %s", self._stream.name, exc)
                await asyncio.sleep(0.5)
                continue
            for message in messages:
                await self._process(message)

    async def _process(self, message: Msg) -> None:
        try:
            await self._committer.submit(self._handler, self._item(message))
        except Exception:
            log.exception("could not record %s; it will be redelivered", message.subject)
            with contextlib.suppress(Exception):
                await message.nak(delay=1)
            return
        with contextlib.suppress(Exception):
            await message.ack()
