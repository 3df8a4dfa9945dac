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
import itertools
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field

import grpc
import nats
import nats.errors
from almere.incidents.v1 import events_pb2
from almere.incidents.v1 import incidents_pb2 as ipb
from almere.type.v1 import geo_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from nats.js.api import ConsumerConfig, DeliverPolicy

from apps.stack import Stack
from libs.nats_client import servers
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

    def names(self, *, before: float = float("inf"), after: float = float("-inf")) -> set[str]:
        return {self.acked[k] for k, at in self.acked_at.items() if after < at <= before}

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


def incident_writer(clients: Sequence[Incidents], *, timeout_s: float = 20.0) -> Callable[[str], Awaitable[str]]:
    """ReportIncident as the police with the key as request id, to the replicas in turn; returns the
    incident's name. A replica answering UNAVAILABLE (gone, or without its database) passes the same
    request on to the next, as a load balancer would (the request id makes the retry safe); the last
    one's answer stands. The deadline is far above a loaded machine's latency: a refusal must be the
    service's, not impatience."""
    turns = itertools.count()

    async def report(client: Incidents, request: ipb.ReportIncidentRequest) -> str:
        reply = await client.as_("police").ReportIncident(request, timeout=timeout_s)
        return str(reply.incident.name)

    async def write(key: str) -> str:
        incident = ipb.Incident(type=ipb.INCIDENT_TYPE_COLLISION, title="Chaos", location=RING_W_N)
        request = ipb.ReportIncidentRequest(request_id=key, incident=incident)
        first = next(turns)
        order = [clients[(first + i) % len(clients)] for i in range(len(clients))]
        for client in order[:-1]:
            try:
                return await report(client, request)
            except grpc.aio.AioRpcError as err:
                if err.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
        return await report(order[-1], request)

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
    """A durable JetStream consumer counting every message by Nats-Msg-Id and by entity name. A
    message delivered again under its stream sequence (our acknowledgement lost to a NATS node's
    death) is the consumer's at-least-once, not a second event: counted as `redelivered` only."""

    by_msg_id: Counter[str] = field(default_factory=Counter)
    by_name: Counter[str] = field(default_factory=Counter)
    redelivered: int = 0
    _sequences: set[int] = field(default_factory=set)

    @classmethod
    @contextlib.asynccontextmanager
    async def following(
        cls, url: str, options: dict[str, str], *, stream: str, subject: str
    ) -> AsyncIterator[BusWitness]:
        witness = cls()
        # Reconnecting (to another node of a cluster) as soon and as long as it takes, as the services do.
        nc = await nats.connect(servers(url), max_reconnect_attempts=-1, reconnect_time_wait=0.2, **options)
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
            except nats.errors.Error:  # reconnecting, or the consumer between leaders: ask again
                await asyncio.sleep(0.1)
                continue
            for msg in batch:
                if msg.metadata.sequence.stream in self._sequences:
                    self.redelivered += 1
                    await msg.ack()
                    continue
                self._sequences.add(msg.metadata.sequence.stream)
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
    redelivered: int = 0  # messages the witness got again under the same stream sequence
    during: int = 0  # writes acknowledged while the fault lasted
    held_back: int = 0  # of those, how many were not on the bus when the fault ended

    def line(self) -> str:
        refusals = ", ".join(f"{code} {n}" for code, n in sorted(self.refused.items())) or "none"
        redelivered = f", redelivered to the witness {self.redelivered}" if self.redelivered else ""
        return (
            f"{self.fault}: acknowledged {self.acknowledged} / stored {self.stored} / delivered {self.delivered}"
            f" / duplicates {self.duplicates} / recovery {self.recovery_s:.1f} s"
            f" (during the fault: {self.during} acknowledged, {self.held_back} held back from the bus;"
            f" refused: {refusals}{redelivered})"
        )

    def assert_clean(self, *, max_recovery_s: float) -> None:
        assert self.lost_stored == 0, f"{self.lost_stored} acknowledged writes are not stored: {self.line()}"
        assert self.lost_on_bus == 0, f"{self.lost_on_bus} acknowledged writes never reached the bus: {self.line()}"
        assert self.duplicates == 0, f"{self.duplicates} events delivered twice: {self.line()}"
        assert self.recovery_s <= max_recovery_s, f"recovery took over {max_recovery_s} s: {self.line()}"


@dataclass(kw_only=True)
class ChaosRun:
    """Incident reports under load against a running service (one or more replicas of it), witnessed
    on the bus."""

    channels: list[grpc.aio.Channel]
    clients: list[Incidents]  # one per channel
    witness: BusWitness
    writers: int = 4
    pause_s: float = 0.02
    ledger: Ledger = field(default_factory=Ledger)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _load: asyncio.Task[None] | None = None

    @property
    def client(self) -> Incidents:
        """The first replica's client."""
        return self.clients[0]

    async def serving(self) -> Incidents | None:
        """The client of the first replica reporting SERVING (after a replica's death, a survivor)."""
        for channel, client in zip(self.channels, self.clients, strict=True):
            if await healthy(channel):
                return client
        return None

    def start_load(self) -> None:
        write = incident_writer(self.clients)
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
        """Seconds from `fault_end` until the service reports SERVING, the bus has every write
        acknowledged before the fault ended, and a write acknowledged after it."""
        before = self.ledger.names(before=fault_end)

        async def recovered() -> bool:
            published_after = not self.ledger.names(after=fault_end).isdisjoint(self.witness.by_name)
            return published_after and self.witness.has(before) and await self.serving() is not None

        await self.until(recovered, timeout_s=timeout_s, what="recovery")
        return time.monotonic() - fault_end

    async def fault(
        self, fault: str, *, start: Action, end: Action, seconds: float, after: Action | None = None
    ) -> Figures:
        """After a warm-up, `start` the fault, keep the load on it for `seconds` (or, when the fault
        refuses writes, for `seconds` after the first refusal), `end` it, and measure; once recovered,
        `after` (a crashed part brought back), the load still on."""
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
        if after is not None:
            await _done(after())
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
        reader = await self.serving()
        assert reader is not None, "no replica serves reads"
        stored = await stored_incidents(reader)
        return Figures(
            fault=fault,
            acknowledged=len(acked),
            stored=len(stored),
            delivered=len(self.witness.by_name),
            duplicates=self.witness.duplicates(),
            redelivered=self.witness.redelivered,
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
    *,
    stack: Stack,
    bus_url: str,
    bus_options: dict[str, str],
    writers: int = 4,
    replicas: Sequence[str] = ("incidents",),
) -> AsyncIterator[ChaosRun]:
    """The stack's incident service (its `replicas`, by their names in the stack's endpoints)
    reported to by `writers` police clients (the stack's development caller), witnessed on the bus
    at `bus_url` (straight, not through any proxy of the test) by the read-only observer."""
    subject = "almere.incidents.v1.incident_reported.>"
    async with contextlib.AsyncExitStack() as opened:
        channels = [
            await opened.enter_async_context(grpc.aio.insecure_channel(stack.endpoints[name])) for name in replicas
        ]
        witness = await opened.enter_async_context(
            BusWitness.following(bus_url, bus_options, stream="INCIDENTS", subject=subject)
        )
        token = {"police": stack.credentials["police"]}
        run = ChaosRun(
            channels=channels, clients=[Incidents(c, token) for c in channels], witness=witness, writers=writers
        )
        run.start_load()
        try:
            yield run
        finally:
            await run.stop_load()
