"""The historical profile: a facility's mean occupancy at each minute of the day over the past days of
the same day type. A baseline of its own, and what the model learns the day's usual shape from."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import numpy as np

from libs.forecast.days import FacilityDay

MINUTES_PER_DAY = 24 * 60


class Profile:
    def __init__(self, days: Iterable[FacilityDay]) -> None:
        sums: dict[tuple[str, str], np.ndarray] = defaultdict(lambda: np.zeros(MINUTES_PER_DAY))
        counts: dict[tuple[str, str], np.ndarray] = defaultdict(lambda: np.zeros(MINUTES_PER_DAY))
        for day in days:
            key = (day.facility_id, day.day_type)
            minutes = day.minutes % MINUTES_PER_DAY
            np.add.at(sums[key], minutes, np.asarray(day.occupied, dtype=float) / day.capacity)
            np.add.at(counts[key], minutes, 1)
        # Share of capacity occupied; NaN where no past day has a sample (the model takes NaN as unknown).
        self._share = {
            key: np.where(counts[key] > 0, total / np.maximum(counts[key], 1), np.nan) for key, total in sums.items()
        }

    def share(self, facility_id: str, day_type: str, minutes: np.ndarray) -> np.ndarray:
        """Mean share of capacity occupied at each of `minutes` (minutes of the day; NaN: no history)."""
        found = self._share.get((facility_id, day_type))
        if found is None:
            return np.full(len(minutes), np.nan)
        return np.asarray(found[np.asarray(minutes) % MINUTES_PER_DAY], dtype=float)
