"""Occupancy forecasts from a facility's stored history: its counts a minute apart over the last
HISTORY_DAYS days, split into local days (workday, saturday, sunday), learned by libs/forecast and
kept per facility for RELEARN (learning takes seconds; a forecast, milliseconds)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
from sqlalchemy import Engine

from libs.forecast import FacilityDay, Forecast, Forecaster, PlannedEvent
from services.common.errors import FailedPrecondition, InvalidArgument
from services.parking import usecases

HISTORY_DAYS = 14
RELEARN = timedelta(hours=1)
MAX_HISTORY_ROWS = 500_000
MINUTE = timedelta(minutes=1)
DAY_TYPES = ("workday",) * 5 + ("saturday", "sunday")
MAX_EVENTS, MAX_EVENT_HOURS, MAX_VEHICLES_PER_HOUR, MAX_EN_ROUTE = 20, 48, 100_000, 10_000


@dataclass(frozen=True, kw_only=True)
class Made:
    capacity: int
    forecast_time: datetime  # the minute the forecasts start from
    forecasts: list[Forecast]


def minute_counts(
    *, prior: int | None, samples: Sequence[tuple[datetime, int]], start: datetime, minutes: int
) -> np.ndarray:
    """The count in force at each minute from `start` (NaN before the first one)."""
    marks = np.array([(start + i * MINUTE).timestamp() for i in range(minutes)])
    times = np.array([t.timestamp() for t, _ in samples])
    values = np.array([np.nan if prior is None else prior, *(float(v) for _, v in samples)])
    return np.asarray(values[np.searchsorted(times, marks, side="right")], dtype=float)


def local_days(
    *, facility_id: str, capacity: int, zone: ZoneInfo, start: datetime, counts: np.ndarray
) -> list[FacilityDay]:
    """The minute counts cut into the facility's local days, each from its first known count."""
    days: list[FacilityDay] = []
    local = [(start + i * MINUTE).astimezone(zone) for i in range(len(counts))]
    i = 0
    while i < len(counts):
        j = i
        while j < len(counts) and local[j].date() == local[i].date():
            j += 1
        known = np.flatnonzero(~np.isnan(counts[i:j]))
        if len(known):
            first = i + int(known[0])
            days.append(
                FacilityDay(
                    facility_id=facility_id,
                    capacity=capacity,
                    day_type=DAY_TYPES[local[i].weekday()],
                    start_minute=local[first].hour * 60 + local[first].minute,
                    occupied=counts[first:j].tolist(),
                )
            )
        i = j
    return days


def validate_inputs(
    *, events: Sequence[tuple[datetime | None, Sequence[float]]], en_route: Sequence[datetime], now: datetime
) -> None:
    """What a caller adds to a forecast, checked: InvalidArgument names the first bad field."""
    if len(events) > MAX_EVENTS:
        raise InvalidArgument(f"planned_events holds {len(events)} events; at most {MAX_EVENTS}")
    for i, (start, rates) in enumerate(events):
        if start is None:
            raise InvalidArgument(f"planned_events[{i}].start_time is required")
        if not 1 <= len(rates) <= MAX_EVENT_HOURS:
            raise InvalidArgument(f"planned_events[{i}].vehicles_per_hour needs 1 to {MAX_EVENT_HOURS} hours")
        if not all(0 <= r <= MAX_VEHICLES_PER_HOUR for r in rates):  # NaN fails too
            raise InvalidArgument(
                f"planned_events[{i}].vehicles_per_hour must each be from 0 to {MAX_VEHICLES_PER_HOUR}"
            )
    if len(en_route) > MAX_EN_ROUTE:
        raise InvalidArgument(f"en_route_arrival_times holds {len(en_route)} times; at most {MAX_EN_ROUTE}")
    if past := [i for i, when in enumerate(en_route) if when < now - MINUTE]:
        raise InvalidArgument(f"en_route_arrival_times[{past[0]}] is in the past")


class Forecasts:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        # By facility and the audience's delay: a delayed audience's model learns only what it may see.
        self._learned: dict[tuple[str, timedelta], tuple[datetime, Forecaster]] = {}
        self._lock = threading.Lock()

    def make(
        self,
        facility_id: str,
        *,
        now: datetime,
        delay: timedelta = timedelta(0),
        events: Sequence[tuple[datetime, Sequence[float]]] = (),
        en_route: Sequence[datetime] = (),
    ) -> Made:
        """Forecasts from the history up to `delay` before `now` (blocking: run it in a thread). `events`:
        (start, vehicles per hour) of planned events' visitors; `en_route`: arrival times of guided vehicles."""
        end = (now - delay).replace(second=0, microsecond=0)
        start = end - timedelta(days=HISTORY_DAYS)
        row, prior, samples = usecases.history(
            self._engine, facility_id=facility_id, start=start, end=end + MINUTE, max_rows=MAX_HISTORY_ROWS
        )
        zone = ZoneInfo(row.time_zone)
        counts = minute_counts(prior=prior, samples=samples, start=start, minutes=HISTORY_DAYS * 24 * 60 + 1)
        days = local_days(facility_id=facility_id, capacity=row.capacity, zone=zone, start=start, counts=counts)
        if not days:  # a count, once known, holds until the next: the last day ends at `end`
            raise FailedPrecondition(f"facility {facility_id!r} has no count yet to forecast from")
        forecaster = self._forecaster((facility_id, delay), days, now=end)
        midnight = end.astimezone(zone).replace(hour=0, minute=0)
        planned = tuple(
            PlannedEvent(start_minute=int((when - midnight) / MINUTE), vehicles_per_hour=tuple(rates))
            for when, rates in events
        )
        today = replace(days[-1], events=planned)
        etas = [(when - end) / MINUTE for when in en_route]
        return Made(
            capacity=row.capacity, forecast_time=end, forecasts=forecaster.forecast(today, en_route_minutes=etas)
        )

    def _forecaster(self, key: tuple[str, timedelta], days: list[FacilityDay], *, now: datetime) -> Forecaster:
        """The facility's learned model, learned again from `days` when older than RELEARN."""
        with self._lock:
            learned = self._learned.get(key)
            if learned is not None and now - learned[0] < RELEARN:
                return learned[1]
        try:
            forecaster = Forecaster(days)
        except ValueError as exc:
            raise FailedPrecondition(f"facility {key[0]!r}: too little history to forecast from ({exc})") from None
        with self._lock:
            self._learned[key] = (now, forecaster)
        return forecaster
