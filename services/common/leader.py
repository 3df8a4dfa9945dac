"""Leader election among a service's replicas, on what the stack already has: so work that must run
once (scheduled ticks, retention, the outbox relay) runs on one replica while all of them serve.

* PostgreSQL: a session advisory lock per (schema, service, role), taken with `pg_try_advisory_lock`
  on a connection of its own held for as long as the leadership. The leader runs `SELECT 1` on it
  every poll and steps down at once when that fails or takes longer than a poll (a partitioned
  leader stops acting); the server ends the session, and so frees the lock, once it has been idle
  for the lease (`idle_session_timeout`), or at once when the process dies (the socket closes).
  Followers try the lock every poll, so a replacement leads within a poll of the lock's release.
* SQLite (several processes on one machine sharing the file): an exclusive `flock` on a file beside
  the database per (service, role), released by the kernel when the holder's process dies.

Each role is elected on its own, so one replica may lead the schedulers and another the relay.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

from sqlalchemy import Connection, Engine, NullPool, create_engine, text

from services.common.observability import LEADER
from services.common.worker import Worker

log = logging.getLogger(__name__)

SCHEDULERS = "schedulers"  # a service's scheduled ticks and its retention
RELAY = "relay"  # its outbox relay


class Claims(Protocol):
    """How one process claims roles; blocking calls, run off the event loop one at a time."""

    def hold(self, roles: Iterable[str]) -> set[str]:
        """Keep the roles held (confirming the claim is still good), try the others; returns those held.
        Raises when the claim's connection fails: every role is lost then."""

    def close(self) -> None:
        """Give up every role (and the connection)."""


def lock_key(schema: str, service: str, role: str) -> int:
    """A role's advisory lock: a signed 64-bit key from schema/service/role (advisory locks are per
    database, and several deployments, or tests, may share one database in schemas of their own)."""
    digest = hashlib.sha256(f"{schema}/{service}/{role}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class AdvisoryLocks:
    """PostgreSQL session advisory locks on one dedicated connection."""

    def __init__(self, engine: Engine, *, service: str, lease_s: float, connect_timeout_s: float) -> None:
        # NullPool: the connection is ours alone and closed (the locks released) when we let it go.
        # TCP keepalives and a user timeout make a call on a dead link fail within the lease.
        self._engine = create_engine(
            engine.url,
            poolclass=NullPool,
            connect_args={
                "connect_timeout": max(2, round(connect_timeout_s)),
                "keepalives": 1,
                "keepalives_idle": 1,
                "keepalives_interval": 1,
                "keepalives_count": max(1, round(lease_s)),
                "tcp_user_timeout": int(lease_s * 1000),
                "application_name": f"almere-{service}-leader",  # who holds what, in pg_stat_activity
            },
        )
        self._service = service
        self._lease_ms = int(lease_s * 1000)
        self._conn: Connection | None = None
        self._keys: dict[str, int] = {}
        self._held: set[str] = set()

    def hold(self, roles: Iterable[str]) -> set[str]:
        try:
            conn = self._connection()
            if self._held:
                conn.execute(text("SELECT 1"))  # the session, and with it every lock it holds, lives
            for role in set(roles) - self._held:
                taken = conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": self._key(conn, role)})
                if taken.scalar_one():
                    self._held.add(role)
        except Exception:
            self.close()
            raise
        return set(self._held)

    def close(self) -> None:
        self._held.clear()
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()  # the session ends: the server frees its locks

    def _connection(self) -> Connection:
        if self._conn is None:
            conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            # A leader that stops talking (frozen, partitioned) loses its locks after the lease.
            conn.execute(text("SELECT set_config('idle_session_timeout', :ms, false)"), {"ms": str(self._lease_ms)})
            self._conn = conn
        return self._conn

    def _key(self, conn: Connection, role: str) -> int:
        if role not in self._keys:
            schema = conn.execute(text("SELECT current_schema()")).scalar_one()
            self._keys[role] = lock_key(schema, self._service, role)
        return self._keys[role]


class FileLocks:
    """Exclusive flock()s on files beside a SQLite database. flock is per open file, so replicas in
    one process (tests) exclude each other as processes do."""

    def __init__(self, database: Path, *, service: str) -> None:
        self._prefix = f"{database}-{service}"
        self._fds: dict[str, int] = {}

    def hold(self, roles: Iterable[str]) -> set[str]:
        for role in roles:
            if role in self._fds:
                continue  # held while the file stays open: nothing can take it from a living process
            fd = os.open(f"{self._prefix}-{role}.leader", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self._fds[role] = fd
        return set(self._fds)

    def close(self) -> None:
        fds, self._fds = self._fds, {}
        for fd in fds.values():
            os.close(fd)  # closing the last descriptor of the open file releases its lock


class Alone:
    """An in-memory SQLite database: no other process can share it, so this one leads."""

    def hold(self, roles: Iterable[str]) -> set[str]:
        return set(roles)

    def close(self) -> None:
        pass


def claims_for(engine: Engine, *, service: str, lease_s: float, poll_s: float) -> Claims:
    """The claims that fit the service's database."""
    url = engine.url
    if url.get_backend_name() != "sqlite":
        return AdvisoryLocks(engine, service=service, lease_s=lease_s, connect_timeout_s=poll_s)
    if not url.database or url.database == ":memory:":
        return Alone()
    return FileLocks(Path(url.database).resolve(), service=service)


class Leadership:
    """The roles this process leads, renewed every `poll_s`. `leads(role)` is what work that must run
    once checks before each round; `on_lead(role, callback)` runs the callback when it is won."""

    def __init__(self, claims: Claims, *, service: str, roles: Iterable[str], poll_s: float) -> None:
        self._claims = claims
        self._service = service
        self._roles = tuple(roles)
        self._poll_s = poll_s
        self._led: set[str] = set()
        self._stopping = False
        self._failing = False  # the last claim failed (logged once, not every poll)
        self._claiming: asyncio.Future[set[str]] | None = None
        self._callbacks: dict[str, list[Callable[[], None]]] = {}
        # One thread, so a claim call that hangs (a partition) delays the next, never overlaps it.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{service}-leader")
        self._worker = Worker(f"{service}-leadership", self._renew, poll_s)
        for role in self._roles:
            LEADER.labels(service, role).set(0)

    def leads(self, role: str) -> bool:
        return role in self._led

    def on_lead(self, role: str, callback: Callable[[], None]) -> None:
        self._callbacks.setdefault(role, []).append(callback)

    async def start(self) -> None:
        """Campaign once before returning (a lone replica leads from its first moment), then every poll."""
        await self._renew()
        self._worker.start()

    async def stop(self) -> None:
        """Step down and give the roles up, so another replica takes over within its poll."""
        self._stopping = True
        await self._worker.stop()
        self._set(set())
        await asyncio.get_running_loop().run_in_executor(self._thread, self._claims.close)
        self._thread.shutdown(wait=False)

    async def _renew(self) -> None:
        if self._stopping:
            return
        if self._claiming is None or self._claiming.done():  # else a call hangs still: wait for it
            if self._claiming is not None and not self._claiming.cancelled():
                self._claiming.exception()  # seen (and logged) when it was awaited, or after it hung
            self._claiming = asyncio.get_running_loop().run_in_executor(self._thread, self._claims.hold, self._roles)
        try:
            held = await asyncio.wait_for(asyncio.shield(self._claiming), self._poll_s)
        except Exception as exc:  # TimeoutError too: a leader that cannot confirm its claim stops now
            if not self._failing:
                log.warning("%s: cannot claim or confirm %s (%r); leading none", self._service, self._roles, exc)
            self._failing = True
            held = set()
        else:
            if self._failing:
                log.info("%s: claims work again", self._service)
            self._failing = False
        self._set(held)

    def _set(self, held: set[str]) -> None:
        for role in sorted(held - self._led):
            log.info("%s: this replica now leads %s", self._service, role, extra={"service": self._service})
        for role in sorted(self._led - held):
            log.info("%s: this replica no longer leads %s", self._service, role, extra={"service": self._service})
        gained = held - self._led
        self._led = held
        for role in self._roles:
            LEADER.labels(self._service, role).set(1 if role in held else 0)
        for role in gained:
            for callback in self._callbacks.get(role, []):
                callback()
