"""Open-data feeds in the exchange standards, for anybody (no token): DATEX II v3 parking table and
status and situations, SPDP-style parking index/static/dynamic, NGSI-LD entities, CAP 1.2 alerts.
They are read with the gateway's own `public` role, so they hold only what anybody may see."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Literal

from almere.parking.v1 import parking_pb2 as ppb
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response

from services.common.clock import utcnow
from services.gateway.caching import conditional
from services.gateway.formats import cap, datex2_parking, datex2_situation, ngsi, spdp
from services.gateway.routes.deps import Gateway, gateway, newest

router = APIRouter(tags=["open data"])
XML = "application/xml"
JSON = "application/json"
LD_JSON = "application/ld+json"
GatewayDep = Annotated[Gateway, Depends(gateway)]


def _public(request: Request, gw: Gateway, body: bytes, media_type: str, last_modified: datetime | None) -> Response:
    return conditional(
        request,
        body,
        media_type=media_type,
        last_modified=last_modified,
        cache_control=f"public, max-age={gw.settings.gateway_feed_max_age_seconds}",
    )


def _json(data: object) -> bytes:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


@router.get("/feeds/datex2/parking-table", summary="DATEX II v3 ParkingTablePublication (static facilities)")
async def datex2_parking_table(request: Request, gw: GatewayDep) -> Response:
    facilities = await gw.upstream.all_facilities(gw.upstream.public)
    body = datex2_parking.parking_table_publication(facilities, publisher=gw.publisher, now=utcnow())
    return _public(request, gw, body, XML, newest(*(f.update_time for f in facilities)))


@router.get("/feeds/datex2/parking-status", summary="DATEX II v3 ParkingStatusPublication (live occupancy)")
async def datex2_parking_status(request: Request, gw: GatewayDep) -> Response:
    facilities = await gw.upstream.all_facilities(gw.upstream.public)
    body = datex2_parking.parking_status_publication(facilities, publisher=gw.publisher, now=utcnow())
    return _public(request, gw, body, XML, newest(*(f.occupancy.update_time for f in facilities)))


@router.get("/feeds/datex2/situations", summary="DATEX II v3 SituationPublication (incidents, closures, events)")
async def datex2_situations(request: Request, gw: GatewayDep) -> Response:
    incidents = await gw.upstream.public_incidents()
    body = datex2_situation.situation_publication(incidents, publisher=gw.publisher, now=utcnow())
    return _public(request, gw, body, XML, newest(*(i.update_time for i in incidents)))


@router.get("/feeds/spdp/index", summary="SPDP v2-style index of facilities with static and dynamic URLs")
async def spdp_index(request: Request, gw: GatewayDep) -> Response:
    facilities = await gw.upstream.all_facilities(gw.upstream.public)
    base = str(request.url_for("spdp_index")).removesuffix("/index")
    body = _json(spdp.index(facilities, base_url=base))
    return _public(request, gw, body, JSON, newest(*(f.update_time for f in facilities)))


async def _one_facility(gw: Gateway, facility_id: str) -> ppb.Facility:
    reply = await gw.upstream.parking.GetFacility(
        ppb.GetFacilityRequest(name=f"facilities/{facility_id}"), metadata=gw.upstream.public, timeout=10
    )
    return reply.facility


@router.get("/feeds/spdp/static/{facility_id}", summary="SPDP static data of one facility")
async def spdp_static(facility_id: str, request: Request, gw: GatewayDep) -> Response:
    facility = await _one_facility(gw, facility_id)
    body = _json(spdp.static(facility))
    return _public(request, gw, body, JSON, newest(facility.update_time))


@router.get("/feeds/spdp/dynamic/{facility_id}", summary="SPDP dynamic data (occupancy) of one facility")
async def spdp_dynamic(facility_id: str, request: Request, gw: GatewayDep) -> Response:
    facility = await _one_facility(gw, facility_id)
    body = _json(spdp.dynamic(facility))
    return _public(request, gw, body, JSON, newest(facility.occupancy.update_time))


@router.get("/ngsi-ld/v1/entities", summary="NGSI-LD entities: OffStreetParking and Alert (Smart Data Models)")
async def ngsi_entities(
    request: Request,
    gw: GatewayDep,
    type: Annotated[Literal["OffStreetParking", "Alert"], Query(description="entity type")],
    options: Annotated[str, Query(description="keyValues for the simplified form")] = "",
) -> Response:
    key_values = "keyValues" in options.split(",")
    if type == "OffStreetParking":
        facilities = await gw.upstream.all_facilities(gw.upstream.public)
        facilities = [f for f in facilities if f.kind != ppb.FACILITY_KIND_ON_STREET_ZONE]  # OnStreetParking's
        entities = [ngsi.offstreet_parking(f, publisher=gw.publisher, key_values=key_values) for f in facilities]
        modified = newest(*(f.occupancy.update_time for f in facilities), *(f.update_time for f in facilities))
    else:
        incidents = await gw.upstream.public_incidents()
        entities = [ngsi.alert(i, publisher=gw.publisher, key_values=key_values) for i in incidents]
        modified = newest(*(i.update_time for i in incidents))
    return _public(request, gw, _json(entities), LD_JSON, modified)


@router.get("/feeds/cap/{incident_id}.xml", summary="One incident as a CAP 1.2 alert")
async def cap_alert(incident_id: str, request: Request, gw: GatewayDep) -> Response:
    incidents = {i.name: i for i in await gw.upstream.public_incidents()}
    incident = incidents.get(f"incidents/{incident_id}")
    if incident is None:  # unknown, or not public (unconfirmed, over, a police action): the same answer
        raise HTTPException(404, f"no public alert for incident {incident_id!r}")
    body = cap.alert(incident, publisher=gw.publisher, now=utcnow())
    return _public(request, gw, body, XML, newest(incident.update_time))


@router.get("/feeds/cap/alerts.atom", summary="The public CAP 1.2 alerts as an Atom feed (what CAP aggregators poll)")
async def cap_feed(request: Request, gw: GatewayDep) -> Response:
    incidents = await gw.upstream.public_incidents()
    body = cap.alerts(incidents, publisher=gw.publisher, now=utcnow(), feed_url=str(request.url_for("cap_feed")))
    return _public(request, gw, body, "application/atom+xml", newest(*(i.update_time for i in incidents)))
