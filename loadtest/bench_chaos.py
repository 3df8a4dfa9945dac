"""The faults of tests/chaos for longer and under more load than CI affords: a partition between the
incident service and NATS, its SQLite disk full, its PostgreSQL crashed and restarted, the stream
leader's node of a 3-node NATS cluster SIGKILLed (and kept down a while), the leader of three replicas
of the service SIGKILLed (the load kept on the two left). Prints one
line of figures per fault (acknowledged / stored / delivered / duplicates / recovery) and exits 1 if
any acknowledged write was lost or delivered twice. See docs/chaos.md.

    .venv/bin/python -m loadtest.bench_chaos --partition-s 300 --writers 8   # from the repository root

(as a module: it reuses the harness under tests/chaos/).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlparse

from apps.natsd import NatsCluster, NatsServer, issue_bus_keys, start_cluster, start_nats
from tests.chaos.faults import (
    FaultUnavailable,
    TcpProxy,
    fill_disk,
    launched_stack,
    leading_replica,
    own_postgres,
    sigkill,
    small_tmpfs,
    stream_placement,
)
from tests.chaos.harness import ChaosRun, Figures, incidents_under_load

Bus = NatsServer | NatsCluster


@asynccontextmanager
async def _under_load(
    args: argparse.Namespace,
    nats: Bus,
    folder: Path,
    *,
    nats_url: str | None = None,
    database_url: str | None = None,
) -> AsyncIterator[ChaosRun]:
    """The incident service as its own process (reaching NATS at `nats_url`, storing in
    `database_url`) under `args.writers` clients, witnessed on the bus."""
    async with (
        launched_stack(
            data_dir=folder / "data", nats=nats, services=["incidents"], nats_url=nats_url, database_url=database_url
        ) as stack,
        incidents_under_load(
            stack=stack, bus_url=nats.url, bus_options=nats.client_options("observer"), writers=args.writers
        ) as run,
    ):
        yield run


async def partition(args: argparse.Namespace, nats: Bus, folder: Path) -> Figures:
    target = urlparse(nats.url)
    assert target.hostname and target.port
    proxy = TcpProxy(target.hostname, target.port)
    port = await proxy.start()
    try:
        async with _under_load(args, nats, folder, nats_url=f"nats://127.0.0.1:{port}") as run:
            return await run.fault(
                f"partition service-NATS {args.partition_s:.0f} s",
                start=proxy.partition,
                end=proxy.heal,
                seconds=args.partition_s,
            )
    finally:
        await proxy.close()


async def disk_full(args: argparse.Namespace, nats: Bus, folder: Path) -> Figures:
    with small_tmpfs(folder / "disk", size="64m") as disk:
        ballast = disk / "ballast"
        async with _under_load(args, nats, folder, database_url=f"sqlite:///{disk / 'incidents.db'}") as run:
            return await run.fault(
                f"disk full {args.full_s:.0f} s (SQLite on a 64 MiB tmpfs)",
                start=lambda: asyncio.to_thread(fill_disk, ballast),
                end=ballast.unlink,
                seconds=args.full_s,
            )


async def postgres(args: argparse.Namespace, nats: Bus, folder: Path) -> Figures:
    with own_postgres() as server:
        async with _under_load(args, nats, folder, database_url=server.url) as run:
            return await run.fault(
                f"PostgreSQL crash + restart ({args.down_s:.0f} s down)",
                start=lambda: asyncio.to_thread(server.stop, "immediate"),
                end=lambda: asyncio.to_thread(server.start),
                seconds=args.down_s,
            )


async def nats_node(args: argparse.Namespace, nats: Bus, folder: Path) -> Figures:
    assert isinstance(nats, NatsCluster)
    options = nats.client_options("observer")

    async def restart_later(node: str) -> None:
        await asyncio.sleep(args.node_down_s)
        await asyncio.to_thread(nats.restart, node)

    async with _under_load(args, nats, folder) as run:
        leader, _ = await stream_placement(nats.url, options, "INCIDENTS")
        return await run.fault(
            f"SIGKILL of NATS node {leader} (stream leader of 3), {args.node_down_s:.0f} s down",
            start=lambda: asyncio.to_thread(nats.kill, leader),
            end=lambda: None,
            seconds=0,
            after=lambda: restart_later(leader),
        )


async def leader(args: argparse.Namespace, nats: Bus, folder: Path) -> Figures:
    with own_postgres() as server:
        async with launched_stack(
            data_dir=folder / "data", nats=nats, services=["incidents"], database_url=server.url
        ) as stack:
            replicas = ["incidents"]
            for index in range(2, args.replicas + 1):
                await asyncio.to_thread(stack.add_replica, "incidents", f"r{index}")
                replicas.append(f"incidents@r{index}")
            killed = await leading_replica(stack, replicas)
            async with incidents_under_load(
                stack=stack,
                bus_url=nats.url,
                bus_options=nats.client_options("observer"),
                writers=args.writers,
                replicas=replicas,
            ) as run:
                return await run.fault(
                    f"SIGKILL of the leader replica of {args.replicas}, {args.leader_gone_s:.0f} s on the rest",
                    start=lambda: sigkill(stack.processes[killed]),
                    end=lambda: None,
                    seconds=0,
                    after=lambda: asyncio.sleep(args.leader_gone_s),
                )


FAULTS: dict[str, Callable[[argparse.Namespace, Bus, Path], Awaitable[Figures]]] = {
    "partition": partition,
    "disk-full": disk_full,
    "postgres": postgres,
    "nats-node": nats_node,
    "leader": leader,
}


async def main(args: argparse.Namespace) -> int:
    """Each fault on a fresh nats-server (a 3-node cluster for `nats-node`) and service; 1 if any
    lost or duplicated a write."""
    failed = 0
    for name in args.faults:
        folder = Path(tempfile.mkdtemp(prefix=f"bench-chaos-{name}-"))
        keys = issue_bus_keys(folder / "bus-keys")
        nats: Bus = (
            start_cluster(folder / "nats-cluster", keys=keys)
            if name == "nats-node"
            else start_nats(folder / "nats", keys=keys)
        )
        try:
            figures = await FAULTS[name](args, nats, folder)
        except FaultUnavailable as why:
            print(f"{name}: skipped ({why})")
            continue
        finally:
            nats.stop()
            if args.keep:
                print(f"{name}: logs (the service's, nats-server's) kept in {folder}")
            else:
                shutil.rmtree(folder, ignore_errors=True)
        try:
            figures.assert_clean(max_recovery_s=args.max_recovery_s)
        except AssertionError as problem:
            print(f"{name}: FAILED: {problem}")
            failed += 1
    return 1 if failed else 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faults", nargs="+", choices=FAULTS, default=list(FAULTS))
    parser.add_argument("--writers", type=int, default=8, help="concurrent police clients reporting incidents")
    parser.add_argument("--partition-s", type=float, default=120.0, help="how long the link to NATS is cut")
    parser.add_argument("--full-s", type=float, default=30.0, help="how long the disk stays full")
    parser.add_argument("--down-s", type=float, default=30.0, help="how long PostgreSQL stays down")
    parser.add_argument("--node-down-s", type=float, default=60.0, help="how long the killed NATS node stays down")
    parser.add_argument("--replicas", type=int, default=3, help="replicas of the incident service (leader)")
    parser.add_argument(
        "--leader-gone-s", type=float, default=60.0, help="how long the load runs on after the leader's death"
    )
    parser.add_argument("--max-recovery-s", type=float, default=30.0)
    parser.add_argument("--keep", action="store_true", help="keep each fault's folder (logs) for a look afterwards")
    args = parser.parse_args(argv)
    if args.replicas < 2:
        parser.error("--replicas: at least 2, so that one survives the leader")
    return args


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
