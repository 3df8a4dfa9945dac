"""Fans the parking events of JetStream out to this process's WatchOccupancy calls.

Watches read the bus, not local commits, so a watcher on one replica sees changes made on any other.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from almere.parking.v1 import events_pb2
from google.protobuf.message import Message
from nats.aio.msg import Msg

from services.common.bus import Bus
from services.common.errors import ResourceExhausted
from services.parking import events

Change = tuple[str, Any]  # (event name, decoded event)
WATCHER_QUEUE = 10_000

_DECODERS: dict[str, type[Message]] = {
    events.OCCUPANCY_CHANGED: events_pb2.OccupancyChangedEvent,
    events.FACILITY_CREATED: events_pb2.FacilityChangedEvent,
    events.FACILITY_UPDATED: events_pb2.FacilityChangedEvent,
}


class Watcher:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[Change] = asyncio.Queue(WATCHER_QUEUE)
        self.overflowed = False

    def offer(self, change: Change) -> None:
        try:
            self.queue.put_nowait(change)
        except asyncio.QueueFull:
            self.overflowed = True

    async def next(self) -> Change:
        if self.overflowed:
            raise ResourceExhausted(f"watcher fell more than {WATCHER_QUEUE} changes behind; watch again")
        return await self.queue.get()


class OccupancyFeed:
    """Subscribed to the bus only while somebody watches, so a busy writer does not decode its own events."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus
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
        name = msg.subject.split(".")[3]
        decoder = _DECODERS.get(name)
        if decoder is None:
            return
        change = (name, decoder.FromString(msg.data))
        for watcher in self._watchers:
            watcher.offer(change)

    @contextlib.asynccontextmanager
    async def watch(self) -> AsyncIterator[Watcher]:
        """A watcher receiving every change from the moment this returns."""
        watcher = Watcher()
        async with self._lock:
            if self._subscription is None:
                self._subscription = await self._bus.nc.subscribe(f"{events.SUBJECT_PREFIX}.*.*", cb=self._on_message)
                await self._bus.nc.flush()  # the server has the subscription before the caller reads its snapshot
            self._watchers.add(watcher)
        try:
            yield watcher
        finally:
            async with self._lock:
                self._watchers.discard(watcher)
                if not self._watchers:
                    await self._unsubscribe()
