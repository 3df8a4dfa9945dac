"""Occupancy forecasts from a facility's stored history: its counts a minute apart over the last
HISTORY_DAYS days, split into local days (workday, saturday, sunday), learned by libs/forecast and
kept per facility for RELEARN (learning takes seconds; a forecast, milliseconds)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
from almere.parking.v1 import parking_pb2 as pb
from almere.partners.v1 import partners_pb2 as ppb
from google.protobuf.duration_pb2 import Duration
from sqlalchemy import Engine

from libs.forecast import FacilityDay, Forecast, Forecaster, PlannedEvent
from services.common.clock import to_timestamp
from services.common.errors import FailedPrecondition, InvalidArgument
from services.common.terms import Access, Outcome
from services.parking import usecases

HISTORY_DAYS = 14
RELEARN = timedelta(hours=1)
# ... or sooner once the stored history has grown by this share: a model learned while a facility's
# past counts were still being loaded (or in its first hours) saw the last count held over the gap.
RELEARN_GROWTH = 0.01
MAX_HISTORY_ROWS = 500_000
MINUTE = timedelta(minutes=1)
DAY_TYPES = ("workday",) * 5 + ("saturday", "sunday")
# Forecasts sent again (a Watch) or published (the bus) at most this often per facility: one costs ~20 ms.
REFRESH_S = 60.0
MAX_EVENTS, MAX_EVENT_HOURS, MAX_VEHICLES_PER_HOUR, MAX_EN_ROUTE = 20, 48, 100_000, 10_000


@dataclass(frozen=True, kw_only=True)
class Made:
    capacity: int
    forecast_time: datetime  # the minute the forecasts start from
    forecasts: list[Forecast]


def refusal(access: Access) -> str | None:
    """Why `access` may not read a facility's forecasts (None: it may): forecasts are read as the
    history is, so withheld, refused and status-only occupancies have none."""
    if access.outcome in (Outcome.REFUSED, Outcome.WITHHELD):
        return access.reason or f"{access.agreement} does not share this occupancy"
    if access.detail == ppb.DETAIL_STATUS_ONLY:
        return f"{access.agreement} shares this occupancy as its status only: no forecasts"
    return None


def to_proto(made: Made, *, round_to: int = 0) -> list[pb.OccupancyForecast]:
    """The forecasts as the caller may see them: counts rounded to `round_to` when it is set."""

    def shown(value: float) -> float:
        return float(round(value / round_to) * round_to) if round_to else value

    return [
        pb.OccupancyForecast(
            horizon=Duration(seconds=f.horizon_min * 60),
            target_time=to_timestamp(made.forecast_time + timedelta(minutes=f.horizon_min)),
            occupied_spaces=shown(f.occupied),
            low_occupied_spaces=shown(f.low),
            high_occupied_spaces=shown(f.high),
        )
        for f in made.forecasts
    ]


def facility_forecast(made: Made, *, facility_id: str, version: int, round_to: int = 0) -> pb.FacilityForecast:
    """One facility's forecasts as the Watch stream and the bus carry them."""
    return pb.FacilityForecast(
        facility=f"facilities/{facility_id}",
        capacity=made.capacity,
        forecast_time=to_timestamp(made.forecast_time),
        forecasts=to_proto(made, round_to=round_to),
        version=version,
    )


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
        # (facility, delay) -> when learned, from how many stored counts, the model
        self._learned: dict[tuple[str, timedelta], tuple[datetime, int, Forecaster]] = {}
        # The last plain forecast (no events, nobody en route) per facility and delay, with the minute
        # and the facility version it was made at: watchers and the bus's publisher asking in the same
        # minute share it while no count came in (a late count may still change that minute's history).
        self._plain: dict[tuple[str, timedelta], tuple[datetime, int, Made]] = {}
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
        plain = not events and not en_route
        if plain:
            with self._lock:
                cached = self._plain.get((facility_id, delay))
            if cached is not None and cached[:2] == (end, usecases.get_facility(self._engine, facility_id).version):
                return cached[2]
        start = end - timedelta(days=HISTORY_DAYS)
        row, prior, samples = usecases.history(
            self._engine, facility_id=facility_id, start=start, end=end + MINUTE, max_rows=MAX_HISTORY_ROWS
        )
        zone = ZoneInfo(row.time_zone)
        counts = minute_counts(prior=prior, samples=samples, start=start, minutes=HISTORY_DAYS * 24 * 60 + 1)
        days = local_days(facility_id=facility_id, capacity=row.capacity, zone=zone, start=start, counts=counts)
        if not days:  # a count, once known, holds until the next: the last day ends at `end`
            raise FailedPrecondition(f"facility {facility_id!r} has no count yet to forecast from")
        forecaster = self._forecaster((facility_id, delay), days, now=end, counts=len(samples))
        midnight = end.astimezone(zone).replace(hour=0, minute=0)
        planned = tuple(
            PlannedEvent(start_minute=int((when - midnight) / MINUTE), vehicles_per_hour=tuple(rates))
            for when, rates in events
        )
        today = replace(days[-1], events=planned)
        etas = [(when - end) / MINUTE for when in en_route]
        made = Made(
            capacity=row.capacity, forecast_time=end, forecasts=forecaster.forecast(today, en_route_minutes=etas)
        )
        if plain:
            with self._lock:
                self._plain[(facility_id, delay)] = (end, row.version, made)
        return made

    def _forecaster(
        self, key: tuple[str, timedelta], days: list[FacilityDay], *, now: datetime, counts: int
    ) -> Forecaster:
        """The facility's learned model, learned again from `days` (`counts` stored counts) when older
        than RELEARN or the history has grown by RELEARN_GROWTH since."""
        with self._lock:
            learned = self._learned.get(key)
            if learned is not None and now - learned[0] < RELEARN and counts <= learned[1] * (1 + RELEARN_GROWTH):
                return learned[2]
        try:
            forecaster = Forecaster(days)
        except ValueError as exc:
            raise FailedPrecondition(f"facility {key[0]!r}: too little history to forecast from ({exc})") from None
        with self._lock:
            self._learned[key] = (now, counts, forecaster)
        return forecaster


class Refreshes:
    """When a Watch sends a facility's forecasts again: after its occupancy changed, and no sooner
    than REFRESH_S after the last ones (changes in between wait for that moment, together)."""

    def __init__(self) -> None:
        self._sent: dict[str, float] = {}  # monotonic time of each facility's last forecasts
        self._pending: dict[str, float] = {}  # facilities changed since, and when they are due

    def sent(self, facility_id: str) -> None:
        self._sent[facility_id] = time.monotonic()
        self._pending.pop(facility_id, None)

    def changed(self, facility_id: str) -> None:
        self._pending.setdefault(facility_id, self._sent.get(facility_id, float("-inf")) + REFRESH_S)

    def wait_s(self) -> float | None:
        """Seconds until the next is due; None when no facility changed."""
        return max(0.0, min(self._pending.values()) - time.monotonic()) if self._pending else None

    def due(self) -> list[str]:
        now = time.monotonic()
        return sorted(f for f, when in self._pending.items() if when <= now)
