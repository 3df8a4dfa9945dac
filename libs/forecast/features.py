"""The model's inputs for each minute of a facility's day, as shares of its capacity so one model
serves garages of any size: where it stands, how it moved, what the day usually does next and which
event visitors are due."""

from __future__ import annotations

import numpy as np

from libs.forecast.days import FacilityDay
from libs.forecast.profile import Profile

TRENDS_MIN = (5, 15, 30)  # the recent trend: change over the last 5, 15 and 30 minutes
EVENT_RECENT_MIN = 30
NAMES = (
    "share",
    *(f"trend_{k}" for k in TRENDS_MIN),
    "minute_of_day",
    "profile_now",
    "profile_change",
    "above_profile",
    "event_due",
    "event_recent",
    "capacity",
)


def _window_sum(per_minute: np.ndarray, start: np.ndarray, length: int) -> np.ndarray:
    """Sum of per_minute over [start, start + length) for each start (per_minute covers them all)."""
    cumulative = np.concatenate([[0.0], np.cumsum(per_minute)])
    return np.asarray(cumulative[start + length] - cumulative[start], dtype=float)


def matrix(day: FacilityDay, profile: Profile, *, horizon_min: int, at: np.ndarray) -> np.ndarray:
    """One row of NAMES per index in `at` (positions in day.occupied): the forecast made then."""
    share = np.asarray(day.occupied, dtype=float) / day.capacity
    minutes = day.minutes[at]
    columns = [share[at]]
    for k in TRENDS_MIN:
        before = at - k
        columns.append(np.where(before >= 0, share[at] - share[np.maximum(before, 0)], np.nan))
    usual_now = profile.share(day.facility_id, day.day_type, minutes)
    usual_then = profile.share(day.facility_id, day.day_type, minutes + horizon_min)
    # Event arrivals minute by minute from EVENT_RECENT_MIN before the first row to the last row's horizon.
    first = int(minutes.min()) - EVENT_RECENT_MIN
    span = np.arange(first, int(minutes.max()) + horizon_min + 1)
    arrivals = day.event_arrivals(span) / day.capacity
    offset = minutes - first
    columns += [
        minutes.astype(float),
        usual_now,
        usual_then - usual_now,
        share[at] - usual_now,
        _window_sum(arrivals, offset + 1, horizon_min),
        _window_sum(arrivals, offset - EVENT_RECENT_MIN + 1, EVENT_RECENT_MIN),
        np.full(len(at), float(day.capacity)),
    ]
    return np.column_stack(columns)


def target(day: FacilityDay, *, horizon_min: int) -> tuple[np.ndarray, np.ndarray]:
    """(positions with a known outcome, change in share of capacity occupied `horizon_min` later)."""
    share = np.asarray(day.occupied, dtype=float) / day.capacity
    at = np.arange(max(len(share) - horizon_min, 0))
    return at, share[at + horizon_min] - share[at]
