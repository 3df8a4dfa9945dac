"""ParkingService.Forecast over gRPC (real nats-server, SQLite): forecasts from the stored history with
their band, vehicles guided there on top, and clear statuses for bad input."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
import pytest
from almere.parking.v1 import parking_pb2 as pb

from tests.integration.helpers import Parking, ts

CAPACITY = 300


# The garage's day is shifted so that the tests run at its 09:00, whatever the clock says: mid-way up
# the morning ramp, where following the history means more than holding on to the present count.
_STARTED = datetime.now(UTC)
_SHIFT_H = 9 - (_STARTED.hour + _STARTED.minute / 60)


def usual(when: datetime) -> int:
    """A garage's day: empty at night, filling 07:00-11:00 to 250, emptying from 16:00."""
    hour = (when.hour + when.minute / 60 + _SHIFT_H) % 24
    return round(max(0.0, min(250.0, (hour - 7) * 62.5, (20 - hour) * 62.5)))


async def with_history(client: Parking, facility_id: str, *, days: int = 2, step_min: int = 10) -> datetime:
    """The facility with `days` of counts every `step_min` minutes up to now; returns now."""
    await client.create(facility_id, capacity=CAPACITY)
    return await seed_history(client, facility_id, days=days, step_min=step_min)


async def seed_history(client: Parking, facility_id: str, *, days: int = 2, step_min: int = 10) -> datetime:
    """`days` of counts every `step_min` minutes up to now for an existing facility; returns now."""
    now = datetime.now(UTC).replace(microsecond=0)
    when = now - timedelta(days=days)
    sequence = 1
    while when <= now:
        await client.report(facility_id, usual(when), sequence, when=when)
        when += timedelta(minutes=step_min)
        sequence += 1
    return now


async def test_forecasts_for_each_horizon_with_a_band(client: Parking) -> None:
    now = await with_history(client, "garage-a", days=7)
    reply = await client.as_("operator").Forecast(pb.ForecastRequest(facility="facilities/garage-a"))
    assert reply.capacity == CAPACITY
    made = reply.forecast_time.ToDatetime(UTC)
    assert timedelta(0) <= now - made <= timedelta(minutes=1)
    assert [f.horizon.seconds // 60 for f in reply.forecasts] == [15, 30, 60]
    for f in reply.forecasts:
        assert f.target_time.ToDatetime(UTC) == made + f.horizon.ToTimedelta()
        assert 0 <= f.low_occupied_spaces <= f.occupied_spaces <= f.high_occupied_spaces <= CAPACITY
        # The history repeats itself each day: the forecast follows it.
        assert f.occupied_spaces == pytest.approx(usual(f.target_time.ToDatetime(UTC)), abs=40)

    soon = ts(datetime.now(UTC) + timedelta(minutes=10))
    guided = await client.as_("operator").Forecast(
        pb.ForecastRequest(facility="facilities/garage-a", en_route_arrival_times=[soon] * 20)
    )
    for alone, with_guided in zip(reply.forecasts, guided.forecasts, strict=True):
        assert with_guided.occupied_spaces == pytest.approx(min(alone.occupied_spaces + 20, CAPACITY))


async def test_planned_event_visitors_raise_the_forecast(client: Parking) -> None:
    await with_history(client, "garage-a", days=1)
    event = pb.PlannedEvent(start_time=ts(datetime.now(UTC)), vehicles_per_hour=[120])
    plain = await client.as_("operator").Forecast(pb.ForecastRequest(facility="facilities/garage-a"))
    planned = await client.as_("operator").Forecast(
        pb.ForecastRequest(facility="facilities/garage-a", planned_events=[event])
    )
    added = [p.occupied_spaces - a.occupied_spaces for a, p in zip(plain.forecasts, planned.forecasts, strict=True)]
    assert added[0] > 20 and added[2] > added[0]


@pytest.mark.parametrize(
    ("request_fields", "code", "message"),
    [
        ({"facility": "garages/x"}, grpc.StatusCode.INVALID_ARGUMENT, "facility"),
        ({"facility": "facilities/nowhere"}, grpc.StatusCode.NOT_FOUND, "nowhere"),
        ({"planned_events": [pb.PlannedEvent(vehicles_per_hour=[10])]}, grpc.StatusCode.INVALID_ARGUMENT, "start_time"),
        (
            {"planned_events": [pb.PlannedEvent(start_time=ts(), vehicles_per_hour=[-1])]},
            grpc.StatusCode.INVALID_ARGUMENT,
            "vehicles_per_hour",
        ),
        (
            {"en_route_arrival_times": [ts(datetime.now(UTC) - timedelta(hours=1))]},
            grpc.StatusCode.INVALID_ARGUMENT,
            "en_route_arrival_times[0] is in the past",
        ),
        ({}, grpc.StatusCode.FAILED_PRECONDITION, "no count yet"),
    ],
)
async def test_bad_requests_get_a_clear_status(
    client: Parking, request_fields: dict[str, object], code: grpc.StatusCode, message: str
) -> None:
    await client.create("garage-a", capacity=CAPACITY)  # no counts yet
    request = pb.ForecastRequest(**{"facility": "facilities/garage-a", **request_fields})  # type: ignore[arg-type]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.as_("operator").Forecast(request)
    assert err.value.code() == code
    assert message in err.value.details()
