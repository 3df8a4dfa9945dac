"""The NATS JetStream bus: connection, idempotent stream setup, de-duplicated publishing."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import StreamConfig

from contract.bus import StreamLimits, ensure_stream
from contract.bus_access import USERS
from libs.nats_client import servers, tls_options
from services.common.config import Settings

log = logging.getLogger(__name__)

# Header JetStream uses to drop a message it has already stored within the duplicate window.
MSG_ID_HEADER = "Nats-Msg-Id"
EVENT_TYPE_HEADER = "Almere-Event-Type"


@dataclass(frozen=True, kw_only=True)
class OutgoingMessage:
    subject: str
    payload: bytes
    msg_id: str
    event_type: str
    headers: dict[str, str]


def stream_limits(settings: Settings) -> StreamLimits:
    return StreamLimits(
        max_age_s=settings.stream_max_age_days * 86400,
        max_bytes=settings.stream_max_bytes,
        max_msg_bytes=settings.stream_max_msg_bytes,
        replicas=settings.stream_replicas,
    )


def credentials(settings: Settings) -> dict[str, str]:
    """nats.connect's arguments for this process's identity: an NKey seed (a file, or inline from a
    Secret) or, where the deployment hashes passwords into the server's configuration, a password."""
    if settings.nats_nkey_seed_file:
        return {"nkeys_seed": str(settings.nats_nkey_seed_file)}
    if settings.nats_nkey_seed:
        return {"nkeys_seed_str": settings.nats_nkey_seed}
    if settings.nats_user and settings.nats_password:
        return {"user": settings.nats_user, "password": settings.nats_password}
    return {}


def tls(settings: Settings) -> dict[str, Any]:
    """nats.connect's TLS arguments (see Settings.nats_tls): nats-server checked against the NATS CA
    (default: the services' CA) under the NATS server name (default: the services'), this process's
    own certificate presented."""
    return tls_options(
        ca_file=settings.nats_tls_ca_file or settings.tls_ca_file,
        cert_file=settings.tls_cert_file,
        key_file=settings.tls_key_file,
        server_name=settings.nats_tls_server_name or settings.tls_server_name,
    )


def connect_options(settings: Settings, user: str) -> dict[str, Any]:
    """nats.connect's arguments for bus user `user` (contract.bus_access): every server of the
    cluster, reconnecting (to another node) for as long as it takes, the identity and, when
    configured, TLS."""
    return {
        "servers": servers(settings.nats_url),
        "name": f"almere-{user}",
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 0.5,
        "inbox_prefix": USERS[user].inbox_prefix,
        **credentials(settings),
        **(tls(settings) if settings.nats_tls else {}),
    }


class Bus:
    def __init__(self, nc: Client, js: JetStreamContext) -> None:
        self.nc = nc
        self.js = js

    @classmethod
    async def connect(cls, settings: Settings, user: str) -> Bus:
        """Connect as bus user `user` with the servers, credentials and TLS in `settings`."""

        async def on_error(exc: Exception) -> None:
            log.warning("nats error: %s", exc)

        nc = await nats.connect(error_cb=on_error, **connect_options(settings, user))
        return cls(nc, nc.jetstream(timeout=5))

    async def ensure_stream(self, config: StreamConfig, *, update: bool = True) -> None:
        await ensure_stream(self.js, config, update=update)

    async def close(self) -> None:
        """Drain (deliver what is in flight), or just close while reconnecting: there is nothing to
        drain through a connection that is gone."""
        if self.nc.is_closed:
            return
        if self.nc.is_reconnecting or self.nc.is_connecting:
            await self.nc.close()
        else:
            await self.nc.drain()
