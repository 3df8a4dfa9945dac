"""The fault-injection harness: load with a ledger of every acknowledged write, a durable JetStream
witness of what reached the bus, and the figures of one fault.

A fault test starts a stack (conftest.py `launch_stack`), puts it under load
(`incidents_under_load`), runs `ChaosRun.fault` with the means of breaking and mending something
(faults.py), and asserts `Figures.assert_clean`: nothing acknowledged lost in the database or on the
bus, nothing delivered twice, recovery within the bound; and that every refusal was a clear status.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from dataclasses import dataclass, field

import grpc
import nats
from almere.incidents.v1 import events_pb2
from almere.incidents.v1 import incidents_pb2 as ipb
from almere.type.v1 import geo_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from nats.js.api import ConsumerConfig, DeliverPolicy

from apps.stack import Stack
from tests.integration.helpers import Incidents

# Starts or ends a fault: at once, or returning what to await (blocking work: asyncio.to_thread).
Action = Callable[[], object]
RING_W_N = geo_pb2.LatLng(latitude=52.3742, longitude=5.2117)  # on centrum-mini's ring road


@dataclass(frozen=True, kw_only=True)
class Refusal:
    code: grpc.StatusCode
    details: str
    at: float


@dataclass(kw_only=True)
class Ledger:
    """Every write the clients got OK for (key -> stored name, when), and every refusal."""

    acked: dict[str, str] = field(default_factory=dict)
    acked_at: dict[str, float] = field(default_factory=dict)
    refused: list[Refusal] = field(default_factory=list)

    def ack(self, key: str, name: str) -> None:
        self.acked[key] = name
        self.acked_at[key] = time.monotonic()

    def names(self, *, before: float = float("inf")) -> set[str]:
        return {self.acked[k] for k, at in self.acked_at.items() if at <= before}

    def acked_after(self, moment: float, *, at_least: int = 1) -> bool:
        return sum(at > moment for at in self.acked_at.values()) >= at_least


async def run_load(
    write: Callable[[str], Awaitable[str]], ledger: Ledger, stop: asyncio.Event, *, writers: int, pause_s: float
) -> None:
    """`writers` clients each writing one request after another (key w<i>-<n>) until `stop`; a write
    that fails is recorded with its status and not retried (its key is never acknowledged)."""

    async def writer(i: int) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            key = f"w{i}-{n}"
            try:
                ledger.ack(key, await write(key))
            except grpc.aio.AioRpcError as err:
                ledger.refused.append(Refusal(code=err.code(), details=err.details() or "", at=time.monotonic()))
                await asyncio.sleep(0.1)  # a refused client backs off a little, as a real one would
            await asyncio.sleep(pause_s)

    await asyncio.gather(*(writer(i) for i in range(writers)))


def incident_writer(client: Incidents, *, timeout_s: float = 20.0) -> Callable[[str], Awaitable[str]]:
    """ReportIncident as the police with the key as request id; returns the incident's name. The
    deadline is far above a loaded machine's latency: a refusal must be the service's, not impatience."""

    async def write(key: str) -> str:
        incident = ipb.Incident(type=ipb.INCIDENT_TYPE_COLLISION, title="Chaos", location=RING_W_N)
        request = ipb.ReportIncidentRequest(request_id=key, incident=incident)
        reply = await client.as_("police").ReportIncident(request, timeout=timeout_s)
        return str(reply.incident.name)

    return write


async def stored_incidents(client: Incidents) -> set[str]:
    """Every incident's name, read back page by page through ListIncidents."""
    names: set[str] = set()
    token = ""
    while True:
        page = await client.as_("police").ListIncidents(ipb.ListIncidentsRequest(page_size=1000, page_token=token))
        names.update(i.name for i in page.incidents)
        token = page.next_page_token
        if not token:
            return names


@dataclass(kw_only=True)
class BusWitness:
    """A durable JetStream consumer counting every delivery by Nats-Msg-Id and by entity name."""

    by_msg_id: Counter[str] = field(default_factory=Counter)
    by_name: Counter[str] = field(default_factory=Counter)

    @classmethod
    @contextlib.asynccontextmanager
    async def following(
        cls, url: str, options: dict[str, str], *, stream: str, subject: str
    ) -> AsyncIterator[BusWitness]:
        witness = cls()
        nc = await nats.connect(url, **options)
        try:
            js = nc.jetstream(timeout=10)
            config = ConsumerConfig(deliver_policy=DeliverPolicy.ALL, ack_wait=30)
            sub = await js.pull_subscribe(subject, durable="chaos-witness", stream=stream, config=config)
            task = asyncio.create_task(witness._follow(sub))
            try:
                yield witness
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        finally:
            await nc.close()

    async def _follow(self, sub: nats.js.JetStreamContext.PullSubscription) -> None:
        while True:
            try:
                batch = await sub.fetch(500, timeout=0.5)
            except TimeoutError:  # nats raises its own subclass or asyncio's
                continue
            for msg in batch:
                self.by_msg_id[(msg.headers or {}).get("Nats-Msg-Id", "")] += 1
                self.by_name[events_pb2.IncidentEvent.FromString(msg.data).incident.name] += 1
                await msg.ack()

    def has(self, names: Collection[str]) -> bool:
        return all(n in self.by_name for n in names)

    def duplicates(self) -> int:
        """Deliveries beyond the first, of one message id or of one entity's event."""
        return sum(c - 1 for c in self.by_msg_id.values()) + sum(c - 1 for c in self.by_name.values())


async def healthy(channel: grpc.aio.Channel) -> bool:
    try:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
    except grpc.aio.AioRpcError:
        return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


@dataclass(kw_only=True)
class Figures:
    """What one fault did to the acknowledged writes, and how long the service took to recover."""

    fault: str
    acknowledged: int
    stored: int
    delivered: int
    duplicates: int
    lost_stored: int
    lost_on_bus: int
    refused: Counter[str]
    recovery_s: float
    during: int = 0  # writes acknowledged while the fault lasted
    held_back: int = 0  # of those, how many were not on the bus when the fault ended

    def line(self) -> str:
        refusals = ", ".join(f"{code} {n}" for code, n in sorted(self.refused.items())) or "none"
        return (
            f"{self.fault}: acknowledged {self.acknowledged} / stored {self.stored} / delivered {self.delivered}"
            f" / duplicates {self.duplicates} / recovery {self.recovery_s:.1f} s"
            f" (during the fault: {self.during} acknowledged, {self.held_back} held back from the bus;"
            f" refused: {refusals})"
        )

    def assert_clean(self, *, max_recovery_s: float) -> None:
        assert self.lost_stored == 0, f"{self.lost_stored} acknowledged writes are not stored: {self.line()}"
        assert self.lost_on_bus == 0, f"{self.lost_on_bus} acknowledged writes never reached the bus: {self.line()}"
        assert self.duplicates == 0, f"{self.duplicates} events delivered twice: {self.line()}"
        assert self.recovery_s <= max_recovery_s, f"recovery took over {max_recovery_s} s: {self.line()}"


@dataclass(kw_only=True)
class ChaosRun:
    """Incident reports under load against a running service, witnessed on the bus."""

    channel: grpc.aio.Channel
    client: Incidents
    witness: BusWitness
    writers: int = 4
    pause_s: float = 0.02
    ledger: Ledger = field(default_factory=Ledger)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _load: asyncio.Task[None] | None = None

    def start_load(self) -> None:
        write = incident_writer(self.client)
        self._load = asyncio.create_task(
            run_load(write, self.ledger, self._stop, writers=self.writers, pause_s=self.pause_s)
        )

    async def until(self, ready: Callable[[], bool | Awaitable[bool]], *, timeout_s: float, what: str) -> float:
        """Poll `ready` (load keeps running); returns the seconds it took."""
        start = time.monotonic()
        while not await _answer(ready()):
            if self._load and self._load.done():
                self._load.result()  # a writer's own bug surfaces here
            assert time.monotonic() - start < timeout_s, f"{what} not within {timeout_s} s"
            await asyncio.sleep(0.1)
        return time.monotonic() - start

    async def warm_up(self, acknowledged: int = 20) -> None:
        await self.until(lambda: len(self.ledger.acked) >= acknowledged, timeout_s=30, what="first writes")

    async def recovery(self, fault_end: float, *, timeout_s: float = 60) -> float:
        """Seconds from `fault_end` until the service reports SERVING, acknowledges a new write, and
        the bus has every write acknowledged before the fault ended."""
        before = self.ledger.names(before=fault_end)

        async def recovered() -> bool:
            return self.ledger.acked_after(fault_end) and self.witness.has(before) and await healthy(self.channel)

        await self.until(recovered, timeout_s=timeout_s, what="recovery")
        return time.monotonic() - fault_end

    async def fault(self, fault: str, *, start: Action, end: Action, seconds: float) -> Figures:
        """After a warm-up, `start` the fault, keep the load on it for `seconds` (or, when the fault
        refuses writes, for `seconds` after the first refusal), `end` it, and measure."""
        await self.warm_up()
        refused = len(self.ledger.refused)
        await _done(start())
        begun = time.monotonic()
        await asyncio.sleep(seconds)  # the fault itself: the load keeps running against it
        if len(self.ledger.refused) > refused:  # it bit: a full `seconds` from the first refusal
            await asyncio.sleep(max(0.0, self.ledger.refused[refused].at + seconds - time.monotonic()))
        during = self.ledger.names(before=time.monotonic()) - self.ledger.names(before=begun)
        held_back = len(during - self.witness.by_name.keys())
        await _done(end())
        ended = time.monotonic()
        recovery_s = await self.recovery(ended)
        await self.until(lambda: self.ledger.acked_after(ended, at_least=50), timeout_s=30, what="writes after")
        figures = await self.finish(fault, recovery_s=recovery_s)
        figures.during, figures.held_back = len(during), held_back
        print(f"\n{figures.line()}")
        return figures

    async def finish(self, fault: str, *, recovery_s: float, settle_s: float = 30) -> Figures:
        """Stop the load, give the bus `settle_s` to receive what was acknowledged, compare."""
        await self.stop_load()
        acked = set(self.ledger.acked.values())
        with contextlib.suppress(AssertionError):  # what is missing after the wait is counted below
            await self.until(lambda: self.witness.has(acked), timeout_s=settle_s, what="delivery")
        await asyncio.sleep(1)  # a late duplicate would arrive within the consumer's next fetches
        stored = await stored_incidents(self.client)
        return Figures(
            fault=fault,
            acknowledged=len(acked),
            stored=len(stored),
            delivered=len(self.witness.by_name),
            duplicates=self.witness.duplicates(),
            lost_stored=len(acked - stored),
            lost_on_bus=len(acked - self.witness.by_name.keys()),
            refused=Counter(r.code.name for r in self.ledger.refused),
            recovery_s=recovery_s,
        )

    async def stop_load(self) -> None:
        self._stop.set()
        if self._load:
            await self._load


async def _answer(value: bool | Awaitable[bool]) -> bool:
    return await value if inspect.isawaitable(value) else value


async def _done(value: object) -> None:
    if inspect.isawaitable(value):
        await value


@contextlib.asynccontextmanager
async def incidents_under_load(
    *, stack: Stack, bus_url: str, bus_options: dict[str, str], writers: int = 4
) -> AsyncIterator[ChaosRun]:
    """The stack's incident service reported to by `writers` police clients (the stack's development
    caller), witnessed on the bus at `bus_url` (straight, not through any proxy of the test) by the
    read-only observer."""
    subject = "almere.incidents.v1.incident_reported.>"
    async with (
        grpc.aio.insecure_channel(stack.endpoints["incidents"]) as channel,
        BusWitness.following(bus_url, bus_options, stream="INCIDENTS", subject=subject) as witness,
    ):
        client = Incidents(channel, {"police": stack.credentials["police"]})
        run = ChaosRun(channel=channel, client=client, witness=witness, writers=writers)
        run.start_load()
        try:
            yield run
        finally:
            await run.stop_load()
