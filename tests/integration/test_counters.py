"""A business's counters (role `partner:firm-a`) on a real database and nats-server: anonymous counts
per interval and direction are kept once (a resend is a duplicate, a new value a correction), shown to
each audience as the partner's `sensor-counts` agreement says (rounded, late, refused) and audited,
published on COUNTS as the optimizer may see them, deleted past the retention; a feed carrying
anything but counts is refused with nothing kept."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from almere.counters.v1 import counters_pb2 as pb
from almere.partners.v1 import partners_pb2 as ppb
from almere.type.v1 import geo_pb2

from apps.natsd import NatsServer
from services.counters.service import SPEC as COUNTERS
from services.partners.service import SPEC as PARTNERS
from tests.integration.helpers import Counters, Partners, read_stream, ts

TRAFFIC = "traffic-management"
DOOR = "partners/firm-a/counters/door-1"
CAMERA = "partners/firm-a/counters/camera-1"
# The minute the test started: set for each test (the intervals are relative to it; a module-level
# time would age while the suite runs).
NOW = datetime.now(UTC).replace(second=0, microsecond=0)
TERMS = ppb.Agreement(
    audiences=[
        ppb.AudienceTerms(audience=ppb.AUDIENCE_ENGINEER, detail=ppb.DETAIL_RAW),
        ppb.AudienceTerms(audience=ppb.AUDIENCE_OPTIMIZER, detail=ppb.DETAIL_ROUNDED, round_to=10),
        ppb.AudienceTerms(audience=ppb.AUDIENCE_PUBLIC, detail=ppb.DETAIL_ROUNDED, round_to=10, delay_minutes=30),
    ],
    retention_days=1,
    purposes=[TRAFFIC],
)


@dataclass(kw_only=True)
class City:
    counters: Counters
    partners: Partners
    tokens: dict[str, str]
    address: str


async def _status(call: Awaitable[Any]) -> tuple[grpc.StatusCode, str]:
    try:
        await call
    except grpc.aio.AioRpcError as err:
        return err.code(), err.details() or ""
    return grpc.StatusCode.OK, ""


@pytest.fixture(autouse=True)
def _clock() -> None:
    global NOW
    NOW = datetime.now(UTC).replace(second=0, microsecond=0)


@pytest.fixture
async def city(start_service: Callable[..., Awaitable[str]], tokens: dict[str, str]) -> AsyncIterator[City]:
    """Business firm-a (the test partner's) with a door counter and a car counter under TERMS."""
    address = await start_service(COUNTERS, retention_check_seconds=0.2)
    async with (
        grpc.aio.insecure_channel(address) as c,
        grpc.aio.insecure_channel(await start_service(PARTNERS)) as p,
    ):
        city = City(counters=Counters(c, tokens), partners=Partners(p, tokens), tokens=tokens, address=address)
        await city.partners.as_("engineer").CreatePartner(
            ppb.CreatePartnerRequest(
                partner_id="firm-a", partner=ppb.Partner(display_name="Shop A", kind=ppb.PARTNER_KIND_BUSINESS)
            )
        )
        await city.partners.as_("partner").SetAgreement(
            ppb.SetAgreementRequest(name="partners/firm-a/agreements/sensor-counts", agreement=TERMS)
        )
        door = pb.Counter(
            display_name="Shop door",
            kind=pb.COUNT_KIND_PEOPLE,
            location=geo_pb2.LatLng(latitude=52.3705, longitude=5.2140),
            directions=["in", "out"],
        )
        deadline = time.monotonic() + 5
        while (status := await _status(_create(city, "partner", "door-1", door)))[0] == grpc.StatusCode.NOT_FOUND:
            assert time.monotonic() < deadline, "the registry did not reach the counter service"
            await asyncio.sleep(0.05)
        assert status[0] == grpc.StatusCode.OK, status
        camera = pb.Counter(
            display_name="Car park entrance camera",
            kind=pb.COUNT_KIND_VEHICLES,
            location=geo_pb2.LatLng(latitude=52.3706, longitude=5.2141),
            edge_id="ring-w-n",
            directions=["northbound"],
        )
        await _create(city, "engineer", "camera-1", camera)
        yield city


def _create(city: City, caller: str, counter_id: str, counter: pb.Counter, parent: str = "partners/firm-a") -> Any:
    return city.counters.as_(caller).CreateCounter(
        pb.CreateCounterRequest(parent=parent, counter_id=counter_id, counter=counter)
    )


def _count(direction: str, minutes_ago: int, count: int, length: int = 15) -> pb.Count:
    start = NOW - timedelta(minutes=minutes_ago)
    return pb.Count(
        direction=direction, interval_start=ts(start), interval_end=ts(start + timedelta(minutes=length)), count=count
    )


def _report(city: City, counts: list[pb.Count], counter: str = DOOR, caller: str = "partner") -> Any:
    return city.counters.as_(caller).ReportCounts(pb.ReportCountsRequest(counter=counter, counts=counts))


def _counts(city: City, caller: str, purpose: str = "", counter: str = DOOR) -> Any:
    request = pb.ListCountsRequest(counter=counter, start_time=ts(NOW - timedelta(hours=3)))
    return city.counters.as_(caller, purpose=purpose).ListCounts(request)


def _feed() -> list[pb.Count]:
    return [_count("in", 60, 42), _count("out", 60, 37), _count("in", 20, 55), _count("out", 20, 51)]


async def test_counts_are_kept_once_and_each_audience_sees_what_the_agreement_gives_it(
    city: City, nats_server: NatsServer
) -> None:
    first = await _report(city, _feed())
    assert (first.accepted, first.duplicates, first.corrected) == (4, 0, 0)
    again = await _report(city, [*_feed()[:3], _count("out", 20, 52)])
    assert (again.accepted, again.duplicates, again.corrected) == (0, 3, 1)

    def seen(reply: Any) -> list[tuple[str, int]]:
        return [(c.direction, c.count) for c in reply.counts]

    own = await _counts(city, "partner")
    assert seen(own) == [("in", 42), ("out", 37), ("in", 55), ("out", 52)] and not own.HasField("sharing")
    engineer = await _counts(city, "engineer", TRAFFIC)
    assert seen(engineer) == seen(own) and engineer.sharing.outcome == ppb.ACCESS_OUTCOME_FULL
    optimizer = await _counts(city, "optimizer", TRAFFIC)
    assert seen(optimizer) == [("in", 40), ("out", 40), ("in", 60), ("out", 50)]
    assert optimizer.sharing.reason == "counts rounded to 10"
    public = await _counts(city, "public")
    assert seen(public) == [("in", 40), ("out", 40)], "rounded, and only what had ended 30 minutes ago"
    assert public.sharing.delay.seconds == 1800
    assert await _status(_counts(city, "police", TRAFFIC)) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "partners/firm-a/agreements/sensor-counts does not share it with role police",
    )
    code, message = await _status(_counts(city, "engineer"))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "no purpose declared" in message
    assert (await _status(_counts(city, "other_partner", TRAFFIC)))[0] == grpc.StatusCode.PERMISSION_DENIED

    # Published as measurements, as the optimizer may see them: rounded, people apart from vehicles.
    await _report(city, [_count("northbound", 15, 123)], counter=CAMERA)
    published = await read_stream(nats_server, "almere.counters.v1.>", "counts-check", stream="COUNTS")
    by_subject = {s: m for s, m in published}
    door_in = by_subject["almere.counters.v1.counted.firm-a_door-1_in"]
    assert (door_in.counter, door_in.direction, door_in.person_count, door_in.vehicle_count) == (DOOR, "in", 60, 0)  # type: ignore[attr-defined]
    camera = by_subject["almere.counters.v1.counted.firm-a_camera-1_northbound"]
    assert (camera.vehicle_count, camera.edge_id, camera.mean_speed_mps) == (120, "ring-w-n", -1.0)  # type: ignore[attr-defined]
    assert len(published) == 6, "four new counts, one correction and the camera's; duplicates are not resent"

    # Every read under the agreement is in the partner's audit; its own are not.
    async def audited() -> list[tuple[str, int]]:
        reply = await city.partners.as_("partner").ListAccessRecords(
            ppb.ListAccessRecordsRequest(parent="partners/firm-a", page_size=100)
        )
        return [(r.role, r.outcome) for r in reply.records if r.method == "ListCounts"]

    deadline = time.monotonic() + 5
    while len(records := await audited()) < 6:
        assert time.monotonic() < deadline, records
        await asyncio.sleep(0.1)
    assert sorted(records) == sorted(
        [
            ("engineer", ppb.ACCESS_OUTCOME_FULL),
            ("optimizer", ppb.ACCESS_OUTCOME_DEGRADED),
            ("public", ppb.ACCESS_OUTCOME_DEGRADED),
            ("police", ppb.ACCESS_OUTCOME_WITHHELD),
            ("engineer", ppb.ACCESS_OUTCOME_REFUSED),
            ("partner:firm-b", ppb.ACCESS_OUTCOME_WITHHELD),
        ]
    )


def _with_stray_field(request: pb.ReportCountsRequest, field: bytes) -> bytes:
    """The request's bytes with a field the contract does not have added to its first count."""
    count = request.counts[0].SerializeToString() + field
    rest = b"".join(b"\x12" + bytes([len(c)]) + c for c in (x.SerializeToString() for x in request.counts[1:]))
    counter = request.counter.encode()
    return b"\x0a" + bytes([len(counter)]) + counter + b"\x12" + bytes([len(count)]) + count + rest


async def test_a_feed_carrying_a_device_identifier_is_refused_and_nothing_kept(
    city: City, nats_server: NatsServer
) -> None:
    mac = b"AA:BB:CC:DD:EE:FF"
    raw = _with_stray_field(pb.ReportCountsRequest(counter=DOOR, counts=_feed()[:2]), b"\x7a" + bytes([len(mac)]) + mac)
    assert pb.ReportCountsRequest.FromString(raw).counts[0].count == 42, "the stray field travels unseen"
    async with grpc.aio.insecure_channel(city.address) as channel:
        report = channel.unary_unary(
            "/almere.counters.v1.CounterService/ReportCounts",
            request_serializer=None,
            response_deserializer=pb.ReportCountsResponse.FromString,
        )
        code, message = await _status(report(raw, metadata=(("authorization", f"Bearer {city.tokens['partner']}"),)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert message == (
        "counts[0] carries field 15 the contract does not have: this method takes nothing beyond its contract "
        "(no identifiers, no free text)"
    )
    assert not (await _counts(city, "partner")).counts
    await asyncio.sleep(0.3)  # what the relay would have published by now
    assert not await read_stream(nats_server, "almere.counters.v1.>", "nothing", stream="COUNTS")


@pytest.mark.parametrize(
    ("caller", "counts", "message"),
    [
        ("partner", lambda: [_count("sideways", 20, 5)],
         "counts[0].direction 'sideways' is not one of the counter's: in, out"),
        ("partner", lambda: [_count("in", 120, 5, length=90)], "at most an hour later"),
        ("partner", lambda: [_count("in", 5, 5)], "counts[0].interval_end is in the future"),
        ("partner", lambda: [_count("in", 20, -1)], "counts[0].count must be 0-100000"),
        ("partner", lambda: [_count("in", 20, 5), _feed()[0], _count("in", 20, 6)],
         "counts[2]: this direction's interval"),
        ("partner", lambda: [], "counts: 1-500 per call"),
        ("other_partner", _feed, "partner:firm-b may not use the counters of partner 'firm-a'"),
        ("engineer", _feed, "role engineer may not ReportCounts (allowed: partner)"),
    ],
)  # fmt: skip
async def test_a_bad_feed_is_refused_and_nothing_kept(
    city: City, caller: str, counts: Callable[[], list[pb.Count]], message: str
) -> None:
    code, details = await _status(_report(city, counts(), caller=caller))
    assert code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.PERMISSION_DENIED) and message in details, details
    assert not (await _counts(city, "partner")).counts


def _counter(**fields: Any) -> pb.Counter:
    """A valid people counter; keyword arguments replace its fields."""
    base: dict[str, Any] = {
        "display_name": "x",
        "kind": pb.COUNT_KIND_PEOPLE,
        "location": geo_pb2.LatLng(latitude=52.37, longitude=5.21),
        "directions": ["in"],
    }
    return pb.Counter(**(base | fields))


@pytest.mark.parametrize(
    ("caller", "counter", "parent", "code", "message"),
    [
        ("partner", pb.Counter(display_name="x", kind=pb.COUNT_KIND_PEOPLE), "partners/firm-a", "INVALID_ARGUMENT",
         "counter.location is required"),
        ("partner", _counter(edge_id="ring-w-n"), "partners/firm-a", "INVALID_ARGUMENT",
         "counter.edge_id is for vehicle counters"),
        ("partner", _counter(directions=["In Out"]), "partners/firm-a", "INVALID_ARGUMENT",
         "is not lower-case words joined by hyphens"),
        ("other_partner", _counter(), "partners/firm-a", "PERMISSION_DENIED",
         "may not use the counters of partner 'firm-a'"),
        ("engineer", _counter(), "partners/nobody", "NOT_FOUND", "partner 'nobody' is not registered with the city"),
        ("partner", _counter(), "partners/firm-a", "ALREADY_EXISTS", "partners/firm-a/counters/door-1 already exists"),
    ],
)  # fmt: skip
async def test_a_bad_counter_is_refused(
    city: City, caller: str, counter: pb.Counter, parent: str, code: str, message: str
) -> None:
    got, details = await _status(_create(city, caller, "door-1", counter, parent=parent))
    assert (got.name, message in details) == (code, True), details


async def test_counters_are_described_to_the_city_and_to_their_partner_only(city: City) -> None:
    listed = await city.counters.as_("engineer").ListCounters(pb.ListCountersRequest(parent="partners/-"))
    assert [c.name for c in listed.counters] == [CAMERA, DOOR]
    own = await city.counters.as_("partner").ListCounters(pb.ListCountersRequest(parent="partners/-", page_size=1))
    rest = await city.counters.as_("partner").ListCounters(
        pb.ListCountersRequest(parent="partners/-", page_size=1, page_token=own.next_page_token)
    )
    assert [c.name for c in (*own.counters, *rest.counters)] == [CAMERA, DOOR] and not rest.next_page_token
    code, _ = await _status(city.counters.as_("other_partner").GetCounter(pb.GetCounterRequest(name=DOOR)))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    code, _ = await _status(city.counters.as_("public").GetCounter(pb.GetCounterRequest(name=DOOR)))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    door = (await city.counters.as_("police").GetCounter(pb.GetCounterRequest(name=DOOR))).counter
    assert list(door.directions) == ["in", "out"]


async def test_counts_older_than_the_retention_are_deleted_and_audited(city: City) -> None:
    old = [_count("in", 60 * 30, 9), _count("out", 60 * 30, 8)]  # 30 hours ago; the agreement keeps 1 day
    await _report(city, [*old, _feed()[2]])

    async def deleted() -> int:
        reply = await city.partners.as_("partner").ListAccessRecords(
            ppb.ListAccessRecordsRequest(parent="partners/firm-a", page_size=100)
        )
        return sum(r.items for r in reply.records if r.outcome == ppb.ACCESS_OUTCOME_DELETED)

    deadline = time.monotonic() + 10
    while await deleted() < 2:
        assert time.monotonic() < deadline, "the retention did not delete the old counts"
        await asyncio.sleep(0.1)
    request = pb.ListCountsRequest(counter=DOOR, start_time=ts(NOW - timedelta(days=3)))
    kept = await city.counters.as_("partner").ListCounts(request)
    assert [(c.direction, c.count) for c in kept.counts] == [("in", 55)]


async def test_another_partner_writing_the_counters_is_refused_and_audited(city: City) -> None:
    code, _ = await _status(_report(city, _feed(), caller="other_partner"))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    code, _ = await _status(_create(city, "other_partner", "door-2", _counter()))
    assert code == grpc.StatusCode.PERMISSION_DENIED

    async def refused() -> list[tuple[str, str]]:
        reply = await city.partners.as_("partner").ListAccessRecords(
            ppb.ListAccessRecordsRequest(parent="partners/firm-a", page_size=100)
        )
        return sorted((r.role, r.method) for r in reply.records if r.outcome == ppb.ACCESS_OUTCOME_REFUSED)

    deadline = time.monotonic() + 5
    while len(found := await refused()) < 2:
        assert time.monotonic() < deadline, found
        await asyncio.sleep(0.1)
    assert found == [("partner:firm-b", "CreateCounter"), ("partner:firm-b", "ReportCounts")]


async def test_counts_come_page_by_page(city: City) -> None:
    await _report(city, _feed())
    request = pb.ListCountsRequest(counter=DOOR, start_time=ts(NOW - timedelta(hours=3)), page_size=3)
    first = await city.counters.as_("engineer", purpose=TRAFFIC).ListCounts(request)
    request.page_token = first.next_page_token
    second = await city.counters.as_("engineer", purpose=TRAFFIC).ListCounts(request)
    assert [c.count for c in (*first.counts, *second.counts)] == [42, 37, 55, 51] and not second.next_page_token
    other = pb.ListCountsRequest(counter=DOOR, start_time=ts(NOW - timedelta(hours=2)), page_token=request.page_token)
    code, _ = await _status(city.counters.as_("engineer", purpose=TRAFFIC).ListCounts(other))
    assert code == grpc.StatusCode.INVALID_ARGUMENT, "a page token belongs to its query"


async def test_without_an_agreement_counts_stay_with_the_partner(city: City) -> None:
    await city.partners.as_("engineer").CreatePartner(
        ppb.CreatePartnerRequest(
            partner_id="firm-b", partner=ppb.Partner(display_name="B", kind=ppb.PARTNER_KIND_BUSINESS)
        )
    )
    door = "partners/firm-b/counters/door"
    deadline = time.monotonic() + 5
    while (status := await _status(_create(city, "other_partner", "door", _counter(), parent="partners/firm-b")))[
        0
    ] == grpc.StatusCode.NOT_FOUND:
        assert time.monotonic() < deadline, status
        await asyncio.sleep(0.05)
    await _report(city, [_count("in", 20, 7)], counter=door, caller="other_partner")
    assert await _status(_counts(city, "engineer", TRAFFIC, counter=door)) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "partners/firm-b has set no sensor-counts agreement: it shares them with nobody yet",
    )
    assert [c.count for c in (await _counts(city, "other_partner", counter=door)).counts] == [7]
