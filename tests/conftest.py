"""Fixtures with real parts: a nats-server per test, a SQLite file or a PostgreSQL schema, tokens."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from apps.natsd import NatsCluster, NatsServer, issue_bus_keys, start_cluster, start_nats
from services.common.auth import token_digest
from services.common.config import Settings

# Set by .ci/run (and by you) to run every database test against PostgreSQL as well.
POSTGRES_URL = os.environ.get("ALMERE_TEST_POSTGRES_URL")

ROLES = {
    "engineer": "engineer",
    "operator": "operator:op-a",
    "other_operator": "operator:op-b",
    "police": "police",
    "fire": "fire",
    "ems": "ems",
    "optimizer": "optimizer",
    "sim": "sim",
    "parking_service": "service:parking",  # the parking service's own, for its calls to the optimizer
    "public": "public",  # the HTTP gateway's own, for its open-data feeds
    "partner": "partner:firm-a",  # a private partner (a security firm)
    "other_partner": "partner:firm-b",
}


@pytest.fixture
def tokens() -> dict[str, str]:
    """One token per test caller, keyed by caller name."""
    return {caller: f"test-token-{caller}-{uuid.uuid4().hex}" for caller in ROLES}


@pytest.fixture
def tokens_json(tokens: dict[str, str]) -> str:
    return json.dumps(
        {"tokens": [{"caller": c, "role": ROLES[c], "sha256": token_digest(t)} for c, t in tokens.items()]}
    )


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A nats-server admitting only the bus users of contract.bus_access, each with its own NKey."""
    server = start_nats(tmp_path / "nats", keys=issue_bus_keys(tmp_path / "bus-keys"))
    yield server
    server.stop()


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    """Three nats-servers in one JetStream cluster, admitting the same bus users (see nats_server);
    `kill(name)` and `restart(name)` take one down and bring it back."""
    cluster = start_cluster(tmp_path / "nats-cluster", keys=issue_bus_keys(tmp_path / "bus-keys"))
    yield cluster
    cluster.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database: a SQLite file, or a schema of its own in the test PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'parking.db'}"
        return
    if not POSTGRES_URL:
        pytest.skip("ALMERE_TEST_POSTGRES_URL is not set")
    schema = f"test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL.replace("postgresql://", "postgresql+psycopg://", 1))
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in POSTGRES_URL else "?"
    yield f"{POSTGRES_URL}{separator}options=-csearch_path%3D{schema}"
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture
def settings(tmp_path: Path, nats_server: NatsServer, database_url: str, tokens_json: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        nats_url=nats_server.url,
        tokens=tokens_json,
        log_format="text",
        grace_seconds=1.0,
    )


@pytest.fixture(scope="session")
def network_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The schematic centrum-mini network, built with the real netconvert."""
    from sim.named_networks import build_network

    return build_network("centrum-mini", tmp_path_factory.mktemp("networks"))


@pytest.fixture(scope="session")
def almere_net(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The almere-centrum network (a 6 x 5 grid with arterials), built with the real netconvert."""
    from sim.scenarios import almere_centrum

    return almere_centrum.build(tmp_path_factory.mktemp("almere"), seed=1, scale=0.1, horizon_s=600).network


@pytest.fixture
async def start_service(settings: Settings, nats_server: NatsServer) -> AsyncIterator[Callable[..., Awaitable[str]]]:
    """Starts services in-process on free loopback ports; returns their addresses; stops them after."""
    from services.common.runtime import Service, ServiceSpec

    running: list[Service] = []

    async def start(spec: ServiceSpec, **overrides: object) -> str:
        own = {"nats_nkey_seed_file": nats_server.keys[spec.name].seed_file}
        service = Service(spec, settings.model_copy(update={**own, **overrides}))
        port = await service.start(port=0)
        running.append(service)
        return f"127.0.0.1:{port}"

    yield start
    for service in reversed(running):
        await service.stop()


@pytest.fixture
async def parking(start_service: Callable[..., Awaitable[str]]) -> str:
    """The parking service's address."""
    from services.parking.service import SPEC

    return await start_service(SPEC)


@pytest.fixture
async def incidents(start_service: Callable[..., Awaitable[str]], network_file: Path) -> str:
    """The incident service's address, with the centrum-mini network and a fast schedule."""
    from services.incidents.service import SPEC

    return await start_service(SPEC, network_file=network_file, scheduler_poll_seconds=0.2)


@pytest.fixture
async def signals(start_service: Callable[..., Awaitable[str]], network_file: Path) -> str:
    """The signal service's address, configured with the centrum-mini network (three traffic lights)."""
    from services.signals.service import SPEC

    return await start_service(SPEC, network_file=network_file, scheduler_poll_seconds=0.2)
