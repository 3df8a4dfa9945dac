"""Every role reading two partners' counters' counts, under different `sensor-counts` agreements and
with three declared purposes, against an oracle written from the agreements alone: each caller gets
exactly what its audience may see (the counts, rounded, only those a delay old) or a refusal."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from almere.counters.v1 import counters_pb2 as pb
from almere.partners.v1 import partners_pb2 as ppb
from almere.type.v1 import geo_pb2

from services.counters.service import SPEC as COUNTERS
from services.partners.service import SPEC as PARTNERS
from tests.conftest import ROLES
from tests.integration.helpers import Counters, Partners, ts
from tests.security.test_partner_reads import AUDIENCE

A = ppb.Agreement(
    audiences=[
        ppb.AudienceTerms(audience=ppb.AUDIENCE_OPTIMIZER, detail=ppb.DETAIL_RAW),
        ppb.AudienceTerms(audience=ppb.AUDIENCE_ENGINEER, detail=ppb.DETAIL_ROUNDED, round_to=10),
        ppb.AudienceTerms(audience=ppb.AUDIENCE_PUBLIC, detail=ppb.DETAIL_ROUNDED, round_to=5, delay_minutes=30),
    ],
    retention_days=30,
    purposes=["traffic-management"],
)
B = ppb.Agreement(
    audiences=[
        ppb.AudienceTerms(audience=ppb.AUDIENCE_PUBLIC_SAFETY, detail=ppb.DETAIL_RAW),
        ppb.AudienceTerms(audience=ppb.AUDIENCE_PARTNERS, detail=ppb.DETAIL_RAW, delay_minutes=30),
        ppb.AudienceTerms(audience=ppb.AUDIENCE_ENGINEER, detail=ppb.DETAIL_RAW),
    ],
    retention_days=30,
    purposes=["public-safety", "traffic-management"],
)
# The minute the test started: set for each test (a module-level time would age while the suite runs).
NOW = datetime.now(UTC).replace(second=0, microsecond=0)
# Counter -> (partner, its agreement, count of the interval that ended 45 minutes ago, of the one
# that ended 25 minutes ago).
COUNTERS_OF = {
    "partners/firm-a/counters/door": ("firm-a", A, 47, 62),
    "partners/firm-b/counters/door": ("firm-b", B, 13, 21),
}
OWNERS = {"partner": "firm-a", "other_partner": "firm-b"}
REFUSED = "refused"


def expected(caller: str, counter: str, purpose: str) -> list[int] | str:
    partner, agreement, then, now = COUNTERS_OF[counter]
    if ROLES[caller].startswith("service:"):
        return REFUSED  # not a reader of counts at all
    if OWNERS.get(caller) == partner:
        return [then, now]
    terms = next((t for t in agreement.audiences if t.audience == AUDIENCE.get(caller)), None)
    if terms is None or (terms.audience != ppb.AUDIENCE_PUBLIC and purpose not in agreement.purposes):
        return REFUSED
    counts = [then] if terms.delay_minutes else [then, now]
    if terms.detail == ppb.DETAIL_ROUNDED:
        counts = [round(c / terms.round_to) * terms.round_to for c in counts]
    return counts


@pytest.fixture(autouse=True)
def _clock() -> None:
    global NOW
    NOW = datetime.now(UTC).replace(second=0, microsecond=0)


@pytest.fixture
async def counters(start_service: Callable[..., Awaitable[str]], tokens: dict[str, str]) -> AsyncIterator[Counters]:
    async with (
        grpc.aio.insecure_channel(await start_service(COUNTERS)) as c,
        grpc.aio.insecure_channel(await start_service(PARTNERS)) as p,
    ):
        client, partners = Counters(c, tokens), Partners(p, tokens)
        for counter, (partner, agreement, then, now) in COUNTERS_OF.items():
            caller = next(name for name, owner in OWNERS.items() if owner == partner)
            await partners.as_("engineer").CreatePartner(
                ppb.CreatePartnerRequest(
                    partner_id=partner, partner=ppb.Partner(display_name=partner, kind=ppb.PARTNER_KIND_BUSINESS)
                )
            )
            await partners.as_("engineer").SetAgreement(
                ppb.SetAgreementRequest(name=f"partners/{partner}/agreements/sensor-counts", agreement=agreement)
            )
            door = pb.Counter(
                display_name="door",
                kind=pb.COUNT_KIND_PEOPLE,
                location=geo_pb2.LatLng(latitude=52.37, longitude=5.21),
                directions=["in"],
            )
            request = pb.CreateCounterRequest(parent=f"partners/{partner}", counter_id="door", counter=door)
            started = time.monotonic()
            while True:  # the registry reaches the counter service through PARTNERS
                try:
                    await client.as_(caller).CreateCounter(request)
                    break
                except grpc.aio.AioRpcError as err:
                    assert err.code() == grpc.StatusCode.NOT_FOUND and time.monotonic() - started < 5, err
                    await asyncio.sleep(0.05)
            # The second interval started more than the 30 minutes' delay ago, but ended since.
            intervals = [(NOW - timedelta(minutes=60), then), (NOW - timedelta(minutes=40), now)]
            await client.as_(caller).ReportCounts(
                pb.ReportCountsRequest(
                    counter=counter,
                    counts=[
                        pb.Count(
                            direction="in", interval_start=ts(s), interval_end=ts(s + timedelta(minutes=15)), count=n
                        )
                        for s, n in intervals
                    ],
                )
            )
        yield client


async def _seen(call: Awaitable[Any]) -> list[int] | str | grpc.StatusCode:
    try:
        reply = await call
    except grpc.aio.AioRpcError as err:
        return REFUSED if err.code() == grpc.StatusCode.PERMISSION_DENIED else err.code()
    return [c.count for c in reply.counts]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("purpose", ["traffic-management", "public-safety", ""])
async def test_every_role_reads_counts_as_the_agreements_allow(counters: Counters, purpose: str) -> None:
    failures = []
    for caller in ROLES:
        for counter in COUNTERS_OF:
            request = pb.ListCountsRequest(counter=counter, start_time=ts(NOW - timedelta(hours=2)))
            got = await _seen(counters.as_(caller, purpose=purpose).ListCounts(request))
            want = expected(caller, counter, purpose)
            if got != want:
                failures.append(
                    f"{caller} ({ROLES[caller]}) on {counter} for {purpose or 'no purpose'}: {got}, want {want}"
                )
    assert not failures, "\n".join(failures)
