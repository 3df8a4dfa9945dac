"""Fixtures with real parts: a nats-server per test, a SQLite file or a PostgreSQL schema, tokens."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from services.common.auth import token_digest
from services.common.config import Settings
from services.common.natsd import NatsServer, start_nats

# Set by .ci/run (and by you) to run every database test against PostgreSQL as well.
POSTGRES_URL = os.environ.get("ALMERE_TEST_POSTGRES_URL")

ROLES = {
    "engineer": "engineer",
    "operator": "operator:op-a",
    "other_operator": "operator:op-b",
    "police": "police",
    "optimizer": "optimizer",
    "sim": "sim",
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
    server = start_nats(tmp_path / "nats")
    yield server
    server.stop()


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


@pytest.fixture
async def parking(settings: Settings) -> AsyncIterator[tuple[object, str]]:
    """The parking service running in-process on a free loopback port: (service, address)."""
    from services.common.runtime import Service
    from services.parking import SPEC

    service = Service(SPEC, settings)
    port = await service.start(port=0)
    yield service, f"127.0.0.1:{port}"
    await service.stop()
