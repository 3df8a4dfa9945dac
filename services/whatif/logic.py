"""What-if rules without I/O: validation, the runs a what-if makes, aggregation, ranking and the
forecast checks.

Score (lower is better): each KPI's mean divided by `do-nothing`'s mean from the same start
(`arrived`, where more is better, the other way round), weighted by SCORE_WEIGHTS and summed, so
`do-nothing` scores the sum of the weights of the KPIs present (1.0 with all of them) and a plan
below that is better than doing nothing. A KPI that `do-nothing` has at 0 counts 1 (no change) when
the plan has it at 0 too, else 2.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from almere.optimizer.v1 import optimizer_pb2 as opb
from almere.whatif.v1 import runs_pb2
from almere.whatif.v1 import whatif_pb2 as pb

from services.common.auth import Role
from services.common.errors import InvalidArgument

CREATORS = frozenset({Role.ENGINEER})
ADOPTERS = frozenset({Role.ENGINEER})
READERS = frozenset({Role.ENGINEER, Role.POLICE, Role.FIRE, Role.EMS, Role.OPTIMIZER})

DO_NOTHING = "do-nothing"
PLAN_ID = re.compile(r"^[a-z0-9-]{1,40}$")
HORIZON_MINUTES = (30.0, 120.0)
SEEDS = (1, 10)
PLANS = (1, 6)
TITLE_MAX = 200

SCORE_WEIGHTS: Mapping[str, float] = {
    "network_delay_h": 0.35,
    "emergency_access_s": 0.2,
    "through_travel_time_s": 0.15,
    "visitor_door_to_door_s": 0.1,
    "incident_queue_veh": 0.1,
    "arrived": 0.1,
}
HIGHER_IS_BETTER = frozenset({"arrived"})
FIRST_SEED = 1


def validate(what_if: pb.WhatIf) -> None:
    """Raises InvalidArgument for the first thing wrong with a new what-if."""
    if len(what_if.title) > TITLE_MAX:
        raise InvalidArgument(f"title is longer than {TITLE_MAX} characters")
    low, high = HORIZON_MINUTES
    if not low <= what_if.horizon_minutes <= high:
        raise InvalidArgument(f"horizon_minutes must be {low:g}-{high:g}, not {what_if.horizon_minutes:g}")
    if not SEEDS[0] <= what_if.seeds <= SEEDS[1]:
        raise InvalidArgument(f"seeds must be {SEEDS[0]}-{SEEDS[1]}, not {what_if.seeds}")
    if not what_if.start_sources:
        raise InvalidArgument("start_sources needs at least one of START_SOURCE_TWIN_STATE, START_SOURCE_LIVE_PICTURE")
    known = set(pb.StartSource.values()) - {pb.START_SOURCE_UNSPECIFIED}
    for source in what_if.start_sources:
        if source not in known:
            raise InvalidArgument(f"start_sources holds unknown value {source}")
    if len(set(what_if.start_sources)) != len(what_if.start_sources):
        raise InvalidArgument("start_sources names a source twice")
    if not PLANS[0] <= len(what_if.plans) <= PLANS[1]:
        raise InvalidArgument(f"plans must hold {PLANS[0]}-{PLANS[1]} plans, not {len(what_if.plans)}")
    seen: set[str] = set()
    for i, plan in enumerate(what_if.plans):
        if not PLAN_ID.match(plan.plan_id):
            raise InvalidArgument(
                f"plans[{i}].plan_id {plan.plan_id!r} is malformed: 1-40 lower case letters, digits and '-'"
            )
        if plan.plan_id in seen:
            raise InvalidArgument(f"plans[{i}].plan_id {plan.plan_id!r} is not unique")
        seen.add(plan.plan_id)
        _validate_plan(plan, f"plans[{i}]")
    if DO_NOTHING in seen and has_levers(next(p for p in what_if.plans if p.plan_id == DO_NOTHING)):
        raise InvalidArgument(f"plan {DO_NOTHING!r} must pull no levers")


def _validate_plan(plan: pb.ResponsePlan, where: str) -> None:
    for j, closure in enumerate(plan.closures):
        if not closure.edge_id:
            raise InvalidArgument(f"{where}.closures[{j}].edge_id is required")
        if closure.incident and not closure.incident.startswith("incidents/"):
            raise InvalidArgument(f"{where}.closures[{j}].incident must look like incidents/{{id}}")
        if any(lane < 0 for lane in closure.closed_lanes):
            raise InvalidArgument(f"{where}.closures[{j}].closed_lanes must not be negative")
        if closure.speed_limit_kmh < 0 or closure.expected_end_seconds < 0:
            raise InvalidArgument(f"{where}.closures[{j}]: speed_limit_kmh and expected_end_seconds must be >= 0")
    for j, area in enumerate(plan.signals):
        if area.control not in pb.SignalControl.values():
            raise InvalidArgument(f"{where}.signals[{j}].control holds unknown value {area.control}")
    for j, event in enumerate(plan.events):
        if not event.planned_event.startswith("plannedEvents/"):
            raise InvalidArgument(f"{where}.events[{j}].planned_event must look like plannedEvents/{{id}}")
        if event.cancel and event.shift_minutes:
            raise InvalidArgument(f"{where}.events[{j}]: cancel and shift_minutes exclude each other")
    if plan.strategy_mask.paths and not plan.HasField("strategy"):
        raise InvalidArgument(f"{where}.strategy is required with strategy_mask")


def has_levers(plan: pb.ResponsePlan) -> bool:
    return bool(plan.closures or plan.signals or plan.events or plan.strategy_mask.paths)


def with_do_nothing(what_if: pb.WhatIf) -> None:
    """Adds plan `do-nothing` (no levers) when the caller did not name it."""
    if all(p.plan_id != DO_NOTHING for p in what_if.plans):
        what_if.plans.add(plan_id=DO_NOTHING, title="Do nothing")


def run_id(what_if_id: str, plan_id: str, seed: int, source: int) -> str:
    short = "twin" if source == pb.START_SOURCE_TWIN_STATE else "live"
    return f"{what_if_id}-{plan_id}-{short}-s{seed}"


def runs_total(what_if: pb.WhatIf) -> int:
    return len(what_if.plans) * what_if.seeds * len(what_if.start_sources)


@dataclass(frozen=True, kw_only=True)
class Starts:
    saved_state: runs_pb2.SavedState | None = None
    live_picture: runs_pb2.LivePicture | None = None
    strategy: opb.Strategy | None = None  # the optimizer's, now


def run_requests(what_if: pb.WhatIf, what_if_id: str, starts: Starts) -> list[runs_pb2.RunRequest]:
    """One RunRequest per plan x seed x start source."""
    horizon = what_if.horizon_minutes * 60.0
    requests = []
    for source in what_if.start_sources:
        for plan in what_if.plans:
            for seed in range(FIRST_SEED, FIRST_SEED + what_if.seeds):
                request = runs_pb2.RunRequest(
                    what_if=f"whatIfs/{what_if_id}",
                    run_id=run_id(what_if_id, plan.plan_id, seed, source),
                    plan=plan,
                    seed=seed,
                    horizon_seconds=horizon,
                    start_source=source,
                )
                if starts.strategy is not None:
                    request.strategy_in_force.CopyFrom(starts.strategy)
                if source == pb.START_SOURCE_TWIN_STATE:
                    assert starts.saved_state is not None
                    request.saved_state.CopyFrom(starts.saved_state)
                else:
                    assert starts.live_picture is not None
                    request.live_picture.CopyFrom(starts.live_picture)
                requests.append(request)
    return requests


# --- aggregation ----------------------------------------------------------------------------------


def summary(values: Sequence[float]) -> pb.KpiSummary:
    return pb.KpiSummary(
        mean=statistics.fmean(values),
        min=min(values),
        max=max(values),
        stddev=statistics.pstdev(values) if len(values) > 1 else 0.0,
        per_seed=list(values),
    )


def _ratio(kpi: str, value: float, base: float) -> float:
    if kpi in HIGHER_IS_BETTER:
        value, base = base, value
    if base == 0:
        return 1.0 if value == 0 else 2.0
    return value / base


def score(kpis: Mapping[str, pb.KpiSummary], baseline: Mapping[str, pb.KpiSummary]) -> float:
    total = 0.0
    for kpi, weight in SCORE_WEIGHTS.items():
        if kpi in kpis and kpi in baseline:
            total += weight * _ratio(kpi, kpis[kpi].mean, baseline[kpi].mean)
    return total


def aggregate(what_if: pb.WhatIf, results: Iterable[runs_pb2.RunResult]) -> list[pb.PlanResult]:
    """PlanResults per start source and plan (in the what-if's order), scored and ranked."""
    by_key: dict[tuple[int, str], list[runs_pb2.RunResult]] = {}
    for result in results:
        by_key.setdefault((result.start_source, result.plan_id), []).append(result)
    out: list[pb.PlanResult] = []
    for source in what_if.start_sources:
        group: list[pb.PlanResult] = []
        for plan in what_if.plans:
            runs = sorted(by_key.get((source, plan.plan_id), []), key=lambda r: r.seed)
            if not runs:
                continue
            group.append(_plan_result(plan.plan_id, source, runs))
        baseline = next((r for r in group if r.plan_id == DO_NOTHING), None)
        for planned in group:
            planned.score = score(planned.kpis, baseline.kpis) if baseline else 0.0
        for rank, ranked in enumerate(sorted(group, key=lambda r: (r.score, r.plan_id)), start=1):
            ranked.rank = rank
        out.extend(group)
    return out


def _plan_result(plan_id: str, source: pb.StartSource.ValueType, runs: Sequence[runs_pb2.RunResult]) -> pb.PlanResult:
    result = pb.PlanResult(plan_id=plan_id, start_source=source, run_seconds=sum(r.wall_seconds for r in runs))
    names = sorted({k for r in runs for k in r.kpis})
    for kpi in names:
        values = [r.kpis[kpi] for r in runs if kpi in r.kpis]
        result.kpis[kpi].CopyFrom(summary(values))
    series: dict[str, list[list[float]]] = {}
    capacity: dict[str, int] = {}
    for run in runs:
        for occupancy in run.occupancy:
            series.setdefault(occupancy.facility_id, []).append(list(occupancy.occupied))
            capacity[occupancy.facility_id] = occupancy.capacity
    for facility_id in sorted(series):
        rows = series[facility_id]
        length = min(len(r) for r in rows)
        mean = [statistics.fmean(r[i] for r in rows) for i in range(length)]
        result.occupancy.add(facility_id=facility_id, capacity=capacity[facility_id], occupied=mean)
    return result


def relative_error(value: float, truth: float) -> float:
    if truth == 0:
        return 0.0 if value == 0 else math.copysign(1.0, value - truth)
    return (value - truth) / abs(truth)


def start_errors(results: Sequence[pb.PlanResult]) -> list[pb.StartError]:
    """The live picture's error against the twin's state, per plan and KPI (when both ran)."""
    twin = {r.plan_id: r for r in results if r.start_source == pb.START_SOURCE_TWIN_STATE}
    errors = []
    for live in results:
        if live.start_source != pb.START_SOURCE_LIVE_PICTURE or live.plan_id not in twin:
            continue
        for kpi in sorted(live.kpis):
            if kpi not in twin[live.plan_id].kpis:
                continue
            t, v = twin[live.plan_id].kpis[kpi].mean, live.kpis[kpi].mean
            errors.append(
                pb.StartError(
                    plan_id=live.plan_id, kpi=kpi, twin_state=t, live_picture=v, relative_error=relative_error(v, t)
                )
            )
    return errors


def forecast_checks(results: Sequence[pb.PlanResult], observed: runs_pb2.Observed) -> list[pb.ForecastCheck]:
    """`do-nothing`'s forecast of each KPI (per start) against what the twin observed."""
    checks = []
    for result in results:
        if result.plan_id != DO_NOTHING:
            continue
        for kpi in sorted(result.kpis):
            if kpi not in observed.kpis:
                continue
            forecast, seen = result.kpis[kpi], observed.kpis[kpi]
            checks.append(
                pb.ForecastCheck(
                    kpi=kpi,
                    start_source=result.start_source,
                    forecast=forecast.mean,
                    observed=seen,
                    relative_error=relative_error(forecast.mean, seen),
                    within_spread=forecast.min <= seen <= forecast.max,
                )
            )
    return checks


def forecast_scores(checks: Iterable[pb.ForecastCheck]) -> list[pb.KpiScore]:
    grouped: dict[tuple[str, int], list[pb.ForecastCheck]] = {}
    for check in checks:
        grouped.setdefault((check.kpi, check.start_source), []).append(check)
    return [
        pb.KpiScore(
            kpi=kpi,
            start_source=source,  # type: ignore[arg-type]
            checks=len(group),
            mean_relative_error=statistics.fmean(abs(c.relative_error) for c in group),
            within_spread_share=sum(c.within_spread for c in group) / len(group),
        )
        for (kpi, source), group in sorted(grouped.items())
    ]
