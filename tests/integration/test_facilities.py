"""Facilities over gRPC: create, get, list with pages and filters, update with a field mask, roles."""

from __future__ import annotations

import grpc
import pytest
from almere.parking.v1 import parking_pb2 as pb
from almere.type.v1 import geo_pb2
from google.protobuf.field_mask_pb2 import FieldMask

from tests.integration.helpers import Parking, facility, read_stream


async def test_create_then_get_returns_defaults_and_unknown_occupancy(client: Parking) -> None:
    created = await client.create("garage-a", capacity=250)
    assert created.name == "facilities/garage-a"
    assert created.version == 1
    assert created.time_zone == "Europe/Amsterdam"
    assert created.state == pb.FACILITY_STATE_OPEN
    assert created.thresholds.almost_full == pytest.approx(0.9)
    assert created.occupancy.status == pb.OCCUPANCY_STATUS_UNKNOWN
    got = (await client.as_("police").GetFacility(pb.GetFacilityRequest(name="facilities/garage-a"))).facility
    assert got == created


async def test_create_twice_is_already_exists(client: Parking) -> None:
    await client.create("garage-a")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.create("garage-a")
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS


@pytest.mark.parametrize(
    ("facility_id", "change", "message"),
    [
        ("Bad_Id", {}, "malformed"),
        ("garage-b", {"capacity": 0}, "capacity"),
        ("garage-b", {"lat": 95.0}, "latitude"),
        ("garage-b", {"operator": "Not Valid"}, "operator_id"),
        ("garage-b", {"time_zone": "Mars/Olympus"}, "time_zone"),
        (
            "garage-b",
            {"opening_hours": [pb.OpeningWindow(day_of_week=8, opens="07:00", closes="19:00")]},
            "day_of_week",
        ),
        ("garage-b", {"opening_hours": [pb.OpeningWindow(day_of_week=1, opens="7am", closes="19:00")]}, "HH:MM"),
        ("garage-b", {"thresholds": pb.StatusThresholds(almost_full=0.95, full=0.9)}, "thresholds"),
    ],
)
async def test_create_rejects_bad_input_and_writes_nothing(
    client: Parking, nats_server: object, facility_id: str, change: dict[str, object], message: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.create(facility_id, **change)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in err.value.details()
    listed = await client.as_("engineer").ListFacilities(pb.ListFacilitiesRequest())
    assert list(listed.facilities) == []
    assert await read_stream(nats_server) == []  # type: ignore[attr-defined]


async def test_only_engineers_create(client: Parking) -> None:
    for caller in ("operator", "police", "optimizer", "sim"):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client.create(f"garage-{caller}", caller=caller)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "may not CreateFacility (allowed: engineer)" in (err.value.details() or "")
    assert (await client.create("garage-e", caller="engineer")).name == "facilities/garage-e"


async def test_unauthenticated_without_or_with_a_wrong_token(client: Parking) -> None:
    request = pb.GetFacilityRequest(name="facilities/garage-a")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.stub.GetFacility(request)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.stub.GetFacility(request, metadata=(("authorization", "Bearer not-a-token"),))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_get_unknown_is_not_found_and_bad_name_invalid(client: Parking) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.as_("engineer").GetFacility(pb.GetFacilityRequest(name="facilities/nope"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.as_("engineer").GetFacility(pb.GetFacilityRequest(name="garages/nope"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_list_pages_through_everything_with_filters(client: Parking) -> None:
    for i in range(7):
        await client.create(f"garage-{i}", operator="op-a" if i % 2 else "op-b", lat=52.37 + i * 0.001)
    await client.as_("engineer").CreateFacility(
        pb.CreateFacilityRequest(
            facility_id="pr-1", facility=facility(operator="op-c", kind=pb.FACILITY_KIND_PARK_AND_RIDE)
        )
    )
    engineer = client.as_("engineer")
    seen: list[str] = []
    token = ""
    while True:
        page = await engineer.ListFacilities(pb.ListFacilitiesRequest(page_size=3, page_token=token))
        assert len(page.facilities) <= 3
        seen += [f.name for f in page.facilities]
        token = page.next_page_token
        if not token:
            break
    assert seen == sorted(seen) and len(seen) == 8
    by_operator = await engineer.ListFacilities(pb.ListFacilitiesRequest(operator_id="op-a"))
    assert [f.name for f in by_operator.facilities] == [
        "facilities/garage-1",
        "facilities/garage-3",
        "facilities/garage-5",
    ]
    by_kind = await engineer.ListFacilities(pb.ListFacilitiesRequest(kinds=[pb.FACILITY_KIND_PARK_AND_RIDE]))
    assert [f.name for f in by_kind.facilities] == ["facilities/pr-1"]
    box = geo_pb2.BoundingBox(
        low=geo_pb2.LatLng(latitude=52.3705, longitude=5.0), high=geo_pb2.LatLng(latitude=52.3725, longitude=5.5)
    )
    in_area = await engineer.ListFacilities(pb.ListFacilitiesRequest(area=box))
    assert [f.name for f in in_area.facilities] == ["facilities/garage-1", "facilities/garage-2"]
    first = await engineer.ListFacilities(pb.ListFacilitiesRequest(page_size=2, operator_id="op-a"))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await engineer.ListFacilities(pb.ListFacilitiesRequest(page_size=2, page_token=first.next_page_token))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await engineer.ListFacilities(pb.ListFacilitiesRequest(page_token="%%%"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_update_with_field_mask_changes_only_named_fields(client: Parking, nats_server: object) -> None:
    await client.create("garage-a", capacity=100)
    await client.report("garage-a", 92, 1)
    patch = pb.Facility(name="facilities/garage-a", capacity=200, display_name="ignored, not in mask")
    reply = await client.as_("operator").UpdateFacility(
        pb.UpdateFacilityRequest(facility=patch, update_mask=FieldMask(paths=["capacity"]))
    )
    updated = reply.facility
    assert updated.capacity == 200 and updated.display_name == "Test garage"
    # A larger garage is no longer almost full: the status follows the capacity.
    assert updated.occupancy.status == pb.OCCUPANCY_STATUS_SPACES_AVAILABLE
    assert updated.occupancy.free_spaces == 108
    closed = await client.as_("engineer").UpdateFacility(
        pb.UpdateFacilityRequest(
            facility=pb.Facility(name="facilities/garage-a", state=pb.FACILITY_STATE_CLOSED),
            update_mask=FieldMask(paths=["state"]),
        )
    )
    assert closed.facility.occupancy.status == pb.OCCUPANCY_STATUS_CLOSED
    subjects = [s for s, _ in await read_stream(nats_server)]  # type: ignore[attr-defined]
    assert subjects.count("almere.parking.v1.facility_updated.garage-a") == 2
    assert subjects.count("almere.parking.v1.status_changed.garage-a") == 3  # unknown->almost, ->available, ->closed


async def test_update_rejections(client: Parking) -> None:
    await client.create("garage-a")
    operator = client.as_("operator")
    cases = [
        (operator, pb.Facility(name="facilities/garage-a", capacity=5), [], grpc.StatusCode.INVALID_ARGUMENT),
        (operator, pb.Facility(name="facilities/garage-a"), ["version"], grpc.StatusCode.INVALID_ARGUMENT),
        (
            operator,
            pb.Facility(name="facilities/garage-a", capacity=-1),
            ["capacity"],
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            operator,
            pb.Facility(name="facilities/garage-a", operator_id="op-b"),
            ["operator_id"],
            grpc.StatusCode.PERMISSION_DENIED,
        ),
        (
            client.as_("other_operator"),
            pb.Facility(name="facilities/garage-a", capacity=5),
            ["capacity"],
            grpc.StatusCode.PERMISSION_DENIED,
        ),
        (
            client.as_("police"),
            pb.Facility(name="facilities/garage-a", capacity=5),
            ["capacity"],
            grpc.StatusCode.PERMISSION_DENIED,
        ),
        (operator, pb.Facility(name="facilities/nope", capacity=5), ["capacity"], grpc.StatusCode.NOT_FOUND),
    ]
    for caller, patch, paths, code in cases:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await caller.UpdateFacility(pb.UpdateFacilityRequest(facility=patch, update_mask=FieldMask(paths=paths)))
        assert err.value.code() == code, (patch, paths, err.value.details())
    unchanged = (await operator.GetFacility(pb.GetFacilityRequest(name="facilities/garage-a"))).facility
    assert unchanged.version == 1 and unchanged.capacity == 100 and unchanged.operator_id == "op-a"
