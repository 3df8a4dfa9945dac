"""Operators push their feed documents here instead of being polled: the same readers, checks and
reports as a poll. A push is accepted only with the token the feed is configured with (the
operator's own), so nobody else can speak for its garages."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse

from services.gateway.ingest.poller import FeedPoller, IngestReport, Outcome
from services.gateway.routes.deps import Gateway, caller, gateway, read_body, token_of
from services.gateway.upstream import Metadata

router = APIRouter(prefix="/api/v1/feeds", tags=["feeds in"])


def _answer(report: IngestReport) -> JSONResponse:
    status = 422 if report.outcome is Outcome.REJECTED else 200
    rejected = [{"reason": str(r.reason), "message": r.message, "record": r.record} for r in report.rejected]
    return JSONResponse({"outcome": str(report.outcome), "reports": dict(report.reports), "rejected": rejected}, status)


@router.post("/{feed}", summary="Push one document of a configured operator feed (SPDP or DATEX II status)")
async def push(
    feed: str,
    request: Request,
    gw: Annotated[Gateway, Depends(gateway)],
    auth: Annotated[Metadata, Depends(caller)],
) -> JSONResponse:
    poller: FeedPoller | None = request.app.state.feeds.get(feed)
    if poller is None:
        raise HTTPException(404, f"no feed {feed!r} is configured")
    if not hmac.compare_digest(token_of(auth).encode(), poller.config.operator_token.encode()):
        raise HTTPException(403, f"only the operator of feed {feed!r} may push to it, with its own token")
    body = await read_body(request, limit=min(gw.settings.gateway_max_body_bytes, poller.config.max_bytes))
    return _answer(await poller.push(body))
