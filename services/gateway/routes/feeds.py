"""Open-data feeds in the exchange standards, for anybody (no token): DATEX II v3 parking table and
status and situations, SPDP-style parking index/static/dynamic, NGSI-LD entities, CAP 1.2 alerts.
They are read with the gateway's own `public` role, so they hold only what anybody may see, and
kept for a few seconds (caching.FeedCache), so anonymous readers cannot drive the services."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Literal

from almere.incidents.v1 import incidents_pb2 as ipb
from almere.parking.v1 import parking_pb2 as ppb
from fastapi import APIRouter, Depends, Query, Request, Response

from services.common.clock import utcnow
from services.gateway.caching import Document, digest_of, public
from services.gateway.formats import cap, datex2_parking, datex2_situation, ngsi, spdp
from services.gateway.problems import own_credentials
from services.gateway.routes.deps import Gateway, gateway

router = APIRouter(tags=["open data"])
XML = "application/xml"
JSON = "application/json"
GatewayDep = Annotated[Gateway, Depends(gateway)]
# CAP alerts say until when they hold (an hour past the reading while open): made again at least
# this often, even when nothing changed.
CAP_REFRESH_S = 1800


def _json(data: object) -> bytes:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


def _base(request: Request, gw: Gateway) -> str:
    """Where readers reach the gateway: the configured public URL (behind an Ingress), else this request's."""
    configured = gw.settings.gateway_public_url
    return configured.rstrip("/") if configured else str(request.base_url).rstrip("/")


async def _facilities_document(
    gw: Gateway, key: str, *, media_type: str, render: Callable[[list[ppb.Facility]], bytes]
) -> Document:
    async def read() -> tuple[str, Callable[[], bytes]]:
        with own_credentials():
            facilities = await gw.upstream.all_facilities(gw.upstream.public)
        return digest_of(facilities), lambda: render(facilities)

    return await gw.cache.document(key, read=read, media_type=media_type)


async def _incidents_document(
    gw: Gateway, key: str, *, media_type: str, render: Callable[[list[ipb.Incident]], bytes], extra: str = ""
) -> Document:
    async def read() -> tuple[str, Callable[[], bytes]]:
        with own_credentials():
            incidents = await gw.upstream.public_incidents()
        return digest_of(incidents, extra), lambda: render(incidents)

    return await gw.cache.document(key, read=read, media_type=media_type)


def _answer(request: Request, gw: Gateway, document: Document) -> Response:
    return public(request, document, max_age_s=gw.settings.gateway_feed_max_age_seconds)


@router.get("/feeds/datex2/parking-table", summary="DATEX II v3 ParkingTablePublication (static facilities)")
async def datex2_parking_table(request: Request, gw: GatewayDep) -> Response:
    def render(facilities: list[ppb.Facility]) -> bytes:
        return datex2_parking.parking_table_publication(facilities, publisher=gw.publisher, now=utcnow())

    return _answer(request, gw, await _facilities_document(gw, "datex2-table", media_type=XML, render=render))


@router.get("/feeds/datex2/parking-status", summary="DATEX II v3 ParkingStatusPublication (live occupancy)")
async def datex2_parking_status(request: Request, gw: GatewayDep) -> Response:
    def render(facilities: list[ppb.Facility]) -> bytes:
        return datex2_parking.parking_status_publication(facilities, publisher=gw.publisher, now=utcnow())

    return _answer(request, gw, await _facilities_document(gw, "datex2-status", media_type=XML, render=render))


@router.get("/feeds/datex2/situations", summary="DATEX II v3 SituationPublication (incidents, closures, events)")
async def datex2_situations(request: Request, gw: GatewayDep) -> Response:
    def render(incidents: list[ipb.Incident]) -> bytes:
        return datex2_situation.situation_publication(incidents, publisher=gw.publisher, now=utcnow())

    return _answer(request, gw, await _incidents_document(gw, "datex2-situations", media_type=XML, render=render))


@router.get("/feeds/spdp/index", summary="SPDP v2-style index of facilities with static and dynamic URLs")
async def spdp_index(request: Request, gw: GatewayDep) -> Response:
    base = f"{_base(request, gw)}/feeds/spdp"

    def render(facilities: list[ppb.Facility]) -> bytes:
        return _json(spdp.index(facilities, base_url=base))

    return _answer(request, gw, await _facilities_document(gw, f"spdp-index {base}", media_type=JSON, render=render))


async def _one_facility(request: Request, gw: Gateway, facility_id: str, *, dynamic: bool) -> Response:
    async def read() -> tuple[str, Callable[[], bytes]]:
        with own_credentials():
            reply = await gw.upstream.parking.GetFacility(
                ppb.GetFacilityRequest(name=f"facilities/{facility_id}"), metadata=gw.upstream.public, timeout=10
            )
        facility = reply.facility
        return digest_of([facility]), lambda: _json(spdp.dynamic(facility) if dynamic else spdp.static(facility))

    key = f"spdp-{'dynamic' if dynamic else 'static'} {facility_id}"
    return _answer(request, gw, await gw.cache.document(key, read=read, media_type=JSON))


@router.get("/feeds/spdp/static/{facility_id}", summary="SPDP static data of one facility")
async def spdp_static(facility_id: str, request: Request, gw: GatewayDep) -> Response:
    return await _one_facility(request, gw, facility_id, dynamic=False)


@router.get("/feeds/spdp/dynamic/{facility_id}", summary="SPDP dynamic data (occupancy) of one facility")
async def spdp_dynamic(facility_id: str, request: Request, gw: GatewayDep) -> Response:
    return await _one_facility(request, gw, facility_id, dynamic=True)


@router.get("/ngsi-ld/v1/entities", summary="NGSI-LD entities: OffStreetParking and Alert (Smart Data Models)")
async def ngsi_entities(
    request: Request,
    gw: GatewayDep,
    type: Annotated[Literal["OffStreetParking", "Alert"], Query(description="entity type")],
    options: Annotated[str, Query(max_length=64, description="keyValues for the simplified form")] = "",
) -> Response:
    key_values = "keyValues" in options.split(",")
    key = f"ngsi {type} {key_values}"
    if type == "OffStreetParking":

        def parking(facilities: list[ppb.Facility]) -> bytes:
            off_street = [f for f in facilities if f.kind != ppb.FACILITY_KIND_ON_STREET_ZONE]  # OnStreetParking's
            return _json([ngsi.offstreet_parking(f, publisher=gw.publisher, key_values=key_values) for f in off_street])

        document = await _facilities_document(gw, key, media_type="application/ld+json", render=parking)
    else:

        def alerts(incidents: list[ipb.Incident]) -> bytes:
            return _json([ngsi.alert(i, publisher=gw.publisher, key_values=key_values) for i in incidents])

        document = await _incidents_document(gw, key, media_type="application/ld+json", render=alerts)
    return _answer(request, gw, document)


@router.get("/feeds/cap/alerts.atom", summary="The public CAP 1.2 alerts as an Atom feed (what CAP aggregators poll)")
async def cap_feed(request: Request, gw: GatewayDep) -> Response:
    url = f"{_base(request, gw)}/feeds/cap/alerts.atom"

    def render(incidents: list[ipb.Incident]) -> bytes:
        return cap.alerts(incidents, publisher=gw.publisher, now=utcnow(), feed_url=url)

    period = str(int(utcnow().timestamp()) // CAP_REFRESH_S)
    document = await _incidents_document(
        gw, f"cap-feed {url}", media_type="application/atom+xml", render=render, extra=period
    )
    return _answer(request, gw, document)


@router.get("/feeds/cap/{incident_id}.xml", summary="One incident as a CAP 1.2 alert")
async def cap_alert(incident_id: str, request: Request, gw: GatewayDep) -> Response:
    async def read() -> tuple[str, Callable[[], bytes]]:
        with own_credentials():
            reply = await gw.upstream.incidents.GetIncident(
                ipb.GetIncidentRequest(name=f"incidents/{incident_id}"), metadata=gw.upstream.public, timeout=10
            )
        incident = reply.incident  # the service answers NOT_FOUND for what the public may not see
        period = str(int(utcnow().timestamp()) // CAP_REFRESH_S)
        return digest_of([incident], period), lambda: cap.alert(incident, publisher=gw.publisher, now=utcnow())

    return _answer(request, gw, await gw.cache.document(f"cap {incident_id}", read=read, media_type=XML))
