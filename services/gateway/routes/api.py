"""The project's own resources as JSON (the gRPC messages in their proto3 JSON form), read with the
caller's own token: what the services let that role see, nothing more."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated

from almere.incidents.v1 import incidents_pb2 as ipb
from almere.parking.v1 import parking_pb2 as ppb
from fastapi import APIRouter, Depends, Query, Request, Response
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from services.gateway.caching import conditional
from services.gateway.routes.deps import Gateway, caller, gateway, newest
from services.gateway.upstream import Metadata

router = APIRouter(prefix="/api/v1", tags=["resources"])
GatewayDep = Annotated[Gateway, Depends(gateway)]
CallerDep = Annotated[Metadata, Depends(caller)]
PageSize = Annotated[int, Query(ge=0, le=1000, description="at most this many (default 50)")]
PageToken = Annotated[str, Query(max_length=512, description="next_page_token of the previous page")]


def _private(request: Request, message: Message, last_modified: datetime | None) -> Response:
    body = json.dumps(MessageToDict(message), ensure_ascii=False, separators=(",", ":")).encode()
    return conditional(
        request,
        body,
        media_type="application/json",
        last_modified=last_modified,
        cache_control="private, no-cache",
    )


@router.get("/facilities", summary="Facilities with their occupancy (AIP-158 paging)")
async def list_facilities(
    request: Request, gw: GatewayDep, auth: CallerDep, page_size: PageSize = 0, page_token: PageToken = ""
) -> Response:
    reply = await gw.upstream.parking.ListFacilities(
        ppb.ListFacilitiesRequest(page_size=page_size, page_token=page_token), metadata=auth, timeout=10
    )
    return _private(request, reply, newest(*(f.occupancy.update_time for f in reply.facilities)))


@router.get("/facilities/{facility_id}", summary="One facility with its occupancy")
async def get_facility(facility_id: str, request: Request, gw: GatewayDep, auth: CallerDep) -> Response:
    reply = await gw.upstream.parking.GetFacility(
        ppb.GetFacilityRequest(name=f"facilities/{facility_id}"), metadata=auth, timeout=10
    )
    return _private(request, reply.facility, newest(reply.facility.occupancy.update_time, reply.facility.update_time))


@router.get("/incidents", summary="Incidents as the caller may see them (AIP-158 paging)")
async def list_incidents(
    request: Request, gw: GatewayDep, auth: CallerDep, page_size: PageSize = 0, page_token: PageToken = ""
) -> Response:
    reply = await gw.upstream.incidents.ListIncidents(
        ipb.ListIncidentsRequest(page_size=page_size, page_token=page_token), metadata=auth, timeout=10
    )
    return _private(request, reply, newest(*(i.update_time for i in reply.incidents)))


@router.get("/incidents/{incident_id}", summary="One incident as the caller may see it")
async def get_incident(incident_id: str, request: Request, gw: GatewayDep, auth: CallerDep) -> Response:
    reply = await gw.upstream.incidents.GetIncident(
        ipb.GetIncidentRequest(name=f"incidents/{incident_id}"), metadata=auth, timeout=10
    )
    return _private(request, reply.incident, newest(reply.incident.update_time))
