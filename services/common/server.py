"""gRPC server bootstrap: interceptors, limits, health, reflection, TLS and graceful shutdown."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

import grpc
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from services.common.agreements import AgreementBook
from services.common.auth import TokenStore
from services.common.config import Settings
from services.common.feed import WatchLimits
from services.common.interceptors import ServiceInterceptor
from services.common.limits import StreamSlots
from services.common.oidc import OidcVerifier

log = logging.getLogger(__name__)


class GrpcServer:
    """One grpc.aio server hosting a service plus the standard health and reflection services."""

    def __init__(
        self,
        service: str,
        *,
        full_names: list[str],
        settings: Settings,
        tokens: TokenStore,
        oidc: OidcVerifier | None = None,
        agreements: AgreementBook | None = None,
    ) -> None:
        self.service = service
        self.full_names = full_names
        self.settings = settings
        interceptor = ServiceInterceptor(
            service,
            tokens,
            oidc=oidc,
            agreements=agreements,
            streams=StreamSlots(per_caller=settings.watch_max_per_caller, total=settings.watch_max_total),
            watch=WatchLimits(queue_size=settings.watch_queue_size, max_seconds=settings.watch_max_seconds),
            refusal_log_seconds=settings.unauthenticated_log_seconds,
        )
        self.server = aio.server(
            interceptors=[interceptor],
            options=server_options(settings),
            maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
        )
        self.health = HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            [*full_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
            self.server,
        )
        self.port = 0

    def add(self, register: Callable[[aio.Server], None]) -> None:
        register(self.server)

    async def start(self, port: int | None = None) -> int:
        address = f"{self.settings.bind_host}:{self.settings.port_for(self.service) if port is None else port}"
        if self.settings.tls_enabled:
            assert self.settings.tls_cert_file and self.settings.tls_key_file
            client_ca = self.settings.tls_client_ca_file
            credentials = grpc.ssl_server_credentials(
                [(self.settings.tls_key_file.read_bytes(), self.settings.tls_cert_file.read_bytes())],
                root_certificates=client_ca.read_bytes() if client_ca else None,
                require_client_auth=client_ca is not None,  # mutual TLS: no certificate, no connection
            )
            self.port = self.server.add_secure_port(address, credentials)
        else:
            self.port = self.server.add_insecure_port(address)
        if self.port == 0:
            raise OSError(f"cannot bind gRPC server to {address}")
        await self.server.start()
        for name in ["", *self.full_names]:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("serving", extra={"service": self.service, "address": f"{self.settings.bind_host}:{self.port}"})
        return self.port

    async def stop(self) -> None:
        """Report NOT_SERVING so load balancers drain, then let in-flight calls finish."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(self.settings.grace_seconds)


def server_options(settings: Settings) -> list[tuple[str, int]]:
    """The gRPC core's connection limits (see Settings): every connection is bounded in message size,
    streams, silence, idleness and age."""

    def ms(seconds: float) -> int:
        return int(seconds * 1000)

    return [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        # Several serving processes share the port (SO_REUSEPORT: the kernel spreads connections over
        # them); one process alone keeps it off, so a port already taken is an error, not shared.
        ("grpc.so_reuseport", int(settings.serve_processes > 1)),
        ("grpc.max_concurrent_streams", settings.max_streams_per_connection),
        ("grpc.keepalive_time_ms", ms(settings.keepalive_seconds)),
        ("grpc.keepalive_timeout_ms", ms(settings.keepalive_timeout_seconds)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),  # keep pinging a silent Watch's connection
        ("grpc.http2.min_recv_ping_interval_without_data_ms", ms(settings.client_ping_min_seconds)),
        ("grpc.http2.max_ping_strikes", 2),  # then GOAWAY for a client pinging more often
        ("grpc.max_connection_idle_ms", ms(settings.max_connection_idle_seconds)),
        ("grpc.max_connection_age_ms", ms(settings.max_connection_age_seconds)),
        ("grpc.max_connection_age_grace_ms", ms(settings.max_connection_age_grace_seconds)),
    ]


def stop_on_signals(signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)) -> asyncio.Event:
    """An event set by one of `signals`, for the serve loop to wait on."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    return stop
