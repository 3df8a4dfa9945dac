"""The gateway's exports follow a partner's agreement: a garage its operator shares with the public as
its status only appears in every open-data feed with its status and without figures (never as zero
free spaces), while a caller of the JSON API declaring its purpose gets what its own audience may."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import httpx
from almere.partners.v1 import partners_pb2 as ppb
from lxml import etree

from services.partners.service import SPEC as PARTNERS
from tests.integration.helpers import Parking, Partners

STATUS_ONLY = ppb.Agreement(
    audiences=[
        ppb.AudienceTerms(audience=ppb.AUDIENCE_PUBLIC, detail=ppb.DETAIL_STATUS_ONLY),
        ppb.AudienceTerms(audience=ppb.AUDIENCE_ENGINEER, detail=ppb.DETAIL_ROUNDED, round_to=10),
    ],
    retention_days=30,
    purposes=["traffic-management"],
)


async def test_open_data_feeds_carry_a_status_only_garage_without_figures(
    parking: str, start_service: Callable[..., Awaitable[str]], gateway: str, tokens: dict[str, str]
) -> None:
    async with (
        grpc.aio.insecure_channel(parking) as p,
        grpc.aio.insecure_channel(await start_service(PARTNERS)) as q,
    ):
        garages, partners = Parking(p, tokens), Partners(q, tokens)
        await garages.create("garage-a", capacity=100)  # operator op-a
        await garages.create("garage-b", capacity=50, operator="city")
        await garages.report("garage-a", 96, 1)
        await garages.report("garage-b", 20, 1, caller="engineer")
        await partners.as_("engineer").CreatePartner(
            ppb.CreatePartnerRequest(
                partner_id="op-a", partner=ppb.Partner(display_name="A", kind=ppb.PARTNER_KIND_GARAGE_OPERATOR)
            )
        )
        await partners.as_("operator").SetAgreement(
            ppb.SetAgreementRequest(name="partners/op-a/agreements/occupancy", agreement=STATUS_ONLY)
        )
    async with httpx.AsyncClient(base_url=gateway) as http:
        started = time.monotonic()
        while (
            "vacantSpaces"
            in (await http.get("/feeds/spdp/dynamic/garage-a")).json()["parkingFacilityDynamicInformation"][
                "facilityActualStatus"
            ]
        ):
            assert time.monotonic() - started < 5, "the agreement did not reach the parking service"
            await asyncio.sleep(0.05)
        spdp = await _spdp(http, "garage-a")
        assert spdp["facilityActualStatus"]["statusDescription"].startswith("Almost full")
        city_garage = await _spdp(http, "garage-b")
        assert city_garage["facilityActualStatus"]["vacantSpaces"] == 30

        tree = etree.fromstring((await http.get("/feeds/datex2/parking-status")).content)
        records = {
            r.xpath("string(.//*[local-name()='parkingRecordReference']/@id)"): r
            for r in tree.xpath("//*[local-name()='parkingRecordStatus']")
        }
        partner_record = next(r for key, r in records.items() if key.endswith("garage-a"))
        assert not partner_record.xpath(".//*[local-name()='parkingNumberOfVacantSpaces']")
        assert partner_record.xpath("string(.//*[local-name()='parkingSiteStatus'])") == "almostFull"

        ngsi = (
            await http.get("/ngsi-ld/v1/entities", params={"type": "OffStreetParking", "options": "keyValues"})
        ).json()
        entity = next(e for e in ngsi if e["id"].endswith(":garage-a"))
        assert entity["status"] == ["almostFull"] and "availableSpotNumber" not in entity

        engineer = {"Authorization": f"Bearer {tokens['engineer']}"}
        declared = await http.get("/api/v1/facilities", headers={**engineer, "x-almere-purpose": "traffic-management"})
        shown = {f["name"]: f["occupancy"] for f in declared.json()["facilities"]}
        assert shown["facilities/garage-a"]["occupiedSpaces"] == 100, "rounded to 10 for engineers"
        undeclared = await http.get("/api/v1/facilities", headers=engineer)
        sharing = {f["name"]: f["occupancy"].get("sharing", {}) for f in undeclared.json()["facilities"]}
        assert sharing["facilities/garage-a"]["outcome"] == "ACCESS_OUTCOME_REFUSED"
        assert "declare one in 'x-almere-purpose' metadata" in sharing["facilities/garage-a"]["reason"]


async def _spdp(http: httpx.AsyncClient, facility: str) -> Any:
    return (await http.get(f"/feeds/spdp/dynamic/{facility}")).json()["parkingFacilityDynamicInformation"]


async def test_a_partner_feeds_its_counter_over_http_and_nothing_but_counts_gets_in(
    start_service: Callable[..., Awaitable[str]], start_gateway: Callable[..., Awaitable[str]], tokens: dict[str, str]
) -> None:
    from datetime import UTC, datetime, timedelta

    from services.counters.service import SPEC as COUNTERS

    counters_at, partners_at = await start_service(COUNTERS), await start_service(PARTNERS)
    gateway = await start_gateway(counters_address=counters_at, partners_address=partners_at)
    partner = {"Authorization": f"Bearer {tokens['partner']}"}
    engineer = {"Authorization": f"Bearer {tokens['engineer']}"}
    async with httpx.AsyncClient(base_url=gateway) as http:
        created = await http.post(
            "/api/v1/rpc/partners/CreatePartner",
            headers=engineer,
            json={"partnerId": "firm-a", "partner": {"displayName": "Shop A", "kind": "PARTNER_KIND_BUSINESS"}},
        )
        assert created.status_code == 200, created.text
        counter = {
            "parent": "partners/firm-a",
            "counterId": "door",
            "counter": {
                "displayName": "Shop door",
                "kind": "COUNT_KIND_PEOPLE",
                "location": {"latitude": 52.37, "longitude": 5.21},
                "directions": ["in", "out"],
            },
        }
        started = time.monotonic()
        while (
            answer := await http.post("/api/v1/rpc/counters/CreateCounter", headers=partner, json=counter)
        ).status_code != 200:
            assert time.monotonic() - started < 5, answer.text  # the registry reaches the counter service
            await asyncio.sleep(0.05)
        end = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
        count = {
            "direction": "in",
            "intervalStart": (end - timedelta(minutes=15)).isoformat().replace("+00:00", "Z"),
            "intervalEnd": end.isoformat().replace("+00:00", "Z"),
            "count": 17,
        }
        feed = {"counter": "partners/firm-a/counters/door", "counts": [count]}
        sneaky = {**feed, "counts": [{**count, "deviceMac": "AA:BB:CC:DD:EE:FF"}]}
        refused = await http.post("/api/v1/rpc/counters/ReportCounts", headers=partner, json=sneaky)
        assert refused.status_code == 400 and "deviceMac" in refused.text
        kept = await http.post("/api/v1/rpc/counters/ReportCounts", headers=partner, json=feed)
        assert kept.status_code == 200 and kept.json() == {"accepted": 1}
        read = await http.post(
            "/api/v1/rpc/counters/ListCounts",
            headers=partner,
            json={"counter": "partners/firm-a/counters/door", "startTime": count["intervalStart"]},
        )
        assert [c["count"] for c in read.json()["counts"]] == [17], "only the clean feed was kept"
