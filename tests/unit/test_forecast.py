"""The occupancy forecaster (libs/forecast) on synthetic mornings: it follows the day's usual shape,
its band holds the median, it counts planned event visitors and vehicles guided there; and how the
parking service cuts its stored counts into the days it learns from."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from libs.forecast import HORIZONS_MIN, FacilityDay, Forecaster, PlannedEvent, Profile
from services.parking.forecast import local_days, minute_counts

CAPACITY = 400
START = 7 * 60
EVENT = (PlannedEvent(start_minute=8 * 60, vehicles_per_hour=(240.0,)),)


def morning(seed: int, *, event: bool = False, minutes: int = 240) -> FacilityDay:
    """A garage filling from 07:00 (one vehicle a minute, noisy); on an event day 4 more a minute 08:00-09:00."""
    rng = np.random.default_rng(seed)
    arrivals = rng.poisson(1.0, minutes).astype(float)
    if event:
        arrivals[60:120] += rng.poisson(4.0, 60)
    occupied = np.minimum(np.cumsum(arrivals), CAPACITY)
    return FacilityDay(
        facility_id="garage",
        capacity=CAPACITY,
        day_type="event day" if event else "workday",
        start_minute=START,
        occupied=occupied.tolist(),
        events=EVENT if event else (),
    )


@pytest.fixture(scope="module")
def forecaster() -> Forecaster:
    return Forecaster([morning(s) for s in range(4)] + [morning(10 + s, event=True) for s in range(4)])


def today(day: FacilityDay, *, until_minute: int) -> FacilityDay:
    """The day up to (and with) its sample at `until_minute` after 07:00."""
    return FacilityDay(
        facility_id=day.facility_id,
        capacity=day.capacity,
        day_type=day.day_type,
        start_minute=day.start_minute,
        occupied=list(day.occupied[: until_minute + 1]),
        events=day.events,
    )


def test_every_horizon_comes_with_a_band_around_the_median(forecaster: Forecaster) -> None:
    forecasts = forecaster.forecast(today(morning(99), until_minute=30))
    assert [f.horizon_min for f in forecasts] == list(HORIZONS_MIN)
    for f in forecasts:
        assert 0 <= f.low <= f.occupied <= f.high <= CAPACITY


def test_an_ordinary_morning_keeps_filling_at_its_usual_rate(forecaster: Forecaster) -> None:
    day = morning(99)
    now = day.occupied[30]
    by_horizon = {f.horizon_min: f for f in forecaster.forecast(today(day, until_minute=30))}
    for horizon, f in by_horizon.items():
        assert f.occupied == pytest.approx(now + horizon, abs=0.35 * horizon + 5)


def test_planned_event_visitors_raise_the_forecast(forecaster: Forecaster) -> None:
    """Just before the event, the same occupancy forecasts far more an hour later on the event day."""
    ordinary = today(morning(99), until_minute=55)
    event_day = FacilityDay(
        facility_id="garage",
        capacity=CAPACITY,
        day_type="event day",
        start_minute=START,
        occupied=ordinary.occupied,
        events=EVENT,
    )
    plain = forecaster.forecast(ordinary)[-1].occupied
    with_event = forecaster.forecast(event_day)[-1].occupied
    assert with_event > plain + 100


def test_vehicles_guided_there_count_when_they_arrive_within_the_horizon(forecaster: Forecaster) -> None:
    day = today(morning(99), until_minute=30)
    alone = forecaster.forecast(day)
    guided = forecaster.forecast(day, en_route_minutes=[5] * 20 + [40] * 10)
    assert [g.occupied - a.occupied for a, g in zip(alone, guided, strict=True)] == pytest.approx([20, 20, 30])


def test_forecasts_never_exceed_the_capacity(forecaster: Forecaster) -> None:
    nearly_full = FacilityDay(
        facility_id="garage", capacity=CAPACITY, day_type="workday", start_minute=START, occupied=[390.0] * 120
    )
    for f in forecaster.forecast(nearly_full, en_route_minutes=[1] * 50):
        assert f.high <= CAPACITY


def test_the_profile_is_the_mean_of_past_days_at_each_minute() -> None:
    days = [morning(1), morning(2)]
    profile = Profile(days)
    expected = (days[0].occupied[10] + days[1].occupied[10]) / 2 / CAPACITY
    assert profile.share("garage", "workday", np.array([START + 10]))[0] == pytest.approx(expected)
    assert np.isnan(profile.share("garage", "sunday", np.array([START + 10]))[0])


def test_a_day_without_samples_or_capacity_is_refused() -> None:
    with pytest.raises(ValueError, match="capacity"):
        FacilityDay(facility_id="g", capacity=0, day_type="workday", start_minute=0, occupied=[1.0])
    with pytest.raises(ValueError, match="sample"):
        FacilityDay(facility_id="g", capacity=10, day_type="workday", start_minute=0, occupied=[])


def test_a_history_without_events_counts_the_planned_visitors_on_top() -> None:
    """A store that keeps no event plans: the visitors due within the horizon come on top."""
    forecaster = Forecaster([morning(s) for s in range(3)])
    plain = today(morning(99), until_minute=55)
    planned = FacilityDay(
        facility_id="garage",
        capacity=CAPACITY,
        day_type="workday",
        start_minute=START,
        occupied=plain.occupied,
        events=EVENT,
    )
    added = [
        p.occupied - a.occupied for a, p in zip(forecaster.forecast(plain), forecaster.forecast(planned), strict=True)
    ]
    assert added == pytest.approx([44, 104, 224])  # 4 a minute from 08:00 on, up to 08:10, 08:25 and 08:55


def test_stored_counts_become_local_days_from_their_first_count() -> None:
    """The service's history: a count holds until the next; days are cut at the facility's midnight."""
    start = datetime(2026, 12, 4, 22, 0, tzinfo=UTC)  # Friday 23:00 in Amsterdam
    samples = [(start + timedelta(minutes=30), 5), (start + timedelta(minutes=90), 9)]
    counts = minute_counts(prior=None, samples=samples, start=start, minutes=24 * 60)
    assert np.isnan(counts[29]) and counts[30] == 5 and counts[89] == 5 and counts[90] == 9
    friday, saturday = local_days(
        facility_id="g", capacity=10, zone=ZoneInfo("Europe/Amsterdam"), start=start, counts=counts
    )
    assert (friday.day_type, friday.start_minute, len(friday.occupied)) == ("workday", 23 * 60 + 30, 30)
    assert (saturday.day_type, saturday.start_minute, saturday.occupied[:2]) == ("saturday", 0, [5.0, 5.0])
