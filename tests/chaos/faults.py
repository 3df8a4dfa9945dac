"""The faults themselves, each usable from a test or a benchmark: a TCP proxy that can cut a link, a
small filesystem to fill, a PostgreSQL server of our own to crash, and the stack of services under
test, started on the bus (one nats-server or a cluster) and database a fault needs, with what tells
which NATS node and which service replica lead."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import nats
from prometheus_client.parser import text_string_to_metric_families

from apps.natsd import NatsCluster, NatsServer
from apps.stack import Stack, dev_callers, free_port
from libs.nats_client import servers
from services.common.config import Settings
from services.common.leader import RELAY, SCHEDULERS


class FaultUnavailable(RuntimeError):
    """This machine cannot stage the fault (no right to mount, no PostgreSQL binaries): skip, saying why."""


@contextlib.asynccontextmanager
async def launched_stack(
    *,
    data_dir: Path,
    nats: NatsServer | NatsCluster,
    services: list[str],
    nats_url: str | None = None,
    database_url: str | None = None,
) -> AsyncIterator[Stack]:
    """The services as their own processes (apps.stack), each reaching NATS at `nats_url` (default:
    `nats` itself, every node of a cluster, whose streams they replicate on each node as `almere up
    --nats-cluster` has them; a proxy's URL cuts in) and storing in `database_url` (default: a SQLite
    file each under `data_dir`), with a development token for the police; stopped on leaving."""
    environment = {
        "ALMERE_NATS_URL": nats_url or nats.url,
        "ALMERE_NATS_KEYS_DIR": str(nats.keys["observer"].seed_file.parent),
        **({"ALMERE_STREAM_REPLICAS": str(len(nats.nodes))} if isinstance(nats, NatsCluster) else {}),
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


async def stream_placement(url: str, options: dict[str, str], stream: str) -> tuple[str, set[str]]:
    """The node leading `stream` (JetStream's name for it, as NatsCluster.node takes it) and every
    node holding a replica of it, leader included."""
    nc = await nats.connect(servers(url), **options)
    try:
        info = await nc.jetstream(timeout=10).stream_info(stream)
    finally:
        await nc.close()
    assert info.cluster is not None and info.cluster.leader, f"{stream} has no cluster leader: {info.cluster}"
    return info.cluster.leader, {info.cluster.leader, *(r.name for r in info.cluster.replicas or [] if r.name)}


async def led_roles(metrics_url: str) -> set[str]:
    """The roles (services.common.leader SCHEDULERS, RELAY) a service replica leads, by its
    `almere_leader` gauge; none when it does not answer (dead)."""
    try:
        async with httpx.AsyncClient(timeout=2) as client:
            text = (await client.get(metrics_url)).text
    except httpx.HTTPError:
        return set()
    return {
        sample.labels["role"]
        for family in text_string_to_metric_families(text)
        if family.name == "almere_leader"
        for sample in family.samples
        if sample.value == 1
    }


async def leading_replica(stack: Stack, replicas: Sequence[str]) -> str:
    """Which of the stack's `replicas` of a service leads both the schedulers and the relay (the
    first started does, having campaigned alone); the others must lead nothing."""
    roles = {replica: await led_roles(stack.metrics[replica]) for replica in replicas}
    leaders = [replica for replica, led in roles.items() if led == {SCHEDULERS, RELAY}]
    assert len(leaders) == 1 and sum(bool(led) for led in roles.values()) == 1, f"roles led: {roles}"
    return leaders[0]


async def sigkill(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL a process of ours and reap it: no step-down, no goodbye, as a crash."""
    process.kill()
    await asyncio.to_thread(process.wait)


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
