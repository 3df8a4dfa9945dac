"""Durable pull consumers on the streams the optimizer learns from. A message is acknowledged only
after what it changed (and any decision it caused) is committed, so a restart resumes where the
last commit ended: nothing lost, and versions already seen are dropped, so nothing repeated.

Each replica consumes every message under durable names of its own (`optimizer-parking-<replica>`):
its decisions come from its whole picture in memory, which a durable shared by the replicas would
split between them (each message to one). Versions make the shared tables take each change once,
whichever replica writes it first. A replica gone for good leaves its consumers behind; JetStream
deletes them after REPLICA_GONE_S without a fetch (a replica back later replays the streams, and
drops the versions its tables already hold)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from services.common.bus import Bus
from services.optimizer.api import SerialCommitter
from services.optimizer.usecases import Writes

log = logging.getLogger(__name__)

BATCH = 256  # messages committed together at most
FETCH_WAIT_S = 0.25  # how long a fetch waits for a message before the loop checks it should stop
REPLICA_GONE_S = 3600.0

# Takes a message, returns what to persist (empty for soft state such as travel times).
Handler = Callable[[Msg], Writes]


@dataclass(frozen=True, kw_only=True)
class Source:
    stream: str
    subject: str
    durable: str  # on a service, the source's name followed by the replica's (service.py)
    # Old measurements are worthless; old facilities and incidents are the state.
    only_new: bool = False


class DurableConsumer:
    def __init__(self, bus: Bus, source: Source, *, handle: Handler, serial_committer: SerialCommitter) -> None:
        self._bus = bus
        self.source = source
        self._handle = handle
        self._serial_committer = serial_committer
        self._running = False
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.NEW if self.source.only_new else DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            max_ack_pending=10_000,
            ack_wait=30,
            inactive_threshold=REPLICA_GONE_S,
        )
        self._subscription = await self._bus.js.pull_subscribe(
            self.source.subject, durable=self.source.durable, stream=self.source.stream, config=config
        )
        self._running = True
        self._task = asyncio.create_task(self._loop(), name=f"consume-{self.source.durable}")

    async def stop(self) -> None:
        """Finish the batch in hand (commit and ack), then stop; unacknowledged messages stay pending."""
        self._running = False
        if self._task is not None:
            await self._task
            self._task = None
            # A pull subscription left open keeps the connection's drain waiting for its timeout.
            await self._subscription.unsubscribe()

    async def _loop(self) -> None:
        while self._running:
            try:
                messages = await self._next_batch()
            except TimeoutError:  # nats' own and asyncio's: nothing waiting
                continue
            except Exception as exc:  # reconnecting: try again shortly
                log.warning("fetch from %s failed: %s", self.source.stream, exc)
                await asyncio.sleep(0.5)
                continue
            await self._process(messages)

    async def _next_batch(self) -> list[Msg]:
        """The next message the moment it arrives, with whatever is waiting behind it. A single
        fetch of a whole batch would hold a lone message (an incident report) until its window
        closes, up to FETCH_WAIT_S; a batch of the messages already pending returns at once."""
        messages = await self._subscription.fetch(1, timeout=FETCH_WAIT_S)
        pending = messages[-1].metadata.num_pending
        if pending:
            with contextlib.suppress(TimeoutError):  # taken meanwhile: the one in hand is a batch too
                messages += await self._subscription.fetch(min(pending, BATCH - 1), timeout=FETCH_WAIT_S)
        return messages

    async def _process(self, messages: list[Msg]) -> None:
        def change() -> list[Writes]:
            writes = []
            for message in messages:
                try:
                    writes.append(self._handle(message))
                except Exception:  # a message that cannot be read would come back for ever: drop it
                    log.exception("dropping unreadable message on %s", message.subject)
            return writes

        try:
            await self._serial_committer.change(change)
        except Exception:
            log.warning("%d messages from %s will be redelivered", len(messages), self.source.stream)
            await self._settle(messages, ack=False)
            return
        await self._settle(messages, ack=True)

    async def _settle(self, messages: list[Msg], ack: bool) -> None:
        """Ack (or ask again for) every message; a connection lost meanwhile is not this loop's end:
        unacknowledged messages come back after ack_wait."""
        try:
            for message in messages:
                await (message.ack() if ack else message.nak(delay=1))
        except Exception as exc:
            log.warning("could not settle messages on %s: %s", self.source.stream, exc)
