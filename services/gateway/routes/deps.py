"""What every route needs from the running gateway, and the caller's bearer token."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from fastapi import HTTPException, Request
from google.protobuf.timestamp_pb2 import Timestamp

from services.common.config import Settings
from services.gateway.formats.publisher import Publisher
from services.gateway.upstream import Metadata, Upstream, bearer


@dataclass(frozen=True, kw_only=True)
class Gateway:
    settings: Settings
    upstream: Upstream
    publisher: Publisher


def gateway(request: Request) -> Gateway:
    found: Gateway = request.app.state.gateway
    return found


def caller(request: Request) -> Metadata:
    """The caller's own token, passed on to the service, which checks its role and cuts what it may
    see. Without one: 401, as the services answer UNAUTHENTICATED."""
    authorization = request.headers.get("authorization", "")
    if not authorization.lower().startswith("bearer ") or not authorization[7:].strip():
        raise HTTPException(401, "send 'Authorization: Bearer <token>'", headers={"WWW-Authenticate": "Bearer"})
    return bearer(authorization)


def newest(*stamps: Timestamp) -> datetime | None:
    """The latest of some resources' times (Last-Modified of a document made of them)."""
    seconds = [s.ToDatetime(tzinfo=UTC) for s in stamps if s.seconds]
    return max(seconds) if seconds else None
