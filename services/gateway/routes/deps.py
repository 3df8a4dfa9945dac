"""What every route needs from the running gateway, and the caller's bearer token."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

from fastapi import HTTPException, Request
from google.protobuf.timestamp_pb2 import Timestamp

from services.common.auth import PURPOSE_METADATA, TokenStore
from services.common.config import Settings
from services.gateway.caching import FeedCache
from services.gateway.formats.publisher import Publisher
from services.gateway.upstream import Metadata, Upstream, bearer


@dataclass(frozen=True, kw_only=True)
class Gateway:
    settings: Settings
    upstream: Upstream
    publisher: Publisher
    # The callers the services know, to tell the dashboard who is logged in (the services decide
    # what each may do); None without a tokens file.
    tokens: TokenStore | None = None
    cache: FeedCache = field(default_factory=lambda: FeedCache(max_age_s=0))


def gateway(request: Request) -> Gateway:
    found: Gateway = request.app.state.gateway
    return found


# RFC 6750 b64token: anything else could not travel as gRPC metadata, and is no token of ours.
TOKEN = re.compile(r"[A-Za-z0-9._~+/-]+=*")
# The purpose a caller declares (partners' agreements name what they may be read for), passed on.
PURPOSE = re.compile(r"[a-z]+(-[a-z]+)*")


def caller(request: Request) -> Metadata:
    """The caller's own token, passed on to the service, which checks its role and cuts what it may
    see. Without one: 401, as the services answer UNAUTHENTICATED."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not TOKEN.fullmatch(token.strip()):
        raise HTTPException(401, "send 'Authorization: Bearer <token>'", headers={"WWW-Authenticate": "Bearer"})
    purpose = request.headers.get(PURPOSE_METADATA, "")
    declared = ((PURPOSE_METADATA, purpose),) if PURPOSE.fullmatch(purpose) else ()
    return (*bearer(f"Bearer {token.strip()}"), *declared)


def token_of(auth: Metadata) -> str:
    return auth[0][1].removeprefix("Bearer ")


def newest(*stamps: Timestamp) -> datetime | None:
    """The latest of some resources' times (Last-Modified of a document made of them)."""
    seconds = [s.ToDatetime(tzinfo=UTC) for s in stamps if s.seconds]
    return max(seconds) if seconds else None


async def read_body(request: Request, *, limit: int) -> bytes:
    """The body, refused (413) as soon as it passes `limit`: a 50 MB push is never held in memory."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"the document has {declared} bytes; at most {limit} are taken")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(413, f"the document passed {limit} bytes; at most {limit} are taken")
    return bytes(body)
