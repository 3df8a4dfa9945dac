"""The forecaster: per horizon, LightGBM gradient-boosted trees with quantile objectives (10, 50 and
90 %) on the change in occupancy, learned from past days of any facility; vehicles already guided
there and due within the horizon come on top (the history cannot know of them). Planned events are
learned from past days that had them; a forecaster whose history held none (a store that does not
keep event plans) counts the expected event visitors due within the horizon on top too."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib import import_module
from typing import TYPE_CHECKING

import numpy as np

from libs.forecast import features
from libs.forecast.days import FacilityDay
from libs.forecast.profile import Profile

if TYPE_CHECKING:
    import lightgbm

HORIZONS_MIN = (15, 30, 60)
QUANTILES = (0.1, 0.5, 0.9)
# Small trees, few rounds: a few thousand rows per horizon, trained in about a second.
PARAMS = {
    "learning_rate": 0.05,
    "num_leaves": 15,
    "min_data_in_leaf": 20,
    "feature_fraction": 0.9,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "num_threads": 1,
    "verbose": -1,
    "seed": 1,
}
# Boosting rounds per quantile: the band's quantiles stop early, as more rounds fit the training days'
# own noise and narrow the band below its nominal 80 % on days it has not seen (forecast benchmark).
ROUNDS = (40, 200, 40)


@dataclass(frozen=True, kw_only=True)
class Forecast:
    """Occupied spaces expected `horizon_min` after the last sample: the median and the 10-90 % band."""

    horizon_min: int
    occupied: float
    low: float
    high: float


class Forecaster:
    def __init__(self, history: Sequence[FacilityDay]) -> None:
        """Learn from past days (each facility's whole days, any day types)."""
        if not history:
            raise ValueError("a forecaster needs at least one past day")
        self.profile = Profile(history)
        self.learned_events = any(day.events for day in history)
        # Imported here: lightgbm (with the pandas and scipy it loads) takes about a second to import,
        # which every process importing the parking service would pay, forecasting or not.
        lgb = import_module("lightgbm")
        self._models: dict[int, list[lightgbm.Booster]] = {}
        for horizon in HORIZONS_MIN:
            rows, changes = [], []
            for day in history:
                at, change = features.target(day, horizon_min=horizon)
                if len(at):
                    rows.append(features.matrix(day, self.profile, horizon_min=horizon, at=at))
                    changes.append(change)
            if not rows:
                raise ValueError(f"no past day is longer than {horizon} minutes")
            data = lgb.Dataset(np.vstack(rows), np.concatenate(changes), feature_name=list(features.NAMES))
            self._models[horizon] = [
                lgb.train({**PARAMS, "objective": "quantile", "alpha": q}, data, num_boost_round=rounds)
                for q, rounds in zip(QUANTILES, ROUNDS, strict=True)
            ]

    def forecast_at(
        self, day: FacilityDay, at: np.ndarray, *, horizon_min: int, en_route: np.ndarray | None = None
    ) -> np.ndarray:
        """(low, median, high) occupied spaces `horizon_min` after each position in `at`, one row each.
        `en_route`: per position, vehicles guided to the facility that will arrive within the horizon."""
        x = features.matrix(day, self.profile, horizon_min=horizon_min, at=at)
        change = np.sort(np.column_stack([m.predict(x) for m in self._models[horizon_min]]), axis=1)
        occupied = (x[:, [0]] + change) * day.capacity
        if en_route is not None:
            occupied += np.asarray(en_route, dtype=float)[:, None]
        if not self.learned_events:
            occupied += x[:, [features.NAMES.index("event_due")]] * day.capacity
        return np.asarray(np.clip(occupied, 0, day.capacity), dtype=float)

    def forecast(self, today: FacilityDay, *, en_route_minutes: Sequence[float] = ()) -> list[Forecast]:
        """Forecasts from the last sample of `today` for every horizon. `en_route_minutes`: the arrival
        times (minutes from now) of the vehicles guided there and on their way."""
        last = np.array([len(today.occupied) - 1])
        etas = np.asarray(en_route_minutes, dtype=float)
        out = []
        for horizon in HORIZONS_MIN:
            due = np.array([np.count_nonzero(etas <= horizon)])
            low, median, high = self.forecast_at(today, last, horizon_min=horizon, en_route=due)[0]
            out.append(Forecast(horizon_min=horizon, occupied=float(median), low=float(low), high=float(high)))
        return out
