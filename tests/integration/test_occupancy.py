"""Occupancy over gRPC: count reports, gate events, watch, history, guidance, and the events they publish."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from almere.parking.v1 import events_pb2
from almere.parking.v1 import parking_pb2 as pb
from almere.type.v1 import geo_pb2
from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask

from apps.natsd import NatsServer
from tests.integration.helpers import Parking, read_stream, ts


def batch(facility_id: str, batch_id: str, entries: int, exits: int = 0) -> pb.RecordGateEventsRequest:
    events = [pb.GateEvent(direction=pb.GATE_DIRECTION_ENTRY, event_time=ts(), gate_id="in-1")] * entries
    events += [pb.GateEvent(direction=pb.GATE_DIRECTION_EXIT, event_time=ts(), gate_id="out-1")] * exits
    return pb.RecordGateEventsRequest(facility=f"facilities/{facility_id}", batch_id=batch_id, events=events)


def with_time(*, seconds: int | None = None, nanos: int = 0) -> pb.RecordGateEventsRequest:
    """A batch of two entries whose second has this event_time (now's seconds by default)."""
    request = batch("garage-a", "timed", 2)
    request.events[1].event_time.seconds = ts().seconds if seconds is None else seconds
    request.events[1].event_time.nanos = nanos
    return request


async def test_reports_are_idempotent_and_ordered(client: Parking, nats_server: NatsServer) -> None:
    await client.create("garage-a", capacity=100)
    first = await client.report("garage-a", 40, 1)
    assert first.outcome == pb.REPORT_OUTCOME_ACCEPTED
    assert (first.occupancy.occupied_spaces, first.occupancy.free_spaces, first.occupancy.version) == (40, 60, 2)
    again = await client.report("garage-a", 40, 1)
    assert again.outcome == pb.REPORT_OUTCOME_DUPLICATE and again.occupancy.version == 2
    newer = await client.report("garage-a", 45, 3)
    assert newer.outcome == pb.REPORT_OUTCOME_ACCEPTED
    late = await client.report("garage-a", 41, 2)
    assert late.outcome == pb.REPORT_OUTCOME_STALE and "older" in late.detail
    measured_earlier = await client.report("garage-a", 47, 4, when=datetime.now(UTC) - timedelta(hours=1))
    assert measured_earlier.outcome == pb.REPORT_OUTCOME_STALE
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.report("garage-a", 50, 3)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    current = await client.as_("optimizer").GetOccupancy(pb.GetOccupancyRequest(facility="facilities/garage-a"))
    assert (current.occupancy.occupied_spaces, current.occupancy.sequence, current.occupancy.version) == (45, 3, 3)
    changes = [e for s, e in await read_stream(nats_server) if ".occupancy_changed." in s]
    assert [(e.version, e.occupancy.occupied_spaces) for e in changes] == [(2, 40), (3, 45)]
    assert all(e.facility_id == "garage-a" and e.occur_time.seconds > 0 for e in changes)
    assert changes[0].cause == events_pb2.OCCUPANCY_CHANGE_CAUSE_COUNT_REPORT


async def test_free_spaces_report(client: Parking) -> None:
    await client.create("garage-a", capacity=100)
    reply = await client.as_("operator").ReportOccupancy(
        pb.ReportOccupancyRequest(facility="facilities/garage-a", free_spaces=3, source_time=ts(), sequence=1)
    )
    assert reply.occupancy.occupied_spaces == 97
    assert reply.occupancy.status == pb.OCCUPANCY_STATUS_ALMOST_FULL


@pytest.mark.parametrize(
    ("request_fields", "code", "message"),
    [
        ({"occupied_spaces": -1, "sequence": 1}, grpc.StatusCode.INVALID_ARGUMENT, "negative"),
        ({"occupied_spaces": 500, "sequence": 1}, grpc.StatusCode.INVALID_ARGUMENT, "far above capacity"),
        ({"free_spaces": 101, "sequence": 1}, grpc.StatusCode.INVALID_ARGUMENT, "free_spaces"),
        ({"sequence": 1}, grpc.StatusCode.INVALID_ARGUMENT, "occupied_spaces or free_spaces"),
        ({"occupied_spaces": 5}, grpc.StatusCode.INVALID_ARGUMENT, "sequence"),
        ({"occupied_spaces": 5, "sequence": 1, "no_time": True}, grpc.StatusCode.INVALID_ARGUMENT, "source_time"),
        ({"occupied_spaces": 5, "sequence": 1, "future": True}, grpc.StatusCode.INVALID_ARGUMENT, "future"),
        ({"occupied_spaces": 5, "sequence": 1, "facility": "facilities/nope"}, grpc.StatusCode.NOT_FOUND, "nope"),
        (
            {"occupied_spaces": 5, "sequence": 1, "facility": "facilities/Bad!"},
            grpc.StatusCode.INVALID_ARGUMENT,
            "malformed",
        ),
        ({"occupied_spaces": 5, "sequence": 1, "caller": "other_operator"}, grpc.StatusCode.PERMISSION_DENIED, "op-b"),
        ({"occupied_spaces": 5, "sequence": 1, "caller": "police"}, grpc.StatusCode.PERMISSION_DENIED, "police"),
    ],
)
async def test_bad_reports_get_a_clear_status_and_write_nothing(
    client: Parking, nats_server: NatsServer, request_fields: dict[str, object], code: grpc.StatusCode, message: str
) -> None:
    await client.create("garage-a", capacity=100)
    fields = dict(request_fields)
    caller = str(fields.pop("caller", "operator"))
    when = datetime.now(UTC) + timedelta(minutes=10) if fields.pop("future", False) else datetime.now(UTC)
    no_time = fields.pop("no_time", False)
    request = pb.ReportOccupancyRequest(facility=str(fields.pop("facility", "facilities/garage-a")), **fields)
    if not no_time:
        request.source_time.CopyFrom(ts(when))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.as_(caller).ReportOccupancy(request)
    assert err.value.code() == code
    assert message in err.value.details()
    after = (await client.as_("engineer").GetFacility(pb.GetFacilityRequest(name="facilities/garage-a"))).facility
    assert after.version == 1 and after.occupancy.status == pb.OCCUPANCY_STATUS_UNKNOWN
    subjects = [s for s, _ in await read_stream(nats_server)]
    assert subjects == ["almere.parking.v1.facility_created.garage-a"]


async def test_engineers_may_correct_counts_of_any_operator_and_the_twin_none(client: Parking) -> None:
    await client.create("garage-a")
    assert (await client.report("garage-a", 10, 1, caller="engineer")).outcome == pb.REPORT_OUTCOME_ACCEPTED
    with pytest.raises(grpc.aio.AioRpcError) as err:  # its counters report with their operators' tokens
        await client.report("garage-a", 11, 2, caller="sim")
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "role sim may not ReportOccupancy" in (err.value.details() or "")


async def test_status_goes_almost_full_then_full_with_hysteresis(client: Parking, nats_server: NatsServer) -> None:
    await client.create("garage-a", capacity=100)
    counts = [50, 89, 90, 99, 100, 98, 97, 96, 88, 87, 86]
    statuses = [(await client.report("garage-a", c, i)).occupancy.status for i, c in enumerate(counts, start=1)]
    S = pb.OCCUPANCY_STATUS_SPACES_AVAILABLE, pb.OCCUPANCY_STATUS_ALMOST_FULL, pb.OCCUPANCY_STATUS_FULL
    assert statuses == [S[0], S[0], S[1], S[1], S[2], S[2], S[2], S[1], S[1], S[1], S[0]]
    status_events = [e for s, e in await read_stream(nats_server) if ".status_changed." in s]
    assert [(e.previous_status, e.status) for e in status_events] == [
        (pb.OCCUPANCY_STATUS_UNKNOWN, S[0]),
        (S[0], S[1]),
        (S[1], S[2]),
        (S[2], S[1]),
        (S[1], S[0]),
    ]


async def test_gate_events_count_once_per_batch(client: Parking, nats_server: NatsServer) -> None:
    await client.create("garage-a", capacity=100)
    await client.create("garage-b", capacity=100)

    async def stream(batches: list[pb.RecordGateEventsRequest]) -> pb.RecordGateEventsResponse:
        async def requests():  # type: ignore[no-untyped-def]
            for b in batches:
                yield b

        return await client.as_("operator").RecordGateEvents(requests())

    reply = await stream([batch("garage-a", "b1", 30, 5), batch("garage-b", "b1", 7), batch("garage-a", "b2", 4, 1)])
    assert (reply.accepted_batches, reply.accepted_events, reply.duplicate_batches) == (3, 47, 0)
    assert [(o.facility, o.occupied_spaces) for o in reply.occupancies] == [
        ("facilities/garage-a", 28),
        ("facilities/garage-b", 7),
    ]
    retry = await stream([batch("garage-a", "b2", 4, 1), batch("garage-a", "b3", 0, 40)])
    assert (retry.accepted_batches, retry.duplicate_batches, retry.duplicate_events) == (1, 1, 5)
    assert retry.occupancies[0].occupied_spaces == 0  # never below zero
    events = [e for s, e in await read_stream(nats_server) if ".occupancy_changed.garage-a" in s]
    assert [e.occupancy.occupied_spaces for e in events] == [25, 28, 0]
    assert {e.cause for e in events} == {events_pb2.OCCUPANCY_CHANGE_CAUSE_GATE_EVENTS}


@pytest.mark.parametrize(
    ("bad", "code", "message"),
    [
        (
            pb.RecordGateEventsRequest(facility="facilities/garage-a", batch_id="x"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "empty",
        ),
        (batch("garage-a", "", 1), grpc.StatusCode.INVALID_ARGUMENT, "batch_id"),
        (batch("garage-a", "big", 10_001), grpc.StatusCode.INVALID_ARGUMENT, "at most 10000"),
        (batch("nope", "x", 1), grpc.StatusCode.NOT_FOUND, "nope"),
        (
            pb.RecordGateEventsRequest(
                facility="facilities/garage-a", batch_id="x", events=[pb.GateEvent(event_time=ts())]
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "direction",
        ),
        # A whole timestamp is checked, its nanos too; a bad one spoils its batch, good events and all.
        (with_time(nanos=-1), grpc.StatusCode.INVALID_ARGUMENT, "event 1: event_time.nanos is -1"),
        (with_time(nanos=10**9), grpc.StatusCode.INVALID_ARGUMENT, "event 1: event_time.nanos is 1000000000"),
        (with_time(seconds=10**12), grpc.StatusCode.INVALID_ARGUMENT, "event 1: event_time.seconds 1000000000000"),
        (with_time(seconds=-1), grpc.StatusCode.INVALID_ARGUMENT, "is outside 2000-2200"),
    ],
)
async def test_bad_gate_batches_are_rejected_without_effect(
    client: Parking, bad: pb.RecordGateEventsRequest, code: grpc.StatusCode, message: str
) -> None:
    await client.create("garage-a", capacity=100)

    async def requests():  # type: ignore[no-untyped-def]
        yield bad

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.as_("operator").RecordGateEvents(requests())
    assert err.value.code() == code and message in err.value.details()
    after = await client.as_("operator").GetOccupancy(pb.GetOccupancyRequest(facility="facilities/garage-a"))
    assert after.occupancy.version == 1


async def test_empty_stream_and_oversized_message(client: Parking) -> None:
    await client.create("garage-a", capacity=100)

    async def nothing():  # type: ignore[no-untyped-def]
        return
        yield

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.as_("operator").RecordGateEvents(nothing())
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    huge = pb.RecordGateEventsRequest(
        facility="facilities/garage-a",
        batch_id="huge",
        events=[pb.GateEvent(direction=pb.GATE_DIRECTION_ENTRY, event_time=ts(), gate_id="g" * 200)] * 9000,
    )
    assert huge.ByteSize() > 1024 * 1024

    async def one():  # type: ignore[no-untyped-def]
        yield huge

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.as_("operator").RecordGateEvents(one())
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    after = await client.as_("operator").GetOccupancy(pb.GetOccupancyRequest(facility="facilities/garage-a"))
    assert after.occupancy.version == 1


async def test_watch_sends_snapshot_then_changes_of_selected_facilities(client: Parking) -> None:
    await client.create("garage-a", capacity=100)
    await client.create("garage-b", capacity=100)
    await client.create("garage-far", capacity=100, lat=52.30, lng=5.10)
    await client.report("garage-a", 10, 1)
    watcher = client.as_("engineer").WatchOccupancy(
        pb.WatchOccupancyRequest(facilities=["facilities/garage-a", "facilities/garage-far"])
    )
    area_box = geo_pb2.BoundingBox(
        low=geo_pb2.LatLng(latitude=52.29, longitude=5.09), high=geo_pb2.LatLng(latitude=52.31, longitude=5.11)
    )
    area_watcher = client.as_("police").WatchOccupancy(pb.WatchOccupancyRequest(area=area_box))
    got = [await watcher.read(), await watcher.read()]
    assert [(m.snapshot, m.occupancy.facility, m.occupancy.occupied_spaces) for m in got] == [
        (True, "facilities/garage-a", 10),
        (True, "facilities/garage-far", 0),
    ]
    area_first = await area_watcher.read()
    assert (area_first.snapshot, area_first.occupancy.facility) == (True, "facilities/garage-far")
    await client.report("garage-b", 20, 1)  # not watched
    await client.report("garage-a", 11, 2)
    await client.report("garage-far", 5, 1)
    changes = [await asyncio.wait_for(watcher.read(), 5) for _ in range(2)]
    assert [(m.snapshot, m.occupancy.facility, m.occupancy.occupied_spaces) for m in changes] == [
        (False, "facilities/garage-a", 11),
        (False, "facilities/garage-far", 5),
    ]
    area_change = await asyncio.wait_for(area_watcher.read(), 5)
    assert (area_change.occupancy.facility, area_change.occupancy.occupied_spaces) == ("facilities/garage-far", 5)
    watcher.cancel()
    area_watcher.cancel()


async def test_history_buckets_are_time_weighted(client: Parking) -> None:
    await client.create("garage-a", capacity=100)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
    for i, (minute, count) in enumerate([(0, 10), (10, 30), (20, 50)], start=1):
        await client.report("garage-a", count, i, when=start + timedelta(minutes=minute))
    reply = await client.as_("engineer").GetOccupancyHistory(
        pb.GetOccupancyHistoryRequest(
            facility="facilities/garage-a",
            start_time=ts(start - timedelta(minutes=10)),
            end_time=ts(start + timedelta(minutes=20)),
            bucket=Duration(seconds=600),
        )
    )
    assert reply.capacity == 100
    assert [(b.known, b.samples) for b in reply.buckets] == [(False, 0), (True, 1), (True, 1)]
    assert [b.mean_occupied_spaces for b in reply.buckets[1:]] == [10, 30]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.as_("engineer").GetOccupancyHistory(
            pb.GetOccupancyHistoryRequest(
                facility="facilities/garage-a", start_time=ts(start), bucket=Duration(nanos=1000)
            )
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_recommendation_skips_full_closed_and_far_facilities(client: Parking) -> None:
    near = dict(lat=52.3722, lng=5.2210)
    await client.create("garage-near-full", capacity=50, **near)
    await client.create("garage-near", capacity=50, lat=52.3730, lng=5.2210)
    await client.create("garage-closed", capacity=50, lat=52.3723, lng=5.2210)
    await client.create("garage-far", capacity=50, lat=52.40, lng=5.30)
    await client.report("garage-near-full", 50, 1)
    await client.report("garage-near", 10, 1)
    await client.as_("engineer").UpdateFacility(
        pb.UpdateFacilityRequest(
            facility=pb.Facility(name="facilities/garage-closed", state=pb.FACILITY_STATE_CLOSED),
            update_mask=FieldMask(paths=["state"]),
        )
    )
    reply = await client.as_("sim").RecommendFacility(
        pb.RecommendFacilityRequest(destination=geo_pb2.LatLng(latitude=52.3722, longitude=5.2210))
    )
    assert [r.facility.name for r in reply.recommendations] == ["facilities/garage-near"]
    assert reply.recommendations[0].walk_meters == pytest.approx(89, abs=2)


async def test_a_silent_feed_shows_stale_on_every_read(client: Parking) -> None:
    """A facility watched for silence (stale_after) shows its last count as stale once no newer count
    was measured within that time: repeats of the same report do not refresh it, a new count does,
    and facilities without stale_after never go stale."""
    await client.create("garage-a", capacity=100)
    await client.create("garage-b", capacity=100)
    two_minutes_ago = datetime.now(UTC) - timedelta(minutes=2)
    assert not (await client.report("garage-a", 40, 1, when=two_minutes_ago)).occupancy.stale
    engineer = client.as_("engineer")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await engineer.UpdateFacility(
            pb.UpdateFacilityRequest(
                facility=pb.Facility(name="facilities/garage-a", stale_after=Duration(seconds=-5)),
                update_mask=FieldMask(paths=["stale_after"]),
            )
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "stale_after" in (err.value.details() or "")
    operator = client.as_("operator")  # an operator sets it for its own facility, as its feed adapter does
    updated = await operator.UpdateFacility(
        pb.UpdateFacilityRequest(
            facility=pb.Facility(name="facilities/garage-a", stale_after=Duration(seconds=60)),
            update_mask=FieldMask(paths=["stale_after"]),
        )
    )
    # The last count was measured two minutes ago: stale at once, also when the same report comes again.
    assert updated.facility.stale_after.seconds == 60 and updated.facility.occupancy.stale
    repeat = await client.report("garage-a", 40, 1, when=two_minutes_ago)
    assert repeat.outcome == pb.REPORT_OUTCOME_DUPLICATE and repeat.occupancy.stale
    get = await engineer.GetOccupancy(pb.GetOccupancyRequest(facility="facilities/garage-a"))
    listed = {f.name: f for f in (await engineer.ListFacilities(pb.ListFacilitiesRequest())).facilities}
    facility = await engineer.GetFacility(pb.GetFacilityRequest(name="facilities/garage-a"))
    assert get.occupancy.stale and listed["facilities/garage-a"].occupancy.stale and facility.facility.occupancy.stale
    assert not listed["facilities/garage-b"].occupancy.stale  # no stale_after: never stale
    watch = engineer.WatchOccupancy(pb.WatchOccupancyRequest(facilities=["facilities/garage-a"]))
    first = await anext(aiter(watch))
    watch.cancel()
    assert first.snapshot and first.occupancy.stale
    fresh = await client.report("garage-a", 42, 2)
    assert fresh.outcome == pb.REPORT_OUTCOME_ACCEPTED and not fresh.occupancy.stale
