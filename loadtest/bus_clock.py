"""A stopwatch on the bus for the incident-latency benchmarks: when each incident's activation and the
first route advice it caused were seen on NATS (wall clock), so the time from a police report to a
rerouted SUMO vehicle can be split into its hops."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping
from typing import Any

import nats
from almere.incidents.v1 import events_pb2 as ievents
from almere.incidents.v1 import incidents_pb2 as ipb
from almere.optimizer.v1 import decisions_pb2
from nats.aio.msg import Msg

from contract import bus
from libs.nats_client import servers


class BusClock:
    """Listens in a thread of its own (core subscriptions: what is published from now on)."""

    def __init__(self, url: str, options: Mapping[str, Any]) -> None:
        self._active: dict[str, float] = {}  # incident id -> its ACTIVE event seen
        self._advised: dict[str, float] = {}  # incident id -> the first route advice it caused seen
        self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        self._ready = threading.Event()
        running = self._run(url, options)
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(running,), daemon=True)
        self._thread.start()
        if not self._ready.wait(15):
            raise TimeoutError(f"the bus clock got no answer from NATS at {url}")

    async def _run(self, url: str, options: Mapping[str, Any]) -> None:
        nc = await nats.connect(servers(url), **options)

        async def incident(msg: Msg) -> None:
            event = ievents.IncidentEvent.FromString(msg.data)
            if event.incident.state == ipb.INCIDENT_STATE_ACTIVE:
                self._active.setdefault(event.incident_id, time.time())

        async def advice(msg: Msg) -> None:
            cause = decisions_pb2.Decision.FromString(msg.data).trigger.get("incident", "")
            self._advised.setdefault(cause.removeprefix("incidents/"), time.time())

        await nc.subscribe(bus.INCIDENTS.every(bus.INCIDENT_STATE_CHANGED), cb=incident)
        await nc.subscribe(bus.OPTIMIZER.every(bus.ROUTE_ADVICE), cb=advice)
        await nc.flush()
        self._ready.set()
        await self._stop.wait()
        await nc.close()

    def times(self, incident_id: str) -> dict[str, float]:
        """The marks seen for one incident: active_on_bus, decision_on_bus (wall-clock seconds)."""
        marks = {"active_on_bus": self._active.get(incident_id), "decision_on_bus": self._advised.get(incident_id)}
        return {name: at for name, at in marks.items() if at is not None}

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
