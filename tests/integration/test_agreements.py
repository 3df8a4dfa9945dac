"""A private garage operator's agreement enforced on the parking service's read paths, on a real
database and nats-server: the public feed gets its occupancy as a status five minutes late, the
optimizer the raw counts for its declared purpose, engineers rounded counts, public safety nothing;
every read under the agreement lands in the operator's audit; suspending the operator refuses its
next call and ends its open stream."""

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
from google.protobuf.duration_pb2 import Duration

from apps.natsd import NatsServer
from services.parking.service import SPEC as PARKING
from services.partners.service import SPEC as PARTNERS
from tests.integration.helpers import CENTRE, Parking, Partners, read_stream, ts

GARAGE = "facilities/garage-a"
TRAFFIC = "traffic-management"


@dataclass(kw_only=True)
class City:
    parking: Parking
    partners: Partners


@pytest.fixture
async def city(start_service: Callable[..., Awaitable[str]], tokens: dict[str, str]) -> AsyncIterator[City]:
    """Partner op-a (the test operator's) with garage-a, a city garage beside it, and op-a's terms."""
    async with (
        grpc.aio.insecure_channel(await start_service(PARKING, retention_check_seconds=0.2)) as parking_channel,
        grpc.aio.insecure_channel(await start_service(PARTNERS)) as partners_channel,
    ):
        city = City(parking=Parking(parking_channel, tokens), partners=Partners(partners_channel, tokens))
        await city.partners.as_("engineer").CreatePartner(
            ppb.CreatePartnerRequest(
                partner_id="op-a",
                partner=ppb.Partner(display_name="Garage Company A", kind=ppb.PARTNER_KIND_GARAGE_OPERATOR),
            )
        )
        await city.parking.create("garage-a", operator="op-a")
        await city.parking.create("city-1", operator="city")
        before = datetime.now(UTC) - timedelta(minutes=10)
        await city.parking.report("garage-a", 40, 1, when=before)
        await city.parking.report("garage-a", 57, 2)
        await city.parking.report("city-1", 12, 1, caller="engineer")
        await city.partners.as_("operator").SetAgreement(
            ppb.SetAgreementRequest(
                name="partners/op-a/agreements/occupancy",
                agreement=ppb.Agreement(
                    audiences=[
                        ppb.AudienceTerms(audience=ppb.AUDIENCE_OPTIMIZER, detail=ppb.DETAIL_RAW),
                        ppb.AudienceTerms(audience=ppb.AUDIENCE_ENGINEER, detail=ppb.DETAIL_ROUNDED, round_to=10),
                        ppb.AudienceTerms(audience=ppb.AUDIENCE_PUBLIC, detail=ppb.DETAIL_STATUS_ONLY, delay_minutes=5),
                        ppb.AudienceTerms(
                            audience=ppb.AUDIENCE_PARTNERS, detail=ppb.DETAIL_STATUS_ONLY, delay_minutes=5
                        ),
                    ],
                    retention_days=30,
                    purposes=[TRAFFIC],
                ),
            )
        )
        await _until(lambda: city.parking.as_("public").GetOccupancy(pb.GetOccupancyRequest(facility=GARAGE)), 1)
        yield city


async def _until(call: Callable[[], Awaitable[Any]], wanted: Any, within_s: float = 5.0) -> float:
    """Seconds until the agreement reached the parking service (the answer names it)."""
    started = time.monotonic()
    while (await call()).occupancy.sharing.revision != wanted:
        assert time.monotonic() - started < within_s, "the agreement did not reach the parking service"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def _status(call: Awaitable[Any]) -> tuple[grpc.StatusCode, str]:
    try:
        await call
    except grpc.aio.AioRpcError as err:
        return err.code(), err.details() or ""
    return grpc.StatusCode.OK, ""


async def test_each_audience_gets_what_the_agreement_gives_it_on_every_read_path(city: City) -> None:
    parking = city.parking
    get = pb.GetOccupancyRequest(facility=GARAGE)

    public = (await parking.as_("public").GetOccupancy(get)).occupancy
    assert public.status == pb.OCCUPANCY_STATUS_SPACES_AVAILABLE and public.capacity == 100
    assert (public.occupied_spaces, public.free_spaces, public.version) == (0, 0, 0), "status only"
    assert public.source_time.ToDatetime(tzinfo=UTC) < datetime.now(UTC) - timedelta(minutes=9), "5 minutes late"
    assert (public.sharing.outcome, public.sharing.reason, public.sharing.delay.seconds) == (
        ppb.ACCESS_OUTCOME_DEGRADED,
        "status only, 5 minutes late",
        300,
    )
    optimizer = (await parking.as_("optimizer", purpose=TRAFFIC).GetOccupancy(get)).occupancy
    assert (optimizer.occupied_spaces, optimizer.sharing.outcome) == (57, ppb.ACCESS_OUTCOME_FULL)
    engineer = (await parking.as_("engineer", purpose=TRAFFIC).GetOccupancy(get)).occupancy
    assert (engineer.occupied_spaces, engineer.free_spaces) == (60, 40), "rounded to 10"
    own = (await parking.as_("operator").GetOccupancy(get)).occupancy
    assert own.occupied_spaces == 57 and not own.HasField("sharing"), "the partner sees its own data in full"

    assert await _status(parking.as_("optimizer").GetOccupancy(get)) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "no purpose declared; partners/op-a/agreements/occupancy is for traffic-management "
        "(declare one in 'x-almere-purpose' metadata)",
    )
    assert await _status(parking.as_("police", purpose=TRAFFIC).GetOccupancy(get)) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "partners/op-a/agreements/occupancy does not share it with role police",
    )
    code, _ = await _status(parking.as_("police").GetFacility(pb.GetFacilityRequest(name=GARAGE)))
    assert code == grpc.StatusCode.PERMISSION_DENIED

    # A list gives every facility and marks what it withholds.
    listed = await parking.as_("police").ListFacilities(pb.ListFacilitiesRequest())
    by_name = {f.name: f.occupancy for f in listed.facilities}
    assert by_name["facilities/city-1"].occupied_spaces == 12 and not by_name["facilities/city-1"].HasField("sharing")
    assert by_name[GARAGE].sharing.outcome == ppb.ACCESS_OUTCOME_WITHHELD
    assert (by_name[GARAGE].occupied_spaces, by_name[GARAGE].status) == (0, pb.OCCUPANCY_STATUS_UNKNOWN)

    # History: none for a status-only audience; rounded for engineers; up to 5 minutes ago at most.
    history = pb.GetOccupancyHistoryRequest(facility=GARAGE, start_time=ts(datetime.now(UTC) - timedelta(hours=1)))
    code, message = await _status(parking.as_("other_operator", purpose=TRAFFIC).GetOccupancyHistory(history))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "status only: no history of counts" in message
    buckets = (await parking.as_("engineer", purpose=TRAFFIC).GetOccupancyHistory(history)).buckets
    assert {b.last_occupied_spaces for b in buckets if b.known} == {40, 60}

    # Recommendations show what the caller may see.
    recommended = await parking.as_("engineer", purpose=TRAFFIC).RecommendFacility(
        pb.RecommendFacilityRequest(destination=geo_pb2.LatLng(latitude=CENTRE[0], longitude=CENTRE[1]))
    )
    shown = {r.facility.name: r.facility.occupancy.occupied_spaces for r in recommended.recommendations}
    assert shown == {GARAGE: 60, "facilities/city-1": 12}


async def test_watches_hold_back_what_an_audience_sees_late(city: City) -> None:
    parking = city.parking
    watch = pb.WatchOccupancyRequest(facilities=[GARAGE])
    late = parking.as_("other_operator", purpose=TRAFFIC).WatchOccupancy(watch)
    engineer = parking.as_("engineer", purpose=TRAFFIC).WatchOccupancy(watch)
    for stream in (late, engineer):
        first = await stream.read()
        assert first.snapshot and first.occupancy.sharing.outcome == ppb.ACCESS_OUTCOME_DEGRADED
    await parking.report("garage-a", 81, 3)
    change = await asyncio.wait_for(engineer.read(), 5)
    assert (change.snapshot, change.occupancy.occupied_spaces) == (False, 80)
    with pytest.raises(TimeoutError):  # other partners see it five minutes from now
        await asyncio.wait_for(late.read(), 1.0)
    late.cancel()
    engineer.cancel()


async def _terms_for_optimizer(city: City, *optimizer: ppb.AudienceTerms, revision: int) -> None:
    """op-a's agreement with the optimizer's terms replaced by `optimizer` (none: not shared)."""
    await city.partners.as_("operator").SetAgreement(
        ppb.SetAgreementRequest(
            name="partners/op-a/agreements/occupancy",
            agreement=ppb.Agreement(
                audiences=[
                    *optimizer,
                    ppb.AudienceTerms(audience=ppb.AUDIENCE_PUBLIC, detail=ppb.DETAIL_STATUS_ONLY, delay_minutes=5),
                ],
                retention_days=30,
                purposes=[TRAFFIC],
            ),
        )
    )
    await _until(lambda: city.parking.as_("public").GetOccupancy(pb.GetOccupancyRequest(facility=GARAGE)), revision)


async def test_the_bus_carries_a_partners_occupancy_as_the_optimizer_may_see_it(
    city: City, nats_server: NatsServer
) -> None:
    own = city.parking.as_("operator").WatchOccupancy(pb.WatchOccupancyRequest(facilities=[GARAGE]))
    assert (await own.read()).occupancy.occupied_spaces == 57
    await city.parking.report("garage-a", 58, 3)  # revision 1: the optimizer gets raw counts
    rounded = ppb.AudienceTerms(audience=ppb.AUDIENCE_OPTIMIZER, detail=ppb.DETAIL_ROUNDED, round_to=10)
    await _terms_for_optimizer(city, rounded, revision=2)
    await city.parking.report("garage-a", 63, 4)
    await _terms_for_optimizer(city, revision=3)
    await city.parking.report("garage-a", 71, 5)
    await city.parking.report("city-1", 13, 2, caller="engineer")

    published = {
        (e.facility_id, e.version): e.occupancy  # type: ignore[attr-defined]
        for s, e in await read_stream(nats_server, "almere.parking.v1.occupancy_changed.>", "bus-check")
    }
    raw, shaped, withheld = (published[("garage-a", v)] for v in (4, 5, 6))
    assert (raw.occupied_spaces, raw.sharing.outcome) == (58, ppb.ACCESS_OUTCOME_FULL)
    assert (shaped.occupied_spaces, shaped.sharing.reason) == (60, "counts rounded to 10")
    assert (withheld.occupied_spaces, withheld.status, withheld.sharing.counts_withheld) == (
        0,
        pb.OCCUPANCY_STATUS_UNKNOWN,
        True,
    )
    assert "does not share it with role optimizer" in withheld.sharing.reason
    city_garage = published[("city-1", 3)]
    assert city_garage.occupied_spaces == 13 and not city_garage.HasField("sharing"), "no agreement: as counted"
    # The partner's own watch reads the counts from the store, not from the shaped bus copy.
    assert [(await asyncio.wait_for(own.read(), 5)).occupancy.occupied_spaces for _ in range(3)] == [58, 63, 71]
    own.cancel()


async def test_the_partner_lists_who_read_its_data_and_nobody_else_can(city: City) -> None:
    parking = city.parking
    get = pb.GetOccupancyRequest(facility=GARAGE)
    await parking.as_("public").GetOccupancy(get)
    await _status(parking.as_("optimizer").GetOccupancy(get))
    await parking.as_("police").ListFacilities(pb.ListFacilitiesRequest())
    wanted = {
        ("public", "GetOccupancy", ppb.ACCESS_OUTCOME_DEGRADED),
        ("optimizer", "GetOccupancy", ppb.ACCESS_OUTCOME_REFUSED),
    }
    wanted.add(("police", "ListFacilities", ppb.ACCESS_OUTCOME_WITHHELD))
    started = time.monotonic()
    while True:
        records = (
            await city.partners.as_("operator").ListAccessRecords(
                ppb.ListAccessRecordsRequest(parent="partners/op-a", page_size=1000)
            )
        ).records
        seen = {(r.caller, r.method, r.outcome) for r in records}
        if wanted <= seen:
            break
        assert time.monotonic() - started < 5, f"audit has {sorted(seen)}"
        await asyncio.sleep(0.05)
    record = next(r for r in records if r.caller == "public" and r.method == "GetOccupancy")
    assert (record.service, record.agreement, record.revision, record.items) == (
        "parking",
        "partners/op-a/agreements/occupancy",
        1,
        1,
    )
    assert not any(r.caller == "operator" for r in records), "the partner's own reads are not under an agreement"
    code, _ = await _status(
        city.partners.as_("other_operator").ListAccessRecords(ppb.ListAccessRecordsRequest(parent="partners/op-a"))
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED


async def test_suspending_the_partner_refuses_its_next_call_and_ends_its_stream(city: City) -> None:
    watching = city.parking.as_("operator").WatchOccupancy(pb.WatchOccupancyRequest(facilities=[GARAGE]))
    assert (await watching.read()).snapshot
    suspended_at = time.monotonic()
    await city.partners.as_("engineer").SuspendPartner(
        ppb.SuspendPartnerRequest(name="partners/op-a", reason="contract under review")
    )
    with pytest.raises(grpc.aio.AioRpcError) as ended:
        await asyncio.wait_for(watching.read(), 5)
    assert (ended.value.code(), ended.value.details()) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "partner 'op-a' was suspended",
    )
    assert time.monotonic() - suspended_at < 2.0
    assert await _status(city.parking.report("garage-a", 60, 9)) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "partner 'op-a' is suspended",
    )
    reading = city.parking.as_("engineer", purpose=TRAFFIC)
    occupancy = (await reading.GetOccupancy(pb.GetOccupancyRequest(facility=GARAGE))).occupancy
    assert occupancy.sequence == 2, "the suspended partner's report wrote nothing"


async def test_history_older_than_the_retention_is_deleted_and_audited(city: City) -> None:
    await city.parking.create("garage-b", operator="op-a")
    now = datetime.now(UTC)
    for sequence, age in enumerate((timedelta(days=40), timedelta(days=35), timedelta(0)), start=1):
        await city.parking.report("garage-b", 10 * sequence, sequence, when=now - age)
    history = pb.GetOccupancyHistoryRequest(
        facility="facilities/garage-b", start_time=ts(now - timedelta(days=60)), bucket=Duration(seconds=86400)
    )
    reading = city.parking.as_("operator")
    started = time.monotonic()
    while any(b.known for b in (await reading.GetOccupancyHistory(history)).buckets[:-1]):
        assert time.monotonic() - started < 5, "the 40- and 35-day-old counts were not deleted"
        await asyncio.sleep(0.05)
    buckets = (await reading.GetOccupancyHistory(history)).buckets
    assert buckets[-1].last_occupied_spaces == 30, "the recent count stays"
    started = time.monotonic()
    while True:
        records = (
            await city.partners.as_("engineer").ListAccessRecords(ppb.ListAccessRecordsRequest(parent="partners/op-a"))
        ).records
        deletions = [r for r in records if r.outcome == ppb.ACCESS_OUTCOME_DELETED]
        if sum(d.items for d in deletions) >= 2:  # one round, or one per report if a round fell between
            break
        assert time.monotonic() - started < 5, f"the deletions in the audit: {deletions}"
        await asyncio.sleep(0.05)
    assert sum(d.items for d in deletions) == 2
    assert {(d.method, d.reason) for d in deletions} == {("Retention", "history older than 30 days deleted")}


async def test_a_service_started_later_applies_the_agreements_from_its_first_call(
    city: City, start_service: Callable[..., Awaitable[str]], tokens: dict[str, str]
) -> None:
    """A replica (or a restart) replays the PARTNERS state stream before it serves."""
    async with grpc.aio.insecure_channel(await start_service(PARKING)) as channel:
        replica = Parking(channel, tokens)
        first = (await replica.as_("public").GetOccupancy(pb.GetOccupancyRequest(facility=GARAGE))).occupancy
    assert (first.sharing.revision, first.sharing.reason) == (1, "status only, 5 minutes late")


async def test_another_operator_writing_the_partners_garage_is_refused_and_audited(city: City) -> None:
    code, message = await _status(city.parking.report("garage-a", 1, 50, caller="other_operator"))
    assert (code, message) == (grpc.StatusCode.PERMISSION_DENIED, "operator:op-b may not write facility 'garage-a'")
    reading = city.parking.as_("operator")
    occupancy = (await reading.GetOccupancy(pb.GetOccupancyRequest(facility=GARAGE))).occupancy
    assert (occupancy.occupied_spaces, occupancy.sequence) == (57, 2), "nothing written"
    started = time.monotonic()
    while True:
        records = (
            await city.partners.as_("operator").ListAccessRecords(ppb.ListAccessRecordsRequest(parent="partners/op-a"))
        ).records
        refused = [r for r in records if r.method == "ReportOccupancy"]
        if refused:
            break
        assert time.monotonic() - started < 5, "the refused write is not in the owner's audit"
        await asyncio.sleep(0.05)
    assert [(r.caller, r.role, r.outcome, r.reason) for r in refused] == [
        (
            "other_operator",
            "operator:op-b",
            ppb.ACCESS_OUTCOME_REFUSED,
            "operator:op-b may not write facility 'garage-a'",
        )
    ]
