"""Channels to other services of the deployment: TLS whenever the deployment has TLS (this process
serves TLS, or a CA for the services' certificates is configured), plain only when it has none.
One place decides, so no client is left talking in clear to a TLS deployment."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

from services.common.config import Settings

Options = Sequence[tuple[str, Any]]


def uses_tls(settings: Settings) -> bool:
    return settings.tls_enabled or settings.tls_ca_file is not None


def _credentials(settings: Settings) -> tuple[grpc.ChannelCredentials, list[tuple[str, Any]]]:
    """Credentials checking the server against the configured CA (else the system's roots), and
    the server name to check when it is not the address's host; this process's own certificate
    goes along, for servers that require one (mutual TLS)."""
    roots = settings.tls_ca_file.read_bytes() if settings.tls_ca_file else None
    name = [("grpc.ssl_target_name_override", settings.tls_server_name)] if settings.tls_server_name else []
    own: dict[str, bytes] = {}
    if settings.tls_cert_file and settings.tls_key_file:
        own = {
            "private_key": settings.tls_key_file.read_bytes(),
            "certificate_chain": settings.tls_cert_file.read_bytes(),
        }
    return grpc.ssl_channel_credentials(root_certificates=roots, **own), name


def open_channel(settings: Settings, address: str, options: Options = ()) -> grpc.aio.Channel:
    """A grpc.aio channel to `address` (host:port) of another service."""
    if not uses_tls(settings):
        return grpc.aio.insecure_channel(address, options=options)
    credentials, name = _credentials(settings)
    return grpc.aio.secure_channel(address, credentials, options=[*options, *name])


def open_blocking_channel(settings: Settings, address: str, options: Options = ()) -> grpc.Channel:
    """The same for synchronous callers (health checks, command-line tools)."""
    if not uses_tls(settings):
        return grpc.insecure_channel(address, options=options)
    credentials, name = _credentials(settings)
    return grpc.secure_channel(address, credentials, options=[*options, *name])
