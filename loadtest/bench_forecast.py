"""Accuracy of the occupancy forecasts (libs/forecast) on the demo's incident + event morning, on twin
seeds the model never saw, against two baselines scored in the same run on the same minutes:
persistence (occupancy stays as it is) and the historical profile (the mean of the training event
mornings at that minute). For each horizon (15, 30, 60 min): MAE in vehicles over every facility and
minute with a known outcome, and how often the outcome falls inside the 10-90 % band (the baselines'
bands: the 10 and 90 % quantiles of their errors on the training days). Target: at 30 minutes, MAE
at most 0.6x persistence's.

Data: twin runs in mode sumo (no services needed), the garages sampled every minute (sim/observe.py).
Training: event mornings (almere-centrum-incident-event) seeds 1-3 and ordinary mornings
(almere-centrum-incident, almere-centrum) seeds 1-3; test: event mornings seeds 4-6. The planned event
(its hourly visitors and their garages) is what the scenario's demand defines. Runs are cached under
$TMPDIR/almere-bench-forecast (delete it to run the twin again); the plot of one facility's forecast
against the outcome goes there too.

Run: `.venv/bin/python loadtest/bench_forecast.py [--facility garage-forum]` (make bench-forecast)."""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no screen
import matplotlib.pyplot as plt
import numpy as np
from tqdm import tqdm

from libs.forecast import HORIZONS_MIN, FacilityDay, Forecaster, PlannedEvent, Profile
from libs.forecast.features import target
from sim.runner import RunSpec, run_many
from sim.scenarios.almere_centrum import demand
from sim.scenarios.almere_centrum.layout import FACILITIES

WORK = Path(tempfile.gettempdir()) / "almere-bench-forecast"
SCALE = 0.7  # the runner's default, as in the demo
START_MINUTE = 7 * 60  # the scenario starts at 07:00
EVENT_MORNING = "almere-centrum-incident-event"
ORDINARY = ("almere-centrum-incident", "almere-centrum")
TRAIN_SEEDS, TEST_SEEDS = (1, 2, 3), (4, 5, 6)
TARGET_RATIO = 0.6  # at 30 minutes, MAE against persistence's
BAND = (0.1, 0.9)


def planned_event(facility_id: str) -> tuple[PlannedEvent, ...]:
    """The event as the scenario plans it: its visitors per hour from 07:00, the facility's share."""
    share = demand.EVENT_CHOICE.get(facility_id, 0.0) / sum(demand.EVENT_CHOICE.values())
    if not share:
        return ()
    return (PlannedEvent(start_minute=START_MINUTE, vehicles_per_hour=tuple(r * SCALE * share for r in demand.EVENT)),)


def twin_days(scenario: str, seeds: tuple[int, ...]) -> list[FacilityDay]:
    """Each facility's morning in runs of the scenario (run now unless cached)."""
    specs = [RunSpec(scenario=scenario, mode="sumo", seed=s, out_root=WORK / "runs", scale=SCALE) for s in seeds]
    missing = [s for s in specs if not (s.out_root / s.scenario / f"sumo-seed{s.seed}" / "timeseries.csv").exists()]
    if missing:
        run_many(missing)
    event = scenario == EVENT_MORNING
    days = []
    for spec in specs:
        with (spec.out_root / spec.scenario / f"sumo-seed{spec.seed}" / "timeseries.csv").open() as f:
            rows = list(csv.DictReader(f))
        first = START_MINUTE + round(float(rows[0]["time_s"]) / 60)
        for facility in FACILITIES:
            days.append(
                FacilityDay(
                    facility_id=facility.facility_id,
                    capacity=facility.capacity,
                    day_type="event day" if event else "workday",
                    start_minute=first,
                    occupied=[float(r[f"parked:{facility.facility_id}"]) for r in rows],
                    events=planned_event(facility.facility_id) if event else (),
                )
            )
    return days


@dataclass(frozen=True, kw_only=True)
class Scored:
    mae: float
    coverage: float


# A method's (low, median, high) occupied spaces `horizon` minutes after each position of a day.
Method = Callable[[FacilityDay, np.ndarray, int], np.ndarray]


def persistence(day: FacilityDay, at: np.ndarray, horizon: int) -> np.ndarray:
    now = np.asarray(day.occupied, dtype=float)[at]
    return np.column_stack([now, now, now])


def profile_method(profile: Profile) -> Method:
    def forecast(day: FacilityDay, at: np.ndarray, horizon: int) -> np.ndarray:
        usual = profile.share(day.facility_id, day.day_type, day.minutes[at] + horizon) * day.capacity
        return np.column_stack([usual, usual, usual])

    return forecast


def with_error_band(method: Method, training: list[FacilityDay]) -> Method:
    """A point forecast with the 10-90 % quantiles of its errors on the training days as its band."""
    bands = {}
    for horizon in HORIZONS_MIN:
        errors = np.concatenate(
            [outcome(d, horizon)[1] - method(d, outcome(d, horizon)[0], horizon)[:, 1] for d in training]
        )
        bands[horizon] = np.nanquantile(errors, BAND)

    def forecast(day: FacilityDay, at: np.ndarray, horizon: int) -> np.ndarray:
        point = method(day, at, horizon)[:, 1]
        low, high = bands[horizon]
        return np.asarray(np.clip(np.column_stack([point + low, point, point + high]), 0, day.capacity), dtype=float)

    return forecast


def outcome(day: FacilityDay, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """(positions with a known outcome, occupied spaces `horizon` minutes after each)."""
    at, change = target(day, horizon_min=horizon)
    return at, (np.asarray(day.occupied, dtype=float)[at] / day.capacity + change) * day.capacity


def score(method: Method, days: list[FacilityDay], horizon: int) -> Scored:
    errors, inside = [], []
    for day in days:
        at, actual = outcome(day, horizon)
        low, median, high = method(day, at, horizon).T
        errors.append(np.abs(median - actual))
        inside.append((actual >= low) & (actual <= high))
    return Scored(mae=float(np.nanmean(np.concatenate(errors))), coverage=float(np.mean(np.concatenate(inside))))


def plot(model: Forecaster, day: FacilityDay, path: Path, *, horizon: int = 30) -> None:
    at, actual = outcome(day, horizon)
    low, median, high = model.forecast_at(day, at, horizon_min=horizon).T
    clock = (day.minutes[at] + horizon) / 60
    fig, ax = plt.subplots(figsize=(9, 4.5))
    ax.fill_between(clock, low, high, alpha=0.25, label="ours, 10-90 % band")
    ax.plot(clock, median, label=f"ours, {horizon} min ahead")
    ax.plot(clock, np.asarray(day.occupied, dtype=float)[at], ":", label="persistence")
    ax.plot(clock, actual, "k", lw=1.2, label="actual")
    ax.axhline(day.capacity, color="grey", lw=0.8, ls="--")
    ax.set(xlabel="hour of day", ylabel="occupied spaces", title=f"{day.facility_id}, event morning (unseen seed)")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--facility", default="garage-forum", help="the facility to plot")
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    training = twin_days(EVENT_MORNING, TRAIN_SEEDS)
    for scenario in ORDINARY:
        training += twin_days(scenario, TRAIN_SEEDS)
    test = twin_days(EVENT_MORNING, TEST_SEEDS)
    print(f"\n{len(training)} facility-mornings to learn from, {len(test)} unseen event mornings to score on")

    cpu = time.process_time()
    model = Forecaster(training)
    train_cpu = time.process_time() - cpu
    methods: dict[str, Method] = {
        "ours (LightGBM quantiles)": lambda d, at, h: model.forecast_at(d, at, horizon_min=h),
        "persistence": with_error_band(persistence, training),
        "profile": with_error_band(profile_method(model.profile), training),
    }
    results: dict[tuple[str, int], Scored] = {}
    cpu = time.process_time()
    for name, method in tqdm(methods.items(), desc="scoring", unit="method"):
        for horizon in HORIZONS_MIN:
            results[name, horizon] = score(method, test, horizon)
        if name.startswith("ours"):
            forecasts = sum(len(outcome(d, h)[0]) for d in test for h in HORIZONS_MIN)
            predict_cpu_ms = (time.process_time() - cpu) * 1000 / forecasts
    one_call = time.process_time()
    for day in test:  # what the service does per call: one facility, three horizons
        model.forecast(day)
    one_call_ms = (time.process_time() - one_call) * 1000 / len(test)

    print(f"\nMAE in vehicles (band coverage, 10-90 % nominal 80 %), event mornings seeds {TEST_SEEDS}:")
    print(f"{'method':<28}" + "".join(f"{f'{h} min':>18}" for h in HORIZONS_MIN))
    for name in methods:
        cells = "".join(f"{results[name, h].mae:>9.1f} ({results[name, h].coverage:4.0%})" for h in HORIZONS_MIN)
        print(f"{name:<28}{cells}")
    ours, base = results["ours (LightGBM quantiles)", 30].mae, results["persistence", 30].mae
    print(
        f"\nCPU: training {train_cpu:.1f} s ({len(training)} facility-mornings, {len(HORIZONS_MIN)} horizons x 3 "
        f"quantiles); {predict_cpu_ms:.3f} ms per forecast in bulk, {one_call_ms:.1f} ms for one facility's "
        f"three horizons (Forecaster.forecast)"
    )
    day = next(d for d in test if d.facility_id == args.facility)
    plot(model, day, WORK / f"forecast-{args.facility}.png")
    print(f"plot: {WORK / f'forecast-{args.facility}.png'}")
    ratio = ours / base
    verdict = "met" if ratio <= TARGET_RATIO else "not met"
    print(f"target: 30 min MAE <= {TARGET_RATIO:.1f}x persistence's ({base:.1f}): {ours:.1f}, {ratio:.2f}x, {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
