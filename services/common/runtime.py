"""Wiring shared by every service process: config -> database -> bus -> outbox relay -> gRPC server."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from multiprocessing.connection import Connection
from typing import Any

from grpc import aio
from sqlalchemy import Engine
from sqlmodel import SQLModel

from contract.bus import PARTNER_ACCESS, PARTNERS, Stream
from services.common.agreements import AccessAudit, AgreementBook, Governance
from services.common.auth import TokenStore
from services.common.bus import Bus, stream_limits
from services.common.clock import utcnow
from services.common.config import Settings
from services.common.db import BatchHandler, GroupCommitter, create_tables, make_engine
from services.common.leader import RELAY, SCHEDULERS, Leadership, claims_for
from services.common.observability import configure_logging, serve_metrics
from services.common.oidc import verifier_from
from services.common.outbox import OutboxBase, OutboxRelay
from services.common.relay_wake import RelayWake
from services.common.server import GrpcServer, stop_on_signals
from services.common.supervisor import die_with_parent, supervise, wake_writer
from services.common.worker import Worker

log = logging.getLogger(__name__)
AGREEMENTS_REPLAY_SECONDS = 30.0


@dataclass(frozen=True, kw_only=True)
class ServiceSpec:
    """What a service brings: its name, gRPC services, tables, outbox, streams and servicer."""

    name: str
    full_names: list[str]
    tables: list[type[SQLModel]]
    outbox: type[OutboxBase]
    streams: tuple[Stream, ...]  # created (or brought to this deployment's limits) at start
    # Streams it reads, created when missing (it may start before their owners), never updated.
    consumes: tuple[Stream, ...] = ()
    # Registers the servicer(s) on the server; returns extra start/stop hooks (e.g. watch feeds).
    mount: Callable[[Service, aio.Server], Awaitable[list[Callable[[], Awaitable[None]]]]]


def migrate(spec: ServiceSpec, settings: Settings) -> None:
    engine = make_engine(settings.database_url_for(spec.name))
    create_tables(engine, spec.tables)
    engine.dispose()


class Part(StrEnum):
    """What of a service a process runs."""

    ALL = "all"  # gRPC, group commit and the outbox relay (serve_processes = 1, tests)
    SERVING = "serving"  # gRPC and group commit; wakes the relay process after each commit
    RELAY = "relay"  # the outbox relay alone


@dataclass
class Service:
    """A running service; `start` and `stop` bracket its life (tests run it in-process)."""

    spec: ServiceSpec
    settings: Settings
    part: Part = Part.ALL
    # How a SERVING process wakes the relay process after a commit.
    wake_relay: Callable[[], None] | None = None
    engine: Engine = field(init=False)
    bus: Bus = field(init=False)
    committer: GroupCommitter = field(init=False)
    relay: OutboxRelay = field(init=False)
    # Which of the work that must run once (SCHEDULERS, RELAY) this replica leads; see `leads`.
    leadership: Leadership = field(init=False)
    server: GrpcServer = field(init=False)
    # Partners' agreements and suspensions (from PARTNERS), and the audit of reads of their data.
    agreements: AgreementBook = field(init=False)
    audit: AccessAudit = field(init=False)
    governance: Governance = field(init=False)
    _relay_wake: RelayWake | None = None
    _stop_hooks: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    _stop_metrics: Callable[[], None] | None = None

    async def start(self, port: int | None = None) -> int:
        """Start this process's part; returns the gRPC port (0 for the relay alone)."""
        s = self.settings
        self.engine = make_engine(s.database_url_for(self.spec.name))
        create_tables(self.engine, self.spec.tables)
        self.bus = await Bus.connect(s, self.spec.name)
        for stream in self.spec.streams:
            await self.bus.ensure_stream(stream.config(stream_limits(s)))
        for stream in self.spec.consumes:
            await self.bus.ensure_stream(stream.config(stream_limits(s)), update=False)
        # A relay process leads the relay only; a serving process the schedulers; one process both.
        roles = {Part.ALL: (SCHEDULERS, RELAY), Part.SERVING: (SCHEDULERS,), Part.RELAY: (RELAY,)}[self.part]
        claims = claims_for(
            self.engine, service=self.spec.name, lease_s=s.leader_lease_seconds, poll_s=s.leader_poll_seconds
        )
        self.leadership = Leadership(claims, service=self.spec.name, roles=roles, poll_s=s.leader_poll_seconds)
        if self.part is not Part.SERVING:
            # Replicas on PostgreSQL wake the leading relay after their commits (on SQLite, the
            # processes of one `serve` wake theirs through a pipe; others wait for its poll).
            if self.engine.url.get_backend_name() == "postgresql":
                self._relay_wake = RelayWake(self.engine, service=self.spec.name)
            self.relay = OutboxRelay(
                self.engine,
                table=self.spec.outbox,
                bus=self.bus,
                service=self.spec.name,
                leads=functools.partial(self.leads, RELAY),
                ring=self._relay_wake.ring if self._relay_wake else None,
            )
            self.leadership.on_lead(RELAY, self.relay.wake)  # a new leader publishes what waits at once
            if self._relay_wake:
                self._relay_wake.start(self.relay.wake)
            self.relay.start()
        await self.leadership.start()
        bound = 0
        if self.part is not Part.RELAY:
            bound = await self._start_serving(port)
        self._stop_metrics = serve_metrics(s.bind_host, s.metrics_port)
        return bound

    async def _start_serving(self, port: int | None) -> int:
        s = self.settings
        self.committer = GroupCommitter(
            engine=self.engine,
            service=self.spec.name,
            max_batch=s.commit_max_batch,
            max_queue=s.commit_max_queue,
            after_commit=self.relay.notify if self.part is Part.ALL else self.wake_relay,
        )
        self.committer.start()
        for stream in (PARTNERS, PARTNER_ACCESS):
            await self.bus.ensure_stream(stream.config(stream_limits(s)), update=False)
        self.agreements = AgreementBook()
        await self.agreements.follow(self.bus)
        try:  # a read before the replay ends would miss an agreement
            await asyncio.wait_for(self.agreements.ready.wait(), AGREEMENTS_REPLAY_SECONDS)
        except TimeoutError:
            raise RuntimeError(f"the PARTNERS stream was not replayed in {AGREEMENTS_REPLAY_SECONDS} s") from None
        self.audit = AccessAudit(committer=self.committer, outbox=self.spec.outbox, service=self.spec.name)
        self.governance = Governance(book=self.agreements, audit=self.audit)
        tokens = TokenStore(s.tokens_file, s.tokens)
        oidc = verifier_from(s)
        if not len(tokens) and oidc is None:
            log.warning("no tokens configured: every call will be UNAUTHENTICATED (see `almere token issue`)")
        self.server = GrpcServer(
            self.spec.name,
            full_names=self.spec.full_names,
            settings=s,
            tokens=tokens,
            oidc=oidc,
            agreements=self.agreements,
        )
        self._stop_hooks = await self.spec.mount(self, self.server.server)
        return await self.server.start(port)

    def leads(self, role: str = SCHEDULERS) -> bool:
        """Whether this replica leads `role` now: work that must run once among the replicas checks it
        before each round (scheduled ticks and retention: SCHEDULERS; the outbox relay: RELAY)."""
        return self.leadership.leads(role)

    def schedule(self, name: str, handler: BatchHandler) -> Callable[[], Awaitable[None]]:
        """Submit `handler` (a batch handler taking the current time) every scheduler_poll_seconds
        while this replica leads the schedulers; returns the hook that stops it. A failed round is
        logged and retried on the next."""

        async def tick() -> None:
            if not self.leads(SCHEDULERS):
                return
            try:
                await self.committer.submit(handler, utcnow())
            except Exception:
                log.exception("scheduled %s failed; will retry", name)

        worker = Worker(f"{self.spec.name}-{name}", tick, self.settings.scheduler_poll_seconds)
        worker.start()
        return worker.stop

    async def stop(self) -> None:
        """Drain calls, commit what is queued, publish the outbox, close the bus and database."""
        if self.part is not Part.RELAY:
            await self.server.stop()
        if self._stop_metrics:
            self._stop_metrics()
        if self.part is not Part.RELAY:
            for hook in self._stop_hooks:
                await hook()
            await self.audit.stop()
            await self.agreements.stop()
            await self.committer.stop()
        if self.part is not Part.SERVING:
            await self.relay.stop()
            if self._relay_wake:
                await self._relay_wake.stop()
        await self.leadership.stop()  # after the relay's last round: then another replica takes over
        await self.bus.close()
        self.engine.dispose()


async def _serve(
    spec: ServiceSpec, settings: Settings, signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT), **part: Any
) -> None:
    stop = stop_on_signals(signals)
    service = Service(spec, settings, **part)
    await service.start()
    await stop.wait()
    log.info("stopping", extra={"service": spec.name})
    await service.stop()


def serve(spec: ServiceSpec, settings: Settings) -> None:
    """Run one service until SIGTERM/SIGINT (what `almere serve <service>` and a pod run): in this
    process, or with serve_processes > 1 as that many serving processes and a relay process."""
    configure_logging(settings)
    try:
        if settings.serve_processes <= 1:
            asyncio.run(_serve(spec, settings))
            return
        settings = settings.model_copy(update={"port": _fixed_port(spec.name, settings)})
        migrate(spec, settings)  # once, before the children start together
        status = supervise(
            name=spec.name,
            processes=settings.serve_processes,
            serving=functools.partial(_serving_child, spec, settings),
            relay=functools.partial(_relay_child, spec, settings),
            grace=settings.grace_seconds,
        )
        if status:
            raise SystemExit(status)
    except Exception:
        if settings.log_file:  # the log file tells what stderr (<name>.out under `almere up`) shows
            log.exception("%s stopped by an error", spec.name)
        raise


def _fixed_port(name: str, settings: Settings) -> int:
    """The port every serving process binds: port 0 (any) is chosen here, once for all of them."""
    port = settings.port_for(name)
    if port:
        return port
    with socket.socket() as s:
        s.bind((settings.bind_host, 0))
        return int(s.getsockname()[1])


def _child_settings(settings: Settings, label: str, metrics_offset: int) -> Settings:
    """A child's settings: its own log file (`parking.log` -> `parking-serve-0.log`) and metrics port
    (metrics_port + index; the relay's after the serving processes')."""
    log_file = settings.log_file
    if log_file is not None:
        log_file = log_file.with_name(f"{log_file.stem}-{label}{log_file.suffix}")
    metrics_port = settings.metrics_port + metrics_offset if settings.metrics_port else 0
    return settings.model_copy(update={"log_file": log_file, "metrics_port": metrics_port})


def _serving_child(spec: ServiceSpec, settings: Settings, index: int, wake: Connection) -> None:
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent stops us in order
    settings = _child_settings(settings, f"serve-{index}", index)
    configure_logging(settings)
    part = {"part": Part.SERVING, "wake_relay": wake_writer(wake)}
    asyncio.run(_serve(spec, settings, (signal.SIGTERM,), **part))


def _relay_child(spec: ServiceSpec, settings: Settings, wake: Connection) -> None:
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    settings = _child_settings(settings, "relay", settings.serve_processes)
    configure_logging(settings)
    asyncio.run(_relay(spec, settings, wake))


async def _relay(spec: ServiceSpec, settings: Settings, wake: Connection) -> None:
    stop = stop_on_signals((signal.SIGTERM,))
    service = Service(spec, settings, part=Part.RELAY)
    await service.start()
    fd = wake.fileno()
    os.set_blocking(fd, False)
    loop = asyncio.get_running_loop()

    def woken() -> None:
        try:
            if not os.read(fd, 65536):  # every serving process has gone: polling only
                loop.remove_reader(fd)
                return
        except BlockingIOError:
            return
        service.relay.notify()

    loop.add_reader(fd, woken)
    await stop.wait()
    loop.remove_reader(fd)
    log.info("stopping", extra={"service": spec.name, "part": "relay"})
    await service.stop()
