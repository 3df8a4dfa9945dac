"""Wiring shared by every service process: config -> database -> bus -> outbox relay -> gRPC server."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from grpc import aio
from sqlalchemy import Engine
from sqlmodel import SQLModel

from contract.bus import Stream
from services.common.auth import TokenStore
from services.common.bus import Bus, stream_limits
from services.common.clock import utcnow
from services.common.config import Settings
from services.common.db import BatchHandler, GroupCommitter, create_tables, make_engine
from services.common.observability import configure_logging, serve_metrics
from services.common.outbox import OutboxBase, OutboxRelay
from services.common.server import GrpcServer, stop_on_signals
from services.common.worker import Worker

log = logging.getLogger(__name__)


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


@dataclass
class Service:
    """A running service; `start` and `stop` bracket its life (tests run it in-process)."""

    spec: ServiceSpec
    settings: Settings
    engine: Engine = field(init=False)
    bus: Bus = field(init=False)
    committer: GroupCommitter = field(init=False)
    relay: OutboxRelay = field(init=False)
    server: GrpcServer = field(init=False)
    _stop_hooks: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    _stop_metrics: Callable[[], None] | None = None

    async def start(self, port: int | None = None) -> int:
        s = self.settings
        self.engine = make_engine(s.database_url_for(self.spec.name))
        create_tables(self.engine, self.spec.tables)
        self.bus = await Bus.connect(s, self.spec.name)
        for stream in self.spec.streams:
            await self.bus.ensure_stream(stream.config(stream_limits(s)))
        for stream in self.spec.consumes:
            await self.bus.ensure_stream(stream.config(stream_limits(s)), update=False)
        self.relay = OutboxRelay(self.engine, table=self.spec.outbox, bus=self.bus, service=self.spec.name)
        self.committer = GroupCommitter(
            engine=self.engine,
            service=self.spec.name,
            max_batch=s.commit_max_batch,
            max_queue=s.commit_max_queue,
            after_commit=self.relay.notify,
        )
        self.committer.start()
        self.relay.start()
        tokens = TokenStore(s.tokens_file, s.tokens)
        if not len(tokens):
            log.warning("no tokens configured: every call will be UNAUTHENTICATED (see `almere token issue`)")
        self.server = GrpcServer(self.spec.name, full_names=self.spec.full_names, settings=s, tokens=tokens)
        self._stop_hooks = await self.spec.mount(self, self.server.server)
        bound = await self.server.start(port)
        self._stop_metrics = serve_metrics(s.bind_host, s.metrics_port)
        return bound

    def schedule(self, name: str, handler: BatchHandler) -> Callable[[], Awaitable[None]]:
        """Submit `handler` (a batch handler taking the current time) every scheduler_poll_seconds;
        returns the hook that stops it. A failed round is logged and retried on the next."""

        async def tick() -> None:
            try:
                await self.committer.submit(handler, utcnow())
            except Exception:
                log.exception("scheduled %s failed; will retry", name)

        worker = Worker(f"{self.spec.name}-{name}", tick, self.settings.scheduler_poll_seconds)
        worker.start()
        return worker.stop

    async def stop(self) -> None:
        """Drain calls, commit what is queued, publish the outbox, close the bus and database."""
        await self.server.stop()
        if self._stop_metrics:
            self._stop_metrics()
        for hook in self._stop_hooks:
            await hook()
        await self.committer.stop()
        await self.relay.stop()
        await self.bus.close()
        self.engine.dispose()


async def _serve(spec: ServiceSpec, settings: Settings) -> None:
    stop = stop_on_signals()
    service = Service(spec, settings)
    await service.start()
    await stop.wait()
    log.info("stopping", extra={"service": spec.name})
    await service.stop()


def serve(spec: ServiceSpec, settings: Settings) -> None:
    """Run one service until SIGTERM/SIGINT (what `almere serve <service>` and a pod run)."""
    configure_logging(settings)
    try:
        asyncio.run(_serve(spec, settings))
    except Exception:
        if settings.log_file:  # the log file tells what stderr (<name>.out under `almere up`) shows
            log.exception("%s stopped by an error", spec.name)
        raise
