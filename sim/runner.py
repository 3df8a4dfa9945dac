"""`almere sim run`: step SUMO (libsumo, or TraCI with sumo-gui) over a scenario (sim/scenarios/registry.py)
in one mode and seed, apply the scripted incidents, sample the city every minute and write a run folder:
config.json, tripinfo.xml, stops.xml, statistics.xml, timeseries.csv, kpis.json, kpis.csv.

Modes (both at the same equipped-vehicle share):
* none: no shared information. Drivers head for their preferred garage and learn it is full on
  arrival (rerouters on each area's own edge, other areas' occupancy unknown); signals run their
  fixed programs; drivers meet the incident when they reach it.
* sumo: SUMO's strongest built-ins. Rerouting device on the equipped share (every 60 s, travel
  times; the same vehicles coordinated mode equips), parking occupancy visible on every approach
  edge, closures seen by every router at once, actuated lights.
* coordinated: the same street, but the equipped share follows the optimizer instead of SUMO's
  rerouting device: every decision interval their navigation systems report to it and apply its
  route advice and parking guidance (decision_latency_s later, 2 simulated seconds by default); it
  also hears the police, the garages and the detectors through the services, and answers an
  incident at once.
"""

from __future__ import annotations

import csv
import json
import shutil
import time
import uuid
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass
from importlib import import_module
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from almere.optimizer.v1.optimizer_pb2 import ReportVehiclesResponse
from tqdm import tqdm

from contract.bus import DEFAULT_LIMITS, DETECTORS, SIGNALS
from libs.sumo_tools import sumo_binary
from sim import kpis, observe
from sim.adaptive_signals import ServiceControl
from sim.bus_listener import BusListener, hold_until, twin_identity
from sim.channels import bus_tls
from sim.decision_applier import GUIDANCE_SUBJECTS, SIGNAL_SUBJECTS, DecisionApplier
from sim.devices import FieldDevices
from sim.incidents import ScriptedIncidents
from sim.navigation import Navigation, ReroutingDevices, equipped
from sim.priority import Responders
from sim.scenarios import registry
from sim.scenarios.registry import RunnableScenario
from sim.stops import StopRecorder
from sim.twin_states import TwinIdentity, TwinStates

MODES = ("none", "sumo", "coordinated")
CLOCKS = ("lockstep", "realtime")


@dataclass(frozen=True, kw_only=True)
class RunSpec:
    scenario: str
    mode: str
    seed: int
    out_root: Path
    end_s: float = 4 * 3600
    scale: float = 0.7
    equipped: float = 0.5
    gui: bool = False
    sample_s: float = 60
    # A running stack's data dir (endpoints.json, credentials.json): the field devices report to it.
    services_dir: Path | None = None
    # lockstep: as fast as SUMO goes (the twin will wait for the optimizer at each decision interval);
    # realtime: `pace` simulated seconds per wall second (1: the street's own time), for live demos
    # and a twin that runs ahead of the city while the control room decides.
    clock: str = "lockstep"
    pace: float = 1.0
    # coordinated: how often the equipped vehicles report to the optimizer (simulated s).
    decision_s: float = 30
    # coordinated: the navigation systems apply a round's decisions this long after their report
    # (simulated s; the twin steps on meanwhile and waits only if the answer is not in by then), as
    # a real navigation service's answers take a moment to reach the cars. Fixed, so a run stays
    # reproducible; 0: the street waits for the optimizer (lockstep).
    decision_latency_s: float = 2
    # With services: responders (the variant's ambulances) ask the signal service for priority.
    priority: bool = True
    # coordinated: the optimizer drives the lights through the signal service (each takeover by the
    # intersection's proposal policy); off: SUMO's actuated control, as in mode sumo.
    adaptive_signals: bool = True


def prepare(spec: RunSpec) -> RunnableScenario:
    """Build (or reuse) the scenario files a run needs."""
    if spec.mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}")
    source = registry.resolve(spec.scenario)
    return source.build(spec.out_root, seed=spec.seed, scale=spec.scale, end_s=spec.end_s)


def sumo_args(spec: RunSpec, scenario: RunnableScenario, run_dir: Path) -> list[str]:
    """SUMO's command line for the run (without the binary), writing its outputs into run_dir."""
    args = [
        "-c",
        str(scenario.config),
        "--seed",
        str(spec.seed),
        "--end",
        f"{scenario.begin_s + spec.end_s:.0f}",
        "--device.emissions.probability",
        "1",
    ]
    if spec.mode == "sumo":  # the equipped vehicles get the device as they depart (ReroutingDevices)
        args += ["--device.rerouting.period", "60"]
    if additional := scenario.additional_files(spec.mode):
        args += ["--additional-files", ",".join(str(a) for a in additional)]
    args += [
        "--tripinfo-output",
        str(run_dir / "tripinfo.xml"),
        "--tripinfo-output.write-unfinished",
        "--tripinfo-output.write-undeparted",
        "--vehroute-output",
        str(run_dir / "vehroutes.xml"),
        "--vehroute-output.exit-times",
        "--vehroute-output.write-unfinished",
        "--vehroute-output.last-route",
        "--statistic-output",
        str(run_dir / "statistics.xml"),
        "--no-step-log",
        "--no-warnings",
    ]
    return args


def _start_sumo(spec: RunSpec, scenario: RunnableScenario, run_dir: Path) -> Any:
    """SUMO in this process (libsumo), or a sumo-gui to watch over TraCI (slower); returns the module."""
    import_module("sumo")  # sets SUMO_HOME before libsumo/traci are imported
    if spec.gui:
        import traci as sumo

        sumo.start([sumo_binary("sumo-gui"), *sumo_args(spec, scenario, run_dir), "--start"])
    else:
        import libsumo as sumo

        sumo.start([sumo_binary("sumo"), *sumo_args(spec, scenario, run_dir)])
    return sumo


class _Run:
    """One run's parts around the started SUMO: set up before the first step, stepped together,
    closed, then measured."""

    def __init__(
        self, spec: RunSpec, *, source: registry.Source, scenario: RunnableScenario, run_dir: Path, sumo: Any
    ) -> None:
        self.spec, self.source, self.scenario, self.run_dir, self.sumo = spec, source, scenario, run_dir, sumo
        self.run_tag = uuid.uuid4().hex[:8]
        # Baselines: in `none` the city runs the signal service's (fixed) plans; in `sumo`, SUMO's own
        # actuated control. Coordinated follows the optimizer's advice, and its lights are the
        # optimizer's adaptive steps (which then serve priority grants too).
        self.coordinated = spec.mode == "coordinated"
        self.adaptive = self.coordinated and spec.adaptive_signals
        self.applier = DecisionApplier(
            run_dir / "applied.jsonl",
            plans=spec.mode == "none",
            guidance=self.coordinated,
            vehicle_prefix=f"{self.run_tag}:",
        )
        self.applier.lights.passive = self.adaptive
        self.applier.latency_s = spec.decision_latency_s
        self.incidents = ScriptedIncidents(sumo, source.incidents, broadcast=spec.mode != "none")
        self.facilities = scenario.parking_facilities()
        self.stops = StopRecorder({f.facility_id for f in self.facilities})
        self.responders = Responders(sumo, source.responders)
        self.rerouting = ReroutingDevices(sumo, spec.seed, spec.equipped) if spec.mode == "sumo" else None
        self.devices: FieldDevices | None = None
        self.bus: BusListener | None = None
        self.navigation: Navigation | None = None
        self.signals: ServiceControl | None = None  # the optimizer drives the lights
        self.states: TwinStates | None = None  # what-if runs: saved states and observed horizons
        # Report rounds sent, by the simulated time their decisions are due (decision_latency_s).
        self.answers: deque[tuple[float, Future[ReportVehiclesResponse]]] = deque()
        self.rows: list[dict[str, float]] = []

    def connect(self) -> None:
        """Read the network; with services, connect the field devices, the navigation systems and the bus."""
        sumo = self.sumo
        self.locations = observe.facility_locations(sumo, self.facilities)
        if self.spec.services_dir is not None:
            self._connect_services(self.spec.services_dir)
        self.detectors = observe.detector_stations(sumo, list(sumo.inductionloop.getIDList()))
        self.junctions = {
            j: observe.geo(sumo, *sumo.junction.getPosition(j)) for j in sumo.junction.getIDList() if ":" not in j
        }
        self.edges = [e for e in sumo.edge.getIDList() if not e.startswith(":")]
        self.lengths = {e: sumo.lane.getLength(f"{e}_0") for e in self.edges}

    def _connect_services(self, services_dir: Path) -> None:
        spec = self.spec
        self.devices = devices = FieldDevices(services_dir, f"{spec.scenario}/{spec.mode}/{spec.seed}/{self.run_tag}")
        devices.register(self.facilities, self.locations)
        walks = observe.walk_destinations(self.sumo, self.scenario.walks_to())
        self.incidents.devices = devices
        if spec.priority and self.source.responders:
            self.responders.priority = devices.emergency_priority(self.run_dir / "priority.jsonl", self.applier.lights)
            self.applier.own_priority = self.responders.ids
        if self.adaptive:
            self.signals = self.applier.adaptive = devices.adaptive_signals()
        if self.coordinated:
            self.navigation = devices.navigation(
                seed=spec.seed,
                prefix=self.applier.vehicle_prefix,
                walks=walks,
            )
        endpoints = json.loads((services_dir / "endpoints.json").read_text())
        if endpoints.get("nats"):
            keys = endpoints.get("nats-keys")
            self.bus = BusListener(
                endpoints["nats"],
                replayed=[(SIGNALS.name, SIGNAL_SUBJECTS[0])],  # the plans in force; old grants are history
                live=[SIGNAL_SUBJECTS[1], *GUIDANCE_SUBJECTS],
                streams=[DETECTORS.config(DEFAULT_LIMITS)],
                identity={**twin_identity(Path(keys) if keys else None), **bus_tls(endpoints)},
                serve_states=True,
            )
            variant = getattr(self.source, "variant", None)
            self.states = TwinStates(
                sumo=self.sumo,
                bus=self.bus,
                identity=TwinIdentity(
                    scenario=spec.scenario,
                    seed=spec.seed,
                    scale=spec.scale,
                    begin_s=self.scenario.begin_s,
                    end_s=spec.end_s,
                    mode=spec.mode,
                    variant=getattr(variant, "name", ""),
                    run_tag=self.run_tag,
                ),
                incidents=self.incidents,
                facilities=self.facilities,
                responders=self.source.responders,
                walks=walks,
                adaptive_tls_ids=lambda: self.signals.controlled if self.signals else [],
            )

    def step_to_end(self) -> None:
        spec, begin = self.spec, self.scenario.begin_s
        started = time.monotonic()
        with tqdm(total=int(spec.end_s), unit="sim s", desc=f"{spec.scenario} {spec.mode} seed {spec.seed}") as bar:
            now = begin
            if self.signals:
                self.signals.start(self.sumo, now, record=False)
            while now < begin + spec.end_s:
                now = self._step(now)
                if spec.clock == "realtime":
                    hold_until(started + (now - begin) / spec.pace, self.bus, self._applying_at(now))
                self._play_devices(now)
                if now % spec.sample_s == 0:
                    self._sample(now)
                    bar.update(int(spec.sample_s))
                if self.navigation:
                    self._navigate(self.navigation, now)

    def _navigate(self, navigation: Navigation, now: float) -> None:
        """Report every decision interval; apply each round's decisions when they are due."""
        if now % self.spec.decision_s == 0:
            self.answers.append((now + self.spec.decision_latency_s, navigation.send(self.sumo, now, self.edges)))
        while self.answers and self.answers[0][0] <= now:
            for decision in self.answers.popleft()[1].result().decisions:
                self.applier.decide(self.sumo, now, decision)

    def _applying_at(self, now: float) -> Any:
        def apply(subject: str, payload: bytes) -> None:
            self.applier.apply(self.sumo, now, subject=subject, payload=payload)

        return apply

    def _step(self, now: float) -> float:
        """What arrived on the bus, one SUMO step, the lights' and the rerouting devices' part of it."""
        if self.bus:
            for subject, payload in self.bus.drain():
                self.applier.apply(self.sumo, now, subject=subject, payload=payload)
        self.sumo.simulationStep()
        now = float(self.sumo.simulation.getTime())
        if self.signals:
            self.signals.step(self.sumo, now)
        if self.rerouting:
            self.rerouting.step()
        return now

    def _play_devices(self, now: float) -> None:
        """The street after the step: incidents, responders, parking stops, decisions and held lights."""
        self.incidents.step(now)
        self.responders.step(now)
        self.stops.step(self.sumo, now)
        self.applier.retry(self.sumo, now)
        self.applier.lights.step(self.sumo, now)
        if self.states:  # between two steps: libsumo is not thread-safe
            self.states.step(now)

    def _sample(self, now: float) -> None:
        """Every sample interval: the time series, the garage counters and the loop detectors."""
        self.rows.append(observe.sample(self.sumo, now, edges=self.edges, facilities=self.facilities))
        if self.devices:
            self.devices.count(
                now, {f.facility_id: int(self.rows[-1][f"parked:{f.facility_id}"]) for f in self.facilities}
            )
        if self.bus:
            observe.publish_detectors(self.sumo, self.bus, self.detectors, interval_s=self.spec.sample_s)

    def close(self) -> None:
        """End SUMO and everything talking to it; with services, write what the devices did."""
        if self.signals:
            self.signals.close()
        self.sumo.close()
        self.responders.close()
        self.stops.write(self.run_dir / "stops.xml")
        self.applier.close()
        self.incidents.close()
        if self.bus:
            self.bus.close()
        if self.devices:
            self.devices.close()
            (self.run_dir / "devices.json").write_text(json.dumps(self._device_counts(self.devices)))

    def _device_counts(self, devices: FieldDevices) -> dict[str, Any]:
        navigation, signals = self.navigation, self.signals
        return {
            "occupancy_reports": devices.reports,
            "decisions_applied": self.applier.applied,
            "decisions_skipped": self.applier.skipped,
            "vehicle_reports": navigation.reports if navigation else 0,
            "signal_steps": signals.steps if signals else 0,
            "lights_awaiting_approval": signals.awaiting_approval if signals else [],
            "lights_refused": signals.refused if signals else [],
            "equipped_share": navigation.share if navigation else None,
            "incident_reported_wall_s": devices.reported_wall_s,
        }

    def write_results(self) -> None:
        """The time series, the KPIs (JSON and CSV) and the vehicles that met an incident."""
        run_dir = self.run_dir
        with (run_dir / "timeseries.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(self.rows[0]))
            writer.writeheader()
            writer.writerows(self.rows)
        result = self._kpis()
        (run_dir / "kpis.json").write_text(json.dumps(result, indent=2))
        (run_dir / "incident_vehicles.json").write_text(json.dumps(sorted(self.incidents.met)))  # for a closer look
        with (run_dir / "kpis.csv").open("w", newline="") as f:
            csv.writer(f).writerows(kpis.flatten(result).items())

    def _kpis(self) -> dict[str, Any]:
        spec, run_dir = self.spec, self.run_dir
        seed, share = spec.seed, spec.equipped
        return kpis.compute(
            tripinfo=run_dir / "tripinfo.xml",
            stops=run_dir / "stops.xml",
            statistics=run_dir / "statistics.xml",
            scheduled=self.scenario.trips,
            horizon_s=spec.end_s,
            met_incident=self.incidents.met,
            walks=self.scenario.walks_to(),
            facilities=self.locations,
            junctions=self.junctions,
            search=kpis.parking_search(
                run_dir / "vehroutes.xml",
                zone=self.scenario.centre_edges(),
                lengths=self.lengths,
                area_edges={f.facility_id: f.edge for f in self.facilities},
            ),
            responders=frozenset(self.responders.ids),
            is_equipped=(lambda v: equipped(seed, v, share)) if spec.mode != "none" else (lambda v: False),
        )


def _fresh_folder(spec: RunSpec, source: registry.Source) -> Path:
    run_dir = spec.out_root / source.name / f"{spec.mode}-seed{spec.seed}"
    shutil.rmtree(run_dir, ignore_errors=True)  # a folder holds one run, never a mix of two
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps(asdict(spec), indent=2, default=str))
    return run_dir


def run(spec: RunSpec) -> Path:
    """One run; returns its folder."""
    source = registry.resolve(spec.scenario)
    scenario = prepare(spec)
    if spec.clock not in CLOCKS:
        raise ValueError(f"clock must be one of {', '.join(CLOCKS)}")
    if not spec.pace > 0:
        raise ValueError("pace must be above 0 simulated seconds per wall second")
    if not 0 <= spec.decision_latency_s < spec.decision_s:
        raise ValueError("decision_latency_s must be from 0 to below decision_s")
    if spec.mode == "coordinated" and spec.services_dir is None:
        raise ValueError("mode coordinated runs with the services: start them with the run (almere sim run)")
    run_dir = _fresh_folder(spec, source)
    twin = _Run(spec, source=source, scenario=scenario, run_dir=run_dir, sumo=_start_sumo(spec, scenario, run_dir))
    try:
        twin.connect()
        twin.step_to_end()
    finally:
        twin.close()
    twin.write_results()
    return run_dir


def _run_in_worker(spec: RunSpec) -> Path:
    """`run` in a pool's process; a failure comes back as a plain error (some, like gRPC's, cannot be
    pickled and would hide what went wrong)."""
    try:
        return run(spec)
    except Exception as exc:
        raise RuntimeError(f"{spec.scenario} {spec.mode} seed {spec.seed}: {type(exc).__name__}: {exc}") from None


def run_many(specs: list[RunSpec], workers: int = 2, attempts: int = 3) -> list[Path]:
    """Runs in separate processes (libsumo holds one simulation per process). A run whose process
    dies (libsumo 1.28 can segfault when a car is re-planned at the wrong moment) is started again,
    up to `attempts` times in all, and says so."""
    for spec in specs:  # build once, here, before processes share the files
        prepare(spec)
    if any(s.gui for s in specs):
        return [run(s) for s in specs]
    done: dict[int, Path] = {}
    tries = dict.fromkeys(range(len(specs)), 0)
    while len(done) < len(specs):
        waiting = [i for i in range(len(specs)) if i not in done]
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), max_tasks_per_child=1) as pool:
            futures = {pool.submit(_run_in_worker, specs[i]): i for i in waiting}
            for future in as_completed(futures):
                i = futures[future]
                try:
                    done[i] = future.result()
                except BrokenProcessPool:
                    tries[i] += 1
                    if tries[i] >= attempts:
                        raise
                    print(f"run {specs[i].scenario} {specs[i].mode} seed {specs[i].seed}: its process died; again")
    return [done[i] for i in range(len(specs))]
