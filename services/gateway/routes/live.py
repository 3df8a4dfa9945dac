"""Live updates as Server-Sent Events: the services' Watch streams (a snapshot, then every change
committed later, each once), passed on with the caller's own token. A refusal or the end of the
service's stream arrives as an `error` event; browsers' EventSource reconnects by itself."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

import grpc
from almere.incidents.v1 import incidents_pb2 as ipb
from almere.parking.v1 import parking_pb2 as ppb
from fastapi import APIRouter, Depends
from google.protobuf.json_format import MessageToDict
from sse_starlette import EventSourceResponse

from services.gateway.routes.deps import Gateway, caller, gateway
from services.gateway.upstream import Metadata

router = APIRouter(prefix="/api/v1/live", tags=["live"])
GatewayDep = Annotated[Gateway, Depends(gateway)]
CallerDep = Annotated[Metadata, Depends(caller)]
PING_SECONDS = 15  # keeps proxies from closing a quiet stream


async def _relay(call: Any, *, kind: str, name: str) -> AsyncIterator[dict[str, str]]:
    """Each change as an event named `kind`, its id `<resource name>@<version>`; `name`: the field
    of the resource holding its name."""
    try:
        async for change in call:
            resource = getattr(change, kind)
            yield {
                "event": kind,
                "id": f"{getattr(resource, name)}@{resource.version}",
                "data": json.dumps(
                    {"snapshot": change.snapshot, kind: MessageToDict(resource)},
                    ensure_ascii=False,
                    separators=(",", ":"),
                ),
            }
    except grpc.aio.AioRpcError as error:
        yield {"event": "error", "data": json.dumps({"status": error.code().name, "detail": error.details()})}
    finally:
        call.cancel()


@router.get("/occupancy", summary="Occupancy of every facility the caller may see: snapshot, then changes")
async def live_occupancy(gw: GatewayDep, auth: CallerDep) -> EventSourceResponse:
    call = gw.upstream.parking.WatchOccupancy(ppb.WatchOccupancyRequest(), metadata=auth)
    return EventSourceResponse(_relay(call, kind="occupancy", name="facility"), ping=PING_SECONDS)


@router.get("/incidents", summary="Open incidents as the caller may see them: snapshot, then changes")
async def live_incidents(gw: GatewayDep, auth: CallerDep) -> EventSourceResponse:
    call = gw.upstream.incidents.WatchIncidents(ipb.WatchIncidentsRequest(), metadata=auth)
    return EventSourceResponse(_relay(call, kind="incident", name="name"), ping=PING_SECONDS)
