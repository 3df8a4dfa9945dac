"""Every read path of partners' occupancy, from every role, over two partners with different
agreements, against an oracle written from the agreements alone: each caller gets exactly what its
audience may see (the count, rounded, no count, a past count) or a refusal, never more."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from almere.parking.v1 import parking_pb2 as pb
from almere.partners.v1 import partners_pb2 as ppb
from almere.type.v1 import geo_pb2

from services.parking.service import SPEC as PARKING
from services.partners.service import SPEC as PARTNERS
from tests.conftest import ROLES
from tests.integration.helpers import CENTRE, Parking, Partners, ts

A = ppb.Agreement(
    audiences=[
        ppb.AudienceTerms(audience=ppb.AUDIENCE_OPTIMIZER, detail=ppb.DETAIL_RAW),
        ppb.AudienceTerms(audience=ppb.AUDIENCE_ENGINEER, detail=ppb.DETAIL_ROUNDED, round_to=10),
        ppb.AudienceTerms(audience=ppb.AUDIENCE_PUBLIC, detail=ppb.DETAIL_STATUS_ONLY, delay_minutes=5),
    ],
    retention_days=30,
    purposes=["traffic-management"],
)
B = ppb.Agreement(
    audiences=[
        ppb.AudienceTerms(audience=ppb.AUDIENCE_PUBLIC_SAFETY, detail=ppb.DETAIL_RAW),
        ppb.AudienceTerms(audience=ppb.AUDIENCE_PARTNERS, detail=ppb.DETAIL_ROUNDED, round_to=5, delay_minutes=5),
        ppb.AudienceTerms(audience=ppb.AUDIENCE_ENGINEER, detail=ppb.DETAIL_STATUS_ONLY),
    ],
    retention_days=30,
    purposes=["public-safety", "traffic-management"],
)
# Facility -> (operator, its agreement, count 10 minutes ago, count now).
GARAGES = {"garage-a": ("op-a", A, 40, 57), "garage-b": ("op-b", B, 31, 23)}
# The oracle's own reading of which audience a role is in (the services' AUDIENCES, restated).
AUDIENCE = {
    "engineer": ppb.AUDIENCE_ENGINEER,
    "optimizer": ppb.AUDIENCE_OPTIMIZER,
    "sim": ppb.AUDIENCE_OPTIMIZER,
    "police": ppb.AUDIENCE_PUBLIC_SAFETY,
    "fire": ppb.AUDIENCE_PUBLIC_SAFETY,
    "ems": ppb.AUDIENCE_PUBLIC_SAFETY,
    "operator": ppb.AUDIENCE_PARTNERS,
    "other_operator": ppb.AUDIENCE_PARTNERS,
    "partner": ppb.AUDIENCE_PARTNERS,
    "other_partner": ppb.AUDIENCE_PARTNERS,
    "public": ppb.AUDIENCE_PUBLIC,
}
OWNERS = {"operator": "op-a", "other_operator": "op-b"}
NO_COUNT = "no count"
REFUSED = "refused"


def expected(caller: str, facility: str, purpose: str) -> int | str:
    """What `caller` may see of `facility`'s count: a number, NO_COUNT, or REFUSED."""
    operator, agreement, then, now = GARAGES[facility]
    if OWNERS.get(caller) == operator:
        return now
    terms = next((t for t in agreement.audiences if t.audience == AUDIENCE.get(caller)), None)
    if terms is None or (terms.audience != ppb.AUDIENCE_PUBLIC and purpose not in agreement.purposes):
        return REFUSED
    if terms.detail == ppb.DETAIL_STATUS_ONLY:
        return NO_COUNT
    count = then if terms.delay_minutes else now
    return round(count / terms.round_to) * terms.round_to if terms.detail == ppb.DETAIL_ROUNDED else count


def seen(occupancy: pb.Occupancy) -> int | str:
    outcome = occupancy.sharing.outcome
    if outcome in (ppb.ACCESS_OUTCOME_WITHHELD, ppb.ACCESS_OUTCOME_REFUSED):
        return REFUSED
    if occupancy.sharing.counts_withheld:
        return NO_COUNT
    return occupancy.occupied_spaces


@dataclass(kw_only=True)
class City:
    parking: Parking
    tokens: dict[str, str]


@pytest.fixture
async def city(start_service: Callable[..., Awaitable[str]], tokens: dict[str, str]) -> AsyncIterator[City]:
    async with (
        grpc.aio.insecure_channel(await start_service(PARKING)) as p,
        grpc.aio.insecure_channel(await start_service(PARTNERS)) as q,
    ):
        parking, partners = Parking(p, tokens), Partners(q, tokens)
        before = datetime.now(UTC) - timedelta(minutes=10)
        for facility, (operator, agreement, then, now) in GARAGES.items():
            await partners.as_("engineer").CreatePartner(
                ppb.CreatePartnerRequest(
                    partner_id=operator,
                    partner=ppb.Partner(display_name=operator, kind=ppb.PARTNER_KIND_GARAGE_OPERATOR),
                )
            )
            await parking.create(facility, operator=operator)
            await parking.report(facility, then, 1, caller="engineer", when=before)
            await parking.report(facility, now, 2, caller="engineer")
            await partners.as_("engineer").SetAgreement(
                ppb.SetAgreementRequest(name=f"partners/{operator}/agreements/occupancy", agreement=agreement)
            )
        started = time.monotonic()
        while not all(f.occupancy.sharing.revision for f in (await _public_list(parking)).facilities):
            assert time.monotonic() - started < 5, "the agreements did not reach the parking service"
            await asyncio.sleep(0.02)
        yield City(parking=parking, tokens=tokens)


async def _public_list(parking: Parking) -> pb.ListFacilitiesResponse:
    answer: pb.ListFacilitiesResponse = await parking.as_("public").ListFacilities(pb.ListFacilitiesRequest())
    return answer


async def _answer(call: Awaitable[Any]) -> Any:
    try:
        return await call
    except grpc.aio.AioRpcError as err:
        return err.code()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("purpose", ["traffic-management", "public-safety", ""])
async def test_every_occupancy_read_path_gives_every_role_what_the_agreements_allow(city: City, purpose: str) -> None:
    failures = []
    for caller in ROLES:
        client = city.parking.as_(caller, purpose=purpose)
        listed = await _answer(client.ListFacilities(pb.ListFacilitiesRequest()))
        recommended = await _answer(
            client.RecommendFacility(
                pb.RecommendFacilityRequest(destination=geo_pb2.LatLng(latitude=CENTRE[0], longitude=CENTRE[1]))
            )
        )
        for facility in GARAGES:
            want = expected(caller, facility, purpose)
            name = f"facilities/{facility}"
            hour = pb.GetOccupancyHistoryRequest(facility=name, start_time=ts(datetime.now(UTC) - timedelta(hours=1)))
            answers: dict[str, Any] = {
                "GetOccupancy": await _answer(client.GetOccupancy(pb.GetOccupancyRequest(facility=name))),
                "GetFacility": await _answer(client.GetFacility(pb.GetFacilityRequest(name=name))),
                "GetOccupancyHistory": await _answer(client.GetOccupancyHistory(hour)),
                "Forecast": await _answer(client.Forecast(pb.ForecastRequest(facility=name))),
            }
            got: dict[str, Any] = {}
            for path, answer in answers.items():
                if isinstance(answer, grpc.StatusCode):
                    got[path] = REFUSED if answer == grpc.StatusCode.PERMISSION_DENIED else answer
                elif path == "GetOccupancyHistory":
                    got[path] = "history"
                else:
                    got[path] = seen(answer.occupancy if path == "GetOccupancy" else answer.facility.occupancy)
            if not isinstance(listed, grpc.StatusCode):
                got["ListFacilities"] = seen(next(f.occupancy for f in listed.facilities if f.name == name))
            if not isinstance(recommended, grpc.StatusCode):
                got["RecommendFacility"] = seen(
                    next(r.facility.occupancy for r in recommended.recommendations if r.facility.name == name)
                )
            allowed = ROLES[caller].split(":")[0] not in ("service", "partner")  # the role table's blanks
            history_ok = allowed and caller != "public" and isinstance(want, int)
            wants = {
                "GetOccupancy": want if allowed else REFUSED,
                "GetFacility": want if allowed else REFUSED,
                "GetOccupancyHistory": "history" if history_ok else REFUSED,
                # Read as its history is; ten minutes of it are too few to learn from.
                "Forecast": grpc.StatusCode.FAILED_PRECONDITION if history_ok else REFUSED,
            }
            if not isinstance(listed, grpc.StatusCode):
                wants["ListFacilities"] = want
            if not isinstance(recommended, grpc.StatusCode):
                wants["RecommendFacility"] = want
            if got != wants:
                failures.append(f"{caller} ({ROLES[caller]}) on {facility}: got {got}, want {wants}")
    assert not failures, "\n".join(failures)
