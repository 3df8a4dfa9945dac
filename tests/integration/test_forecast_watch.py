"""Forecasts where occupancy is watched (real nats-server, SQLite): in WatchOccupancy on request, and
as forecast_updated events on the bus, each at most once per refresh interval per facility and only
after its occupancy changed; a partner's facility's as each audience's agreement allows."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
from almere.parking.v1 import parking_pb2 as pb
from almere.partners.v1 import partners_pb2 as ppb

from apps.natsd import NatsServer
from services.parking import forecast
from services.parking.service import SPEC as PARKING
from services.partners.service import SPEC as PARTNERS
from tests.integration.helpers import Parking, Partners, read_stream
from tests.integration.test_forecast import CAPACITY, seed_history, with_history

REFRESH_S = 2.0  # the service's once a minute, shortened so a test sees several refreshes
TRAFFIC = "traffic-management"


@pytest.fixture(autouse=True)
def quick_refresh(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(forecast, "REFRESH_S", REFRESH_S)


async def _forecasts(nats_server: NatsServer, *, until: Callable[[list[Any]], bool], within_s: float = 60) -> list[Any]:
    """Every forecast_updated event so far, read again (a new consumer each time) until `until` holds."""
    started = time.monotonic()
    while True:
        reader = f"forecasts-{time.monotonic_ns()}"
        events = [e for _, e in await read_stream(nats_server, "almere.parking.v1.forecast_updated.>", reader)]
        if events and until(events):
            return events
        assert time.monotonic() - started < within_s, f"no such forecasts on the bus: {events}"
        await asyncio.sleep(0.5)


async def test_a_watch_asking_for_forecasts_gets_them_for_facilities_with_history(client: Parking) -> None:
    await with_history(client, "garage-a", days=1)
    await client.create("garage-b", capacity=CAPACITY)
    await client.report("garage-b", 10, 1)  # one count: too little history to forecast from
    names = ["facilities/garage-a", "facilities/garage-b"]
    plain = client.as_("operator").WatchOccupancy(pb.WatchOccupancyRequest(facilities=names))
    watch = client.as_("operator").WatchOccupancy(pb.WatchOccupancyRequest(facilities=names, include_forecasts=True))

    snapshot = [await asyncio.wait_for(watch.read(), 30) for _ in range(3)]
    assert [r.occupancy.facility for r in snapshot[:2]] == names
    made = snapshot[2]
    assert made.snapshot and made.forecast.facility == "facilities/garage-a" and not made.HasField("occupancy")
    assert [f.horizon.seconds // 60 for f in made.forecast.forecasts] == [15, 30, 60]
    assert made.forecast.capacity == CAPACITY
    for f in made.forecast.forecasts:
        assert 0 <= f.low_occupied_spaces <= f.occupied_spaces <= f.high_occupied_spaces <= CAPACITY

    # Changes: each facility's occupancy at once, garage-a's forecasts again once the interval passed
    # (both changes of garage-a in one refresh), garage-b's never.
    await client.report("garage-a", 120, 1000)
    await client.report("garage-a", 121, 1001)
    await client.report("garage-b", 11, 2)
    changes = [await asyncio.wait_for(watch.read(), 30) for _ in range(4)]
    occupancies = [r.occupancy.occupied_spaces for r in changes if r.HasField("occupancy")]
    assert occupancies == [120, 121, 11]
    refreshed = [r.forecast for r in changes if r.HasField("forecast")]
    assert len(refreshed) == 1 and refreshed[0].facility == "facilities/garage-a"
    assert refreshed[0].version > made.forecast.version
    # A change soon after a refresh waits for the interval's end.
    refreshed_at = time.monotonic()
    await client.report("garage-a", 125, 1002)
    assert (await asyncio.wait_for(watch.read(), 5)).occupancy.occupied_spaces == 125
    assert (await asyncio.wait_for(watch.read(), 30)).forecast.facility == "facilities/garage-a"
    assert time.monotonic() - refreshed_at >= REFRESH_S - 0.3

    plain_messages = [await asyncio.wait_for(plain.read(), 5) for _ in range(6)]
    assert all(r.HasField("occupancy") for r in plain_messages), "no forecasts unless asked for"
    plain.cancel()
    with pytest.raises(TimeoutError):  # nothing changed since: no more forecasts (ends the watch)
        await asyncio.wait_for(watch.read(), REFRESH_S + 1)


async def test_the_bus_gets_a_facilitys_forecasts_at_most_once_per_interval_after_changes(
    client: Parking, nats_server: NatsServer
) -> None:
    await with_history(client, "garage-a", days=1)
    await client.create("garage-b", capacity=CAPACITY)
    await client.report("garage-b", 10, 1)
    first = await _forecasts(nats_server, until=lambda events: len(events) >= 1)
    await asyncio.sleep(REFRESH_S + 1)  # nothing changed: nothing more
    for sequence, occupied in enumerate((130, 131, 132), start=2000):
        await client.report("garage-a", occupied, sequence)
        await client.report("garage-b", occupied // 10, sequence)
    last_version = (
        await client.as_("operator").GetOccupancy(pb.GetOccupancyRequest(facility="facilities/garage-a"))
    ).occupancy.version
    events = await _forecasts(nats_server, until=lambda events: events[-1].version == last_version)

    assert {e.facility_id for e in events} == {"garage-a"}, "garage-b has too little history"
    quiet = [e for e in events if e.version == first[-1].version]
    assert len(quiet) == 1, "an unchanged facility is not forecast again"
    times = [e.occur_time.ToDatetime().timestamp() for e in events]
    assert all(b - a >= REFRESH_S - 0.01 for a, b in itertools.pairwise(times))
    assert events[-1].forecast.facility == "facilities/garage-a"
    assert [f.horizon.seconds // 60 for f in events[-1].forecast.forecasts] == [15, 30, 60]


@pytest.fixture
async def partner_city(start_service: Callable[..., Awaitable[str]], tokens: dict[str, str]) -> AsyncIterator[Parking]:
    """Partner op-a's garage-a with a day of history; its agreement gives the optimizer and engineers
    counts rounded to 10, the public and other partners its status only, five minutes late."""
    async with (
        grpc.aio.insecure_channel(await start_service(PARKING)) as parking_channel,
        grpc.aio.insecure_channel(await start_service(PARTNERS)) as partners_channel,
    ):
        parking, partners = Parking(parking_channel, tokens), Partners(partners_channel, tokens)
        await partners.as_("engineer").CreatePartner(
            ppb.CreatePartnerRequest(
                partner_id="op-a",
                partner=ppb.Partner(display_name="Garage Company A", kind=ppb.PARTNER_KIND_GARAGE_OPERATOR),
            )
        )
        await parking.create("garage-a", operator="op-a", capacity=CAPACITY)
        rounded = {"detail": ppb.DETAIL_ROUNDED, "round_to": 10}
        await partners.as_("operator").SetAgreement(
            ppb.SetAgreementRequest(
                name="partners/op-a/agreements/occupancy",
                agreement=ppb.Agreement(
                    audiences=[
                        ppb.AudienceTerms(audience=ppb.AUDIENCE_OPTIMIZER, **rounded),  # type: ignore[arg-type]
                        ppb.AudienceTerms(audience=ppb.AUDIENCE_ENGINEER, **rounded),  # type: ignore[arg-type]
                        *(
                            ppb.AudienceTerms(audience=audience, detail=ppb.DETAIL_STATUS_ONLY, delay_minutes=5)
                            for audience in (ppb.AUDIENCE_PUBLIC, ppb.AUDIENCE_PARTNERS)
                        ),
                    ],
                    retention_days=30,
                    purposes=[TRAFFIC],
                ),
            )
        )
        started = time.monotonic()
        get = pb.GetOccupancyRequest(facility="facilities/garage-a")
        while (await parking.as_("public").GetOccupancy(get)).occupancy.sharing.revision != 1:
            assert time.monotonic() - started < 10, "the agreement did not reach the parking service"
            await asyncio.sleep(0.05)
        await seed_history(parking, "garage-a", days=1)
        yield parking


async def test_a_partners_forecasts_are_shaped_as_each_audience_may_read_them(
    partner_city: Parking, nats_server: NatsServer
) -> None:
    parking = partner_city
    request = pb.WatchOccupancyRequest(facilities=["facilities/garage-a"], include_forecasts=True)
    engineer = parking.as_("engineer", purpose=TRAFFIC).WatchOccupancy(request)
    other = parking.as_("other_operator", purpose=TRAFFIC).WatchOccupancy(request)

    assert (await asyncio.wait_for(engineer.read(), 30)).HasField("occupancy")
    rounded = (await asyncio.wait_for(engineer.read(), 30)).forecast.forecasts
    assert len(rounded) == 3
    for f in rounded:
        assert all(v % 10 == 0 for v in (f.occupied_spaces, f.low_occupied_spaces, f.high_occupied_spaces))
    assert (await asyncio.wait_for(other.read(), 30)).occupancy.sharing.counts_withheld
    with pytest.raises(TimeoutError):  # status only: no forecasts, and no error either
        await asyncio.wait_for(other.read(), 3)

    events = await _forecasts(nats_server, until=lambda events: len(events) >= 1)
    for event in events:  # the optimizer's terms: counts rounded to 10
        for f in event.forecast.forecasts:
            assert all(v % 10 == 0 for v in (f.occupied_spaces, f.low_occupied_spaces, f.high_occupied_spaces))
    engineer.cancel()
