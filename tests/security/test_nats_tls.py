"""TLS to NATS, mutual: nats-server (with the deployment's certificate) refuses a client that presents
no certificate, or one another CA signed, or that does not speak TLS, whatever its NKey; a service
configured with its certificate (ALMERE_NATS_TLS) connects, writes and publishes its events."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client

from apps.natsd import NatsServer, ServerTls, issue_bus_keys, start_nats
from apps.stack import Stack
from contract.bus import FACILITY_CREATED, PARKING
from libs.nats_client import servers, tls_options
from services.common.channels import open_channel
from services.common.config import Settings
from services.parking.service import SPEC as PARKING_SERVICE
from sim.bus_listener import BusListener, twin_identity
from sim.channels import bus_tls
from tests.integration.helpers import Parking
from tests.security.certificates import SERVER_NAME, Signer, issue, new_ca


@pytest.fixture
def nats_server(tmp_path: Path, tls: dict[str, Any]) -> Iterator[NatsServer]:
    """nats-server with the deployment's certificate, requiring clients' certificates its CA signed."""
    server_tls = ServerTls(
        cert_file=tls["tls_cert_file"], key_file=tls["tls_key_file"], client_ca_file=tls["tls_ca_file"]
    )
    server = start_nats(tmp_path / "nats", keys=issue_bus_keys(tmp_path / "bus-keys"), tls=server_tls)
    yield server
    server.stop()


@pytest.fixture
def database_url(tmp_path: Path) -> Iterator[str]:
    """SQLite only: what is tested here is the bus."""
    yield f"sqlite:///{tmp_path / 'parking.db'}"


async def _connect(server: NatsServer, user: str, **tls: Any) -> Client:
    """One attempt, no reconnecting: a refused client fails here."""
    return await nats.connect(
        servers(server.url), allow_reconnect=False, connect_timeout=3, **server.client_options(user), **tls
    )


def _tls(ca_file: Path, own: tuple[Path, Path] | None = None) -> dict[str, Any]:
    cert_file, key_file = own or (None, None)
    return tls_options(ca_file=ca_file, cert_file=cert_file, key_file=key_file, server_name=SERVER_NAME)


async def test_only_clients_with_the_deployments_certificate_reach_the_bus(
    nats_server: NatsServer, tls: dict[str, Any], ca: Signer, tmp_path: Path
) -> None:
    ca_file = tls["tls_ca_file"]
    refused = {
        "plain": {},
        "no certificate": _tls(ca_file),
        "another CA's certificate": _tls(ca_file, issue(tmp_path, "rogue", new_ca())),
    }
    for what, options in refused.items():
        with pytest.raises((nats.errors.Error, OSError, TimeoutError)):
            nc = await _connect(nats_server, "observer", **options)
            await nc.close()
            pytest.fail(f"a client with {what} connected")

    nc = await _connect(nats_server, "observer", **_tls(ca_file, issue(tmp_path, "control-room", ca)))
    try:
        assert nc.is_connected
        await nc.flush()
    finally:
        await nc.close()


def test_the_twin_reaches_the_bus_with_what_endpoints_json_names(
    nats_server: NatsServer, tls: dict[str, Any], ca: Signer, tmp_path: Path
) -> None:
    """The twin (sim/) cannot read the services' settings: endpoints.json's "tls" names its files, and
    with them it passes the bus's certificate check (clients without are refused, see above)."""
    cert_file, key_file = issue(tmp_path, "twin", ca)
    files = {"ca_file": str(tls["tls_ca_file"]), "cert_file": str(cert_file), "key_file": str(key_file)}
    endpoints = {"nats": nats_server.url, "tls": {**files, "server_name": SERVER_NAME, "nats": True}}
    identity = twin_identity(nats_server.keys["twin"].seed_file.parent)
    listener = BusListener(nats_server.url, replayed=[], live=[], identity={**identity, **bus_tls(endpoints)})
    listener.close()


async def test_a_service_with_its_certificate_writes_and_publishes(
    nats_server: NatsServer,
    settings: Settings,
    start_service: Callable[..., Awaitable[str]],
    tokens: dict[str, str],
    tls: dict[str, Any],
    ca: Signer,
    tmp_path: Path,
) -> None:
    parking_at = await start_service(PARKING_SERVICE, nats_tls=True, **tls)
    client = settings.model_copy(update={"tls_ca_file": tls["tls_ca_file"], "tls_server_name": SERVER_NAME})
    async with open_channel(client, parking_at) as channel:
        await Parking(channel, tokens).create("garage-over-tls", capacity=10)

    observer = await _connect(nats_server, "observer", **_tls(tls["tls_ca_file"], issue(tmp_path, "observer", ca)))
    try:
        subject = PARKING.subject(FACILITY_CREATED, "garage-over-tls")
        deadline = time.monotonic() + 10
        while not (await observer.jetstream().stream_info(PARKING.name, subjects_filter=subject)).state.subjects:
            assert time.monotonic() < deadline, "the service's event did not reach JetStream over TLS"
            await asyncio.sleep(0.1)
    finally:
        await observer.close()


def test_almere_up_with_tls_files_serves_its_cluster_over_mutual_tls(
    tmp_path: Path, tls: dict[str, Any], ca: Signer
) -> None:
    """`almere up --nats-cluster 3` with the deployment's TLS files: its nats-servers take TLS only,
    from clients with the CA's certificates; the services connect with theirs and create their
    streams with a replica on each node; endpoints.json tells the twin and tools."""
    mutual = Settings(data_dir=tmp_path / "stack", **tls, tls_client_ca_file=tls["tls_ca_file"], log_level="WARNING")
    stack = Stack(settings=mutual, services=["parking"], nats_nodes=3, default_ports=False)
    stack.start()
    try:
        endpoints = json.loads((stack.data_dir / "endpoints.json").read_text())
        assert endpoints["tls"]["nats"] is True and endpoints["tls"]["cert_file"]
        assert len(servers(endpoints["nats"])) == 3

        async def check() -> None:
            for refused in ({}, _tls(tls["tls_ca_file"])):
                with pytest.raises((nats.errors.Error, OSError, TimeoutError)):
                    await nats.connect(
                        servers(endpoints["nats"]),
                        allow_reconnect=False,
                        connect_timeout=3,
                        **stack.bus_options("observer") | {"tls": None, **refused},
                    )
            nc = await nats.connect(servers(endpoints["nats"]), **stack.bus_options("observer"))
            try:
                info = await nc.jetstream().stream_info(PARKING.name)
                assert info.config.num_replicas == 3
            finally:
                await nc.close()

        asyncio.run(check())
    finally:
        stack.stop()
