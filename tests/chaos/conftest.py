"""Fixtures staging the faults of tests/chaos/faults.py, skipping (and saying why) where this machine
cannot stage one."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from apps.natsd import NatsCluster, NatsServer
from apps.stack import Stack
from tests.chaos.faults import FaultUnavailable, Postgres, launched_stack, own_postgres, small_tmpfs

LaunchStack = Callable[..., Awaitable[Stack]]


@pytest.fixture
async def launch_stack(tmp_path: Path, nats_server: NatsServer | NatsCluster) -> AsyncIterator[LaunchStack]:
    """`await launch_stack(services=[...], nats_url=..., database_url=...)`: faults.launched_stack on
    the test's nats-server (a module may make `nats_server` the cluster), stopped after the test."""
    async with AsyncExitStack() as stacks:

        async def launch(*, services: list[str], nats_url: str | None = None, database_url: str | None = None) -> Stack:
            return await stacks.enter_async_context(
                launched_stack(
                    data_dir=tmp_path / "data",
                    nats=nats_server,
                    services=services,
                    nats_url=nats_url,
                    database_url=database_url,
                )
            )

        yield launch


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs of the test's own."""
    try:
        with small_tmpfs(tmp_path / "disk") as where:
            yield where
    except FaultUnavailable as why:
        pytest.skip(str(why))


@pytest.fixture
def postgres() -> Iterator[Postgres]:
    """A PostgreSQL server of the test's own, which it may crash and restart."""
    try:
        with own_postgres() as server:
            yield server
    except FaultUnavailable as why:
        pytest.skip(str(why))
