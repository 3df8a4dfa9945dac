"""The NATS JetStream bus: connection, idempotent stream setup, de-duplicated publishing."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import StreamConfig

from contract.bus import StreamLimits, ensure_stream
from contract.bus_access import USERS
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


class Bus:
    def __init__(self, nc: Client, js: JetStreamContext) -> None:
        self.nc = nc
        self.js = js

    @classmethod
    async def connect(cls, settings: Settings, user: str) -> Bus:
        """Connect as bus user `user` (contract.bus_access) with the credentials in `settings`."""

        async def on_error(exc: Exception) -> None:
            log.warning("nats error: %s", exc)

        nc = await nats.connect(
            settings.nats_url,
            name=f"almere-{user}",
            error_cb=on_error,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            inbox_prefix=USERS[user].inbox_prefix,
            **credentials(settings),
        )
        return cls(nc, nc.jetstream(timeout=5))

    async def ensure_stream(self, config: StreamConfig, *, update: bool = True) -> None:
        await ensure_stream(self.js, config, update=update)

    async def close(self) -> None:
        if not self.nc.is_closed:
            await self.nc.drain()
