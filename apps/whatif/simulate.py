"""One what-if run in this process: SUMO from the twin's saved state of "now" (or one rebuilt from the
live picture), the twin's closures in force again, the plan's levers pulled, the horizon stepped and
measured with the twin's own KPIs (sim.whatif.kpis).

Carried over from the twin: its scenario files (same seed, scale and length), its mode (SUMO's
rerouting devices in `sumo`, the optimizer's guidance in `coordinated`), the lights adaptive now, the
closures in force until their expected end, and the responders still to be dispatched. Not carried
over: incidents the twin's script has yet to start (the city cannot know them)."""

from __future__ import annotations

import fcntl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from typing import Any

from almere.whatif.v1 import runs_pb2, whatif_pb2

from apps.whatif.guidance import Guidance, plan_strategy
from libs.sumo_tools import sumo_binary
from sim import observe
from sim.incidents import ScriptedIncidents
from sim.navigation import ReroutingDevices
from sim.priority import Responders
from sim.runner import RunSpec
from sim.scenarios import registry
from sim.scenarios.registry import RunnableScenario
from sim.whatif import levers
from sim.whatif.kpis import WindowKpis
from sim.whatif.reconstruct import routes_file, state_from_picture

DEFAULT_SCENARIO_S = RunSpec.end_s
# A live picture does not say at which demand the city runs: the scenario's usual one.
PICTURE_SCALE = RunSpec.scale
PICTURE_MODE = "none"  # the mode a rebuilt state's additional files are of (sim.whatif.reconstruct)


@dataclass(frozen=True, kw_only=True)
class Start:
    """The state a run starts from and what it is of."""

    built: RunnableScenario
    source: registry.Source
    state: Path
    seed: int  # the twin's (its scenario files and its equipped vehicles)
    mode: str
    adaptive_tls_ids: list[str]
    closures: list[whatif_pb2.Closure] = field(default_factory=list)
    guided: bool = False  # the equipped drivers follow the optimizer now


def simulate(
    request: runs_pb2.RunRequest, *, state_file: Path | None, work_dir: Path, build_root: Path
) -> runs_pb2.RunResult:
    """The run's result; a run that cannot start or fails on the way reports why (no KPIs)."""
    started = time.perf_counter()
    result = runs_pb2.RunResult(
        what_if=request.what_if,
        run_id=request.run_id,
        plan_id=request.plan.plan_id,
        seed=request.seed,
        start_source=request.start_source,
    )
    try:
        work_dir.mkdir(parents=True, exist_ok=True)
        start = _start(request, state_file=state_file, work_dir=work_dir, build_root=build_root)
        kpis = _run(request, start, work_dir)
    except Exception as exc:  # the service records the failed run; the worker goes on
        result.error = f"{type(exc).__name__}: {exc}"[:500]
        return result
    for name, value in kpis.result().items():
        result.kpis[name] = value
    capacities = {f.facility_id: f.capacity for f in kpis.facilities}
    for facility_id, counts in sorted(kpis.occupancy().items()):
        result.occupancy.add(facility_id=facility_id, capacity=capacities[facility_id], occupied=counts)
    result.wall_seconds = time.perf_counter() - started
    return result


def _start(request: runs_pb2.RunRequest, *, state_file: Path | None, work_dir: Path, build_root: Path) -> Start:
    if request.WhichOneof("start") == "saved_state":
        saved = request.saved_state
        if state_file is None:
            raise ValueError("a run from the twin's state needs the state file")
        source = registry.resolve(saved.scenario)
        built = _build(source, build_root, seed=saved.seed, scale=saved.scale, end_s=saved.scenario_seconds)
        return Start(
            built=built,
            source=source,
            state=state_file,
            seed=saved.seed,
            mode=saved.mode or "none",
            adaptive_tls_ids=list(saved.adaptive_tls_ids),
            closures=list(saved.closures),
            guided=saved.mode == "coordinated",
        )
    if request.WhichOneof("start") == "live_picture":
        picture = request.live_picture
        source = registry.resolve(picture.scenario)
        built = _build(source, build_root, seed=1, scale=PICTURE_SCALE, end_s=DEFAULT_SCENARIO_S)
        state = state_from_picture(picture, built=built, seed=request.seed, out=work_dir / "rebuilt.xml.gz")
        return Start(
            built=built,
            source=source,
            state=state,
            seed=1,
            mode=PICTURE_MODE,
            adaptive_tls_ids=list(picture.adaptive_tls_ids),
            closures=list(picture.closures),
            guided=request.HasField("strategy_in_force"),  # the optimizer runs in the city
        )
    raise ValueError("the run request has no start (saved_state or live_picture)")


def _build(source: registry.Source, root: Path, *, seed: int, scale: float, end_s: float) -> RunnableScenario:
    """The scenario's files, built once per worker machine (runs in parallel wait for the first)."""
    with _locked(root / f"{source.name}.lock"):
        return source.build(root, seed=seed, scale=scale, end_s=end_s or DEFAULT_SCENARIO_S)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _sumo_args(request: runs_pb2.RunRequest, start: Start) -> list[str]:
    built = start.built
    args = ["-c", str(built.config), "--load-state", str(start.state), "--seed", str(request.seed)]
    args += ["--no-step-log", "--no-warnings"]
    if start.mode == "sumo":  # as the twin: its equipped vehicles get SUMO's rerouting device
        args += ["--device.rerouting.period", "60"]
    if additional := built.additional_files(start.mode):
        args += ["--additional-files", ",".join(str(a) for a in additional)]
    return args


def _run(request: runs_pb2.RunRequest, start: Start, work_dir: Path) -> WindowKpis:
    import_module("sumo")  # sets SUMO_HOME before libsumo is imported
    import libsumo as ls

    ls.start([sumo_binary("sumo"), *_sumo_args(request, start)])
    try:
        run = _PlanRun(ls, request=request, start=start, work_dir=work_dir)
        run.step_to_end()
        return run.kpis
    finally:
        ls.close()


class _PlanRun:
    """The run's parts around the started SUMO, stepped together until the window is measured."""

    def __init__(self, ls: Any, *, request: runs_pb2.RunRequest, start: Start, work_dir: Path) -> None:
        plan, built, now = request.plan, start.built, float(ls.simulation.getTime())
        self.ls = ls
        in_force = levers.closures_as_incidents(start.closures, now=now)
        self.incidents = [
            ScriptedIncidents(ls, in_force, broadcast=start.mode != "none"),
            # A plan's closures are announced: every router knows them at once.
            ScriptedIncidents(ls, levers.closures_as_incidents(plan.closures, now=now), broadcast=True),
        ]
        for incidents in self.incidents:
            incidents.step(now)
        adaptive = levers.adaptive_lights(ls, adaptive_now=start.adaptive_tls_ids, areas=plan.signals)
        self.lights = levers.adaptive_control(built.network, adaptive) if adaptive else None
        if self.lights:
            self.lights.start(ls, now, False)
        self.events = levers.EventChanges.of_plan(ls, plan, routes=routes_file(built), now=now)
        self.responders = Responders(ls, tuple(r for r in start.source.responders if r.depart_s > now))
        self.rerouting = ReroutingDevices(ls, start.seed, RunSpec.equipped) if start.mode == "sumo" else None
        walks = observe.walk_destinations(ls, built.walks_to())
        facilities = built.parking_facilities()
        self.guidance: Guidance | None = None
        strategy_now = request.strategy_in_force if request.HasField("strategy_in_force") else None
        if start.guided or plan.strategy_mask.paths:
            strategy = plan_strategy(plan, strategy_now)
            self.guidance = Guidance(
                ls,
                network=built.network,
                facilities=facilities,
                walks=walks,
                strategy=strategy,
                seed=start.seed,
                log=work_dir / "applied.jsonl",
            )
            self.guidance.start(ls, now, [*start.closures, *plan.closures])
        self.kpis = WindowKpis(
            ls=ls,
            start_s=now,
            horizon_s=request.horizon_seconds,
            watched_edges=[c.edge_id for c in start.closures],
            facilities=facilities,
            responders=start.source.responders,
            walks=walks,
        )

    def step_to_end(self) -> None:
        ls = self.ls
        try:
            while not self.kpis.done:
                ls.simulationStep()
                now = float(ls.simulation.getTime())
                if self.lights:
                    self.lights.step(ls, now)
                if self.rerouting:
                    self.rerouting.step()
                for incidents in self.incidents:
                    incidents.step(now)
                if self.events:
                    self.kpis.forget(self.events.step(now))
                self.responders.step(now)
                if self.guidance:
                    self.guidance.step(ls, now)
                self.kpis.step(now)
        finally:
            self.responders.close()
            if self.guidance:
                self.guidance.close()
