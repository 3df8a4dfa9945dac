"""The faults themselves, each usable from a test or a benchmark: a TCP proxy that can cut a link, a
small filesystem to fill, a PostgreSQL server of our own to crash, and the stack of services under
test, started on the bus and database a fault needs."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

from apps.natsd import NatsServer
from apps.stack import Stack, dev_callers, free_port
from services.common.config import Settings


class FaultUnavailable(RuntimeError):
    """This machine cannot stage the fault (no right to mount, no PostgreSQL binaries): skip, saying why."""


@contextlib.asynccontextmanager
async def launched_stack(
    *,
    data_dir: Path,
    nats: NatsServer,
    services: list[str],
    nats_url: str | None = None,
    database_url: str | None = None,
) -> AsyncIterator[Stack]:
    """The services as their own processes (apps.stack), each reaching NATS at `nats_url` (default:
    `nats` itself; a proxy's URL cuts in) and storing in `database_url` (default: a SQLite file each
    under `data_dir`), with a development token for the police; stopped on leaving."""
    environment = {
        "ALMERE_NATS_URL": nats_url or nats.url,
        "ALMERE_NATS_KEYS_DIR": str(nats.keys["observer"].seed_file.parent),
        **({"ALMERE_DATABASE_URL": database_url} if database_url else {}),
    }
    settings = Settings(data_dir=data_dir, log_level="WARNING", grace_seconds=2.0)
    stack = Stack(settings=settings, services=services, callers=dev_callers("police"), default_ports=False)
    with _environment(environment):  # Stack hands its own environment to the services it starts
        # In a thread: the loop keeps serving what the services need meanwhile (the test's proxy).
        await asyncio.to_thread(stack.start)
    try:
        yield stack
    finally:
        await asyncio.to_thread(stack.stop)


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    before = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class TcpProxy:
    """Forwards a loopback port to `target`. `partition()` stops moving bytes in both directions and
    holds new connections, closing nothing: the peers see silence, as across a cut link (their TCP
    buffers fill and wait). `heal()` moves the held bytes on."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._open = asyncio.Event()
        self._open.set()
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    def partition(self) -> None:
        self._open.clear()

    def heal(self) -> None:
        self._open.set()

    async def close(self) -> None:
        if self._server:
            self._server.close()
        for task in self._pipes:
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        await self._open.wait()  # a connection attempt across the cut waits like an unanswered SYN
        try:
            server_r, server_w = await asyncio.open_connection(*self._target)
        except OSError:
            client_w.close()
            return
        for reader, writer in ((client_r, server_w), (server_r, client_w)):
            task = asyncio.create_task(self._pipe(reader, writer))
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                data = await reader.read(65536)
                await self._open.wait()  # across a partition even the close waits
                if not data:
                    break
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()


def fill_disk(ballast: Path) -> int:
    """Write `ballast` until its filesystem has no block left (ENOSPC); returns the bytes written."""
    written = 0
    with ballast.open("wb", buffering=0) as f:
        for chunk in (1 << 20, 1 << 12):  # megabytes, then the last pages
            block = bytes(chunk)
            try:
                while True:
                    written += f.write(block) or 0
            except OSError as full:
                if full.errno != errno.ENOSPC:
                    raise
    free = os.statvfs(ballast.parent)
    assert free.f_bavail == 0, f"{free.f_bavail} blocks still free after {written} bytes"
    return written


@contextlib.contextmanager
def small_tmpfs(where: Path, size: str = "16m") -> Iterator[Path]:
    """A filesystem of its own at `where` (tmpfs, `size`): needs the right to mount (root, or a
    container that grants it)."""
    where.mkdir(parents=True, exist_ok=True)
    if not shutil.which("mount"):
        raise FaultUnavailable("no mount command: cannot make a small filesystem here")
    mount = ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)]
    mounted = subprocess.run(mount, capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        raise FaultUnavailable(f"cannot mount a small tmpfs here: {mounted.stderr.strip() or mounted.returncode}")
    try:
        yield where
    finally:
        # Lazily: a service still holding the database file lets go when it exits.
        subprocess.run(["umount", "-l", str(where)], check=True)


PG_BIN = Path(shutil.which("initdb") or "/usr/local/bin/initdb").parent


@dataclass(kw_only=True)
class Postgres:
    """A PostgreSQL server of our own (never the machine's): a temporary cluster on a free loopback
    port, trust authentication, run as `user` (initdb refuses root)."""

    data: Path
    port: int
    user: str

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def run(self, binary: str, *args: str) -> None:
        as_user = ["runuser", "-u", self.user, "--"] if os.geteuid() == 0 else []
        subprocess.run([*as_user, str(PG_BIN / binary), *args], check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.data}"
        self.run("pg_ctl", "start", "-w", "-D", str(self.data / "db"), "-l", str(self.data / "log"), "-o", options)

    def stop(self, mode: str = "fast") -> None:
        """`immediate`: every server process quits at once, as in a crash (recovery at the next start)."""
        self.run("pg_ctl", "stop", "-w", "-m", mode, "-D", str(self.data / "db"))


@contextlib.contextmanager
def own_postgres() -> Iterator[Postgres]:
    """A fresh PostgreSQL cluster, started; removed on leaving."""
    if not (PG_BIN / "initdb").exists():
        raise FaultUnavailable(f"PostgreSQL's initdb is not installed (looked in {PG_BIN})")
    user = pwd.getpwuid(os.geteuid()).pw_name
    if os.geteuid() == 0:  # initdb refuses root: the cluster belongs to an unprivileged user
        user = next((u for u in ("postgres", "nobody") if _has_user(u)), "")
        if not (user and shutil.which("runuser")):
            raise FaultUnavailable("running as root without runuser or an unprivileged user to run initdb as")
    data = Path(tempfile.mkdtemp(prefix="almere-chaos-pg-"))  # outside pytest's 0700 folders: the user must reach it
    shutil.chown(data, user)
    server = Postgres(data=data, port=free_port("127.0.0.1"), user=user)
    try:
        server.run("initdb", "-D", str(data / "db"), "-U", "postgres", "-A", "trust", "--no-sync")
        server.start()
        yield server
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            server.stop("immediate")
        shutil.rmtree(data, ignore_errors=True)


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True
