"""Standard gRPC infrastructure of a service: health, reflection, TLS."""

from __future__ import annotations

import subprocess
from pathlib import Path

import grpc
import pytest
from almere.parking.v1 import parking_pb2 as pb
from almere.parking.v1 import parking_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from apps.natsd import NatsServer
from services.common.config import Settings
from services.common.runtime import Service
from services.parking.service import SPEC


async def list_services(channel: grpc.aio.Channel) -> list[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)

    async def request():  # type: ignore[no-untyped-def]
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    async for reply in stub.ServerReflectionInfo(request()):
        return [s.name for s in reply.list_services_response.service]
    return []


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_health_and_reflection_answer_without_a_token(parking: str, incidents: str, signals: str) -> None:
    for address, service_name in (
        (parking, "almere.parking.v1.ParkingService"),
        (incidents, "almere.incidents.v1.IncidentService"),
        (signals, "almere.signals.v1.SignalService"),
    ):
        async with grpc.aio.insecure_channel(address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for name in ("", service_name):
                reply = await health.Check(health_pb2.HealthCheckRequest(service=name))
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
            services = await list_services(channel)
        assert service_name in services
        assert "grpc.health.v1.Health" in services


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost: (cert, key)."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_tls(
    certificate: tuple[Path, Path], settings: Settings, nats_server: NatsServer, tokens: dict[str, str]
) -> None:
    cert, key = certificate
    seed = nats_server.keys["parking"].seed_file
    service = Service(
        SPEC, settings.model_copy(update={"tls_cert_file": cert, "tls_key_file": key, "nats_nkey_seed_file": seed})
    )
    port = await service.start(port=0)
    try:
        credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        options = [("grpc.ssl_target_name_override", "localhost")]
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials, options=options) as channel:
            stub = parking_pb2_grpc.ParkingServiceStub(channel)
            reply = await stub.ListFacilities(
                pb.ListFacilitiesRequest(), metadata=(("authorization", f"Bearer {tokens['police']}"),)
            )
            assert list(reply.facilities) == []
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as plain:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await parking_pb2_grpc.ParkingServiceStub(plain).ListFacilities(pb.ListFacilitiesRequest(), timeout=2)
            assert err.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    finally:
        await service.stop()
