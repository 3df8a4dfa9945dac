"""What a forecast is made from: a facility's minute-by-minute occupancy on one day (a whole past day
to learn from, or today up to now) and the events planned near it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, kw_only=True)
class PlannedEvent:
    """Event visitors expected to park at the facility: `vehicles_per_hour[i]` arriving evenly over the
    i-th hour from `start_minute` (minute of the day), as the event's organiser and the city plan them."""

    start_minute: int
    vehicles_per_hour: tuple[float, ...]

    def arrivals(self, minutes: np.ndarray) -> np.ndarray:
        """Expected arrivals in each minute of `minutes` (minutes of the day)."""
        hour = (minutes - self.start_minute) // 60
        rates = np.asarray(self.vehicles_per_hour, dtype=float)
        inside = (hour >= 0) & (hour < len(rates))
        return np.where(inside, rates[np.clip(hour, 0, len(rates) - 1)] / 60, 0.0)


@dataclass(frozen=True, kw_only=True)
class FacilityDay:
    """Occupied spaces of one facility, a sample a minute from `start_minute` (minute of the day).
    `day_type` is the calendar class the city keeps profiles for (workday, saturday, event day...)."""

    facility_id: str
    capacity: int
    day_type: str
    start_minute: int
    occupied: Sequence[float]
    events: tuple[PlannedEvent, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.capacity <= 0:
            raise ValueError("capacity must be above 0")
        if not self.occupied:
            raise ValueError("occupied needs at least one sample")

    @property
    def minutes(self) -> np.ndarray:
        """Minute of the day of each sample."""
        return self.start_minute + np.arange(len(self.occupied))

    def event_arrivals(self, minutes: np.ndarray) -> np.ndarray:
        """Expected event arrivals in each of `minutes`, all planned events together."""
        total = np.zeros(len(minutes))
        for event in self.events:
            total += event.arrivals(minutes)
        return total
