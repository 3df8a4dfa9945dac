"""Fans a service's events from the bus out to its Watch calls in this process.

Watches read the bus, not local commits, so a watcher on one replica sees changes made on any other.
The feed is subscribed only while somebody watches, so a busy writer does not decode its own events.

Every Watch RPC makes the same promise (stated in the protos): a snapshot of the state at one
moment, then each change committed after that moment, once, in version order per entity. The bus
delivers a change some time after its commit (the outbox relay publishes it), so a change committed
before the snapshot can arrive after it; `watch_from` drops it by the version the snapshot saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from google.protobuf.message import Message
from nats.aio.msg import Msg

from contract.bus import Stream
from services.common.bus import Bus
from services.common.errors import ResourceExhausted, Unavailable
from services.common.observability import WATCH_LAG

Change = tuple[str, Any]  # (event name, decoded event)
Item = TypeVar("Item")


@dataclass(frozen=True, kw_only=True)
class WatchLimits:
    """How many changes a Watch may have waiting for its reader, and how long it may last."""

    queue_size: int = 1000
    max_seconds: float | None = None


# The limits of the Watch being served: the server interceptor sets them per call from Settings.
watch_limits: contextvars.ContextVar[WatchLimits] = contextvars.ContextVar("watch_limits")
DEFAULT_WATCH_LIMITS = WatchLimits()


@dataclass(frozen=True, kw_only=True)
class Snapshot(Generic[Item]):
    """What a Watch sends first, read in one statement, and the version of every entity at that
    moment, also of those it does not send (a closed incident, a facility outside the area)."""

    items: list[Item]
    versions: dict[str, int]


class Watcher:
    """The changes waiting for one Watch. A reader that falls `queue_size` behind is not sent the
    rest with a gap: its next read fails, and it watches again from a fresh snapshot."""

    def __init__(self, limits: WatchLimits) -> None:
        self.limits = limits
        self.queue: asyncio.Queue[Change] = asyncio.Queue(limits.queue_size)
        self.overflowed = False
        loop = asyncio.get_running_loop()
        self._ends_at = None if limits.max_seconds is None else loop.time() + limits.max_seconds

    def offer(self, change: Change) -> None:
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(change)
        except asyncio.QueueFull:
            self.overflowed = True

    async def next(self) -> Change:
        if self.overflowed:
            raise ResourceExhausted(
                f"this watch fell more than {self.limits.queue_size} changes behind (the reader is too slow); "
                "watch again to resync from a fresh snapshot"
            )
        if self._ends_at is None:
            return await self.queue.get()
        if asyncio.get_running_loop().time() < self._ends_at:  # checked first: a busy queue never waits
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(self._ends_at):
                    return await self.queue.get()
        raise Unavailable(f"watch lifetime of {self.limits.max_seconds:g} s reached; watch again for a fresh snapshot")


class EventFeed:
    """Subscribes to the stream's `<prefix>.<event>.<id>` and hands decoded events of the given names to watchers."""

    def __init__(self, bus: Bus, stream: Stream, decoders: dict[str, type[Message]]) -> None:
        self._bus = bus
        self._stream = stream
        self._decoders = decoders
        self._watchers: set[Watcher] = set()
        self._subscription: Any = None
        self._lock = asyncio.Lock()

    async def stop(self) -> None:
        async with self._lock:
            await self._unsubscribe()

    async def _unsubscribe(self) -> None:
        if self._subscription is not None:
            with contextlib.suppress(Exception):
                await self._subscription.unsubscribe()
            self._subscription = None

    async def _on_message(self, msg: Msg) -> None:
        if not self._watchers:
            return
        name = self._stream.event_of(msg.subject)
        decoder = self._decoders.get(name)
        if decoder is None:
            return
        change = (name, decoder.FromString(msg.data))
        for watcher in self._watchers:
            watcher.offer(change)
        WATCH_LAG.labels(self._stream.prefix).set(max(w.queue.qsize() for w in self._watchers))

    @contextlib.asynccontextmanager
    async def watch(self) -> AsyncIterator[Watcher]:
        """A watcher receiving every change from the moment this returns, within the limits of the call."""
        watcher = Watcher(watch_limits.get(DEFAULT_WATCH_LIMITS))
        async with self._lock:
            if self._subscription is None:
                self._subscription = await self._bus.nc.subscribe(f"{self._stream.prefix}.*.*", cb=self._on_message)
                await self._bus.nc.flush()  # the server has the subscription before the caller reads its snapshot
            self._watchers.add(watcher)
        try:
            yield watcher
        finally:
            async with self._lock:
                self._watchers.discard(watcher)
                if not self._watchers:
                    await self._unsubscribe()

    @contextlib.asynccontextmanager
    async def watch_from(
        self, read: Callable[[], Snapshot[Item]], version_of: Callable[[Change], tuple[str, int]]
    ) -> AsyncIterator[tuple[Snapshot[Item], AsyncIterator[Change]]]:
        """The snapshot `read` returns (in a thread), and the changes newer than it.

        Subscribed before reading, so no change falls between the two; `version_of` names a change's
        entity and its version after the change, and a change no newer than what the snapshot or an
        earlier change showed is dropped.
        """
        async with self.watch() as watcher:
            snapshot = await asyncio.to_thread(read)
            versions = dict(snapshot.versions)

            async def changes() -> AsyncIterator[Change]:
                while True:
                    change = await watcher.next()
                    entity, version = version_of(change)
                    if version <= versions.get(entity, 0):
                        continue
                    versions[entity] = version
                    yield change

            yield snapshot, changes()


async def with_ticks(
    changes: AsyncIterator[Change], wait_s: Callable[[], float | None]
) -> AsyncIterator[Change | None]:
    """`changes`, and None whenever `wait_s()` seconds pass without one (None: wait without end); a
    change being awaited is never lost to a tick."""
    pending = asyncio.ensure_future(anext(changes))
    try:
        while True:
            done, _ = await asyncio.wait({pending}, timeout=wait_s())
            if not done:
                yield None
                continue
            try:
                change = pending.result()
            except StopAsyncIteration:
                return
            yield change
            pending = asyncio.ensure_future(anext(changes))
    finally:
        pending.cancel()
