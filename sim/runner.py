"""`almere sim run`: step SUMO (libsumo, or TraCI with sumo-gui) over a scenario in one mode and seed,
apply the scripted incidents, sample the city every minute and write a run folder:
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
  route advice and parking guidance; it also hears the police, the garages and the detectors through
  the services, and answers an incident at once.
"""

from __future__ import annotations

import csv
import json
import shutil
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass
from functools import partial
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from almere.detectors.v1 import detectors_pb2
from google.protobuf.timestamp_pb2 import Timestamp
from tqdm import tqdm

from contract.bus import DEFAULT_LIMITS, DETECTORS, MEASUREMENT, SIGNALS, detector_loop_id
from libs.sumo_tools import sumo_binary
from sim import kpis
from sim.bus_listener import BusListener
from sim.controllers import GUIDANCE_SUBJECTS, SIGNAL_SUBJECTS, Controllers
from sim.devices import FieldDevices
from sim.navigation import equipped
from sim.priority import Responders
from sim.scenarios import almere_centrum
from sim.scenarios.almere_centrum import layout
from sim.stops import StopRecorder
from sim.variants import VARIANTS, WALKING_PACE, ScriptedIncident

MODES = ("none", "sumo", "coordinated")
CLOCKS = ("lockstep", "realtime")
CLOSED_TO = ["authority", "emergency"]  # only responders pass a closed lane


@dataclass(frozen=True)
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
    # realtime: one simulated second per wall second, for live demos.
    clock: str = "lockstep"
    # coordinated: how often the equipped vehicles report to the optimizer (simulated s).
    decision_s: float = 30
    # With services: responders (the variant's ambulances) ask the signal service for priority.
    priority: bool = True
    # coordinated: the optimizer drives the lights through the signal service (each takeover by the
    # intersection's proposal policy); off: SUMO's actuated control, as in mode sumo.
    adaptive_signals: bool = True


def _sumo_args(spec: RunSpec, scenario: almere_centrum.Scenario, run_dir: Path) -> list[str]:
    additionals = [scenario.parking, scenario.detectors]
    args = [
        "-c",
        str(scenario.config),
        "--seed",
        str(spec.seed),
        "--end",
        f"{spec.end_s:.0f}",
        "--device.emissions.probability",
        "1",
    ]
    if spec.mode == "none":
        additionals.append(scenario.rerouters)  # parking search without information
    else:
        additionals += [scenario.guided_rerouters, scenario.actuated]
        if spec.mode == "sumo":  # the equipped vehicles get the device as they depart (_Equipper)
            args += ["--device.rerouting.period", "60"]
    args += ["--additional-files", ",".join(str(a) for a in additionals)]
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


class _Equipper:
    """Mode sumo: SUMO's rerouting device on the same vehicles coordinated mode gives a navigation
    system (sim/navigation.py's draw), so the two modes compare the same drivers."""

    def __init__(self, sumo: Any, seed: int, share: float) -> None:
        self._sumo, self._seed, self._share = sumo, seed, share
        self.equipped = 0

    def step(self) -> None:
        for vehicle in self._sumo.simulation.getDepartedIDList():
            if equipped(self._seed, vehicle, self._share):
                self._sumo.vehicle.setParameter(vehicle, "has.rerouting.device", "true")
                self.equipped += 1


class _Incidents:
    """Applies scripted incidents to the running SUMO and undoes them when they end; the police
    field device (if any) reports them."""

    def __init__(
        self,
        sumo: Any,
        incidents: tuple[ScriptedIncident, ...],
        devices: FieldDevices | None = None,
        broadcast: bool = False,
    ) -> None:
        """`broadcast`: a closure is known to every router at once (mode sumo); otherwise drivers find
        a closed road when they reach it and only then turn off."""
        self._sumo = sumo
        self.devices = devices
        self._broadcast = broadcast
        self._pending = sorted(incidents, key=lambda i: i.start_s)
        self._active: list[tuple[ScriptedIncident, dict[str, tuple[list[str], float]]]] = []
        self.met: set[str] = set()  # vehicles that drove onto an incident's road while it was there

    def _heading_for(self, edge: str) -> list[str]:
        """Vehicles whose remaining route crosses `edge` (a scan of every vehicle: once per incident)."""
        out = []
        for vehicle in self._sumo.vehicle.getIDList():
            if edge in self._sumo.vehicle.getRoute(vehicle)[self._sumo.vehicle.getRouteIndex(vehicle) + 1 :]:
                out.append(vehicle)
        return out

    def _reaching(self, edge: str) -> list[str]:
        """Vehicles on the roads into `edge` whose next edge it is (checked every step, so only those)."""
        junction = self._sumo.edge.getFromJunction(edge)
        out = []
        for upstream in self._sumo.junction.getIncomingEdges(junction):
            for vehicle in self._sumo.edge.getLastStepVehicleIDs(upstream):
                route = self._sumo.vehicle.getRoute(vehicle)
                index = self._sumo.vehicle.getRouteIndex(vehicle)
                if index + 1 < len(route) and route[index + 1] == edge:
                    out.append(vehicle)
        return out

    def _detour(self, vehicles: list[str]) -> None:
        for vehicle in vehicles:
            if not self._sumo.vehicle.getLaneID(vehicle).startswith(":"):
                self._sumo.vehicle.rerouteTraveltime(vehicle)

    def close(self) -> None:
        """End what is still open (the run is over): the police clear it."""
        if self.devices:
            for incident, _ in self._active:
                self.devices.incident_ended(incident)

    def step(self, now: float) -> None:
        for incident, _ in self._active:
            self.met.update(self._sumo.edge.getLastStepVehicleIDs(incident.edge))
            if incident.full_closure:  # whoever reaches the barrier turns off (equipped or not)
                self._detour(self._reaching(incident.edge))
        while self._pending and self._pending[0].start_s <= now:
            incident = self._pending.pop(0)
            saved = {}
            for index in range(self._sumo.edge.getLaneNumber(incident.edge)):
                lane = f"{incident.edge}_{index}"
                saved[lane] = (list(self._sumo.lane.getAllowed(lane)), self._sumo.lane.getMaxSpeed(lane))
                if incident.full_closure or index in incident.closed_lanes:
                    self._sumo.lane.setAllowed(lane, CLOSED_TO)
                else:
                    self._sumo.lane.setMaxSpeed(lane, WALKING_PACE)
            self._active.append((incident, saved))
            heading = self._heading_for(incident.edge)
            self.met.update(heading)  # on their way through it when it happened
            if incident.full_closure and self._broadcast:
                self._detour(heading)
            if self.devices:
                shape = self._sumo.lane.getShape(f"{incident.edge}_0")
                lon, lat = self._sumo.simulation.convertGeo(*shape[len(shape) // 2])
                self.devices.incident_started(incident, (lat, lon))
        for incident, saved in [a for a in self._active if a[0].end_s <= now]:
            for lane, (allowed, speed) in saved.items():
                self._sumo.lane.setAllowed(lane, allowed)
                self._sumo.lane.setMaxSpeed(lane, speed)
            self._active.remove((incident, saved))
            if self.devices:
                self.devices.incident_ended(incident)


def _sample(sumo: Any, now: float, edges: list[str]) -> dict[str, float]:
    vehicles = sumo.vehicle.getIDList()
    speeds = [sumo.vehicle.getSpeed(v) for v in vehicles if not sumo.vehicle.isStoppedParking(v)]
    row = {
        "time_s": now,
        "vehicles": len(vehicles),
        "mean_speed_mps": sum(speeds) / len(speeds) if speeds else 0.0,  # of vehicles not parked
        "halting": sum(sumo.edge.getLastStepHaltingNumber(e) for e in edges),
    }
    for facility in layout.FACILITIES:
        row[f"parked:{facility.facility_id}"] = sumo.parkingarea.getVehicleCount(facility.facility_id)
    return row


def prepare(spec: RunSpec) -> almere_centrum.Scenario:
    """Build (or reuse) the scenario files a run needs."""
    if spec.mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}")
    if spec.scenario not in VARIANTS:
        raise ValueError(f"unknown scenario {spec.scenario!r}; known: {', '.join(VARIANTS)}")
    variant = VARIANTS[spec.scenario]
    demand = "event" if variant.event else "normal"
    build_dir = spec.out_root / "build" / f"{variant.base}-{demand}-scale{spec.scale:g}-{spec.end_s:.0f}s"
    return almere_centrum.build(build_dir, spec.seed, spec.scale, spec.end_s, variant.event)


FACILITY_IDS = [f.facility_id for f in layout.FACILITIES]


def _geo(sumo: Any, x: float, y: float) -> tuple[float, float]:
    lon, lat = sumo.simulation.convertGeo(x, y)
    return lat, lon


def _facility_locations(sumo: Any) -> dict[str, tuple[float, float]]:
    """WGS84 position of each parking area (middle of its lane stretch)."""
    out = {}
    for facility in layout.FACILITIES:
        lane = sumo.parkingarea.getLaneID(facility.facility_id)
        middle = (
            sumo.parkingarea.getStartPos(facility.facility_id) + sumo.parkingarea.getEndPos(facility.facility_id)
        ) / 2
        out[facility.facility_id] = _geo(sumo, *sumo.simulation.convert2D(lane.rsplit("_", 1)[0], middle))
    return out


def _publish_detectors(sumo: Any, bus: BusListener, loops: list[str], now: float, interval_s: float) -> None:
    """The loop detectors' last interval, as the street's detector stations would send it."""
    start, end = Timestamp(), Timestamp()
    end.GetCurrentTime()
    start.FromNanoseconds(end.ToNanoseconds() - int(interval_s * 1e9))
    for loop in loops:
        lane = sumo.inductionloop.getLaneID(loop)
        measurement = detectors_pb2.Measurement(
            detector_id=loop,
            edge_id=lane.rsplit("_", 1)[0],
            lane_index=int(lane.rsplit("_", 1)[1]),
            interval_start=start,
            interval_end=end,
            vehicle_count=sumo.inductionloop.getLastIntervalVehicleNumber(loop),
            mean_speed_mps=sumo.inductionloop.getLastIntervalMeanSpeed(loop),
            occupancy_percent=sumo.inductionloop.getLastIntervalOccupancy(loop),
        )
        bus.publish(DETECTORS.subject(MEASUREMENT, detector_loop_id(loop)), measurement.SerializeToString())


def _wait_until(deadline: float, bus: BusListener | None, apply: Callable[[str, bytes], None]) -> None:
    """Real time: hold the step until its wall-clock time, applying decisions the moment they arrive
    (an incident's reroutes must not wait for the next step)."""
    while (left := deadline - time.monotonic()) > 0:
        if bus is None:
            time.sleep(left)
            return
        for subject, payload in bus.drain(wait_s=min(left, 0.01)):
            apply(subject, payload)


def _walk_destinations(sumo: Any, scenario: almere_centrum.Scenario) -> dict[str, tuple[float, float]]:
    """Where each parker's driver walks to (lat, lon): what a navigation app knows of its user."""
    walks: dict[str, str] = json.loads(scenario.walks.read_text())
    places = {j: _geo(sumo, *sumo.junction.getPosition(j)) for j in set(walks.values())}
    return {vehicle: places[junction] for vehicle, junction in walks.items()}


def run(spec: RunSpec) -> Path:
    """One run; returns its folder."""
    import sumo  # noqa: F401  - SUMO_HOME before libsumo/traci

    variant = VARIANTS[spec.scenario]
    scenario = prepare(spec)
    if spec.clock not in CLOCKS:
        raise ValueError(f"clock must be one of {', '.join(CLOCKS)}")
    if spec.mode == "coordinated" and spec.services_dir is None:
        raise ValueError("mode coordinated runs with the services: start them with the run (almere sim run)")
    run_dir = spec.out_root / spec.scenario / f"{spec.mode}-seed{spec.seed}"
    shutil.rmtree(run_dir, ignore_errors=True)  # a folder holds one run, never a mix of two
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps(asdict(spec), indent=2, default=str))
    if spec.gui:
        import traci as engine  # a sumo-gui to watch: TraCI (slower) instead of in-process libsumo

        engine.start([sumo_binary("sumo-gui"), *_sumo_args(spec, scenario, run_dir), "--start"])
    else:
        import libsumo as engine

        engine.start([sumo_binary("sumo"), *_sumo_args(spec, scenario, run_dir)])
    devices = bus = navigation = None
    run_tag = uuid.uuid4().hex[:8]
    # Baselines: in `none` the city runs the signal service's (fixed) plans; in `sumo`, SUMO's own
    # actuated control. Coordinated follows the optimizer's advice, and its lights are the
    # optimizer's adaptive steps (which then serve priority grants too).
    coordinated = spec.mode == "coordinated"
    adaptive = coordinated and spec.adaptive_signals
    controllers = Controllers(
        run_dir / "applied.jsonl", plans=spec.mode == "none", guidance=coordinated, vehicle_prefix=f"{run_tag}:"
    )
    controllers.lights.passive = adaptive
    signals = None
    incidents = _Incidents(engine, variant.incidents, broadcast=spec.mode != "none")
    stops = StopRecorder(set(FACILITY_IDS))
    responders = Responders(engine, variant.responders)
    equipper = _Equipper(engine, spec.seed, spec.equipped) if spec.mode == "sumo" else None
    rows: list[dict[str, float]] = []
    try:
        locations = _facility_locations(engine)
        if spec.services_dir is not None:
            devices = FieldDevices(spec.services_dir, f"{spec.scenario}/{spec.mode}/{spec.seed}/{run_tag}")
            devices.register(layout.FACILITIES, locations)
            incidents.devices = devices
            if spec.priority and variant.responders:
                responders.priority = devices.emergency_priority(run_dir / "priority.jsonl", controllers.lights)
                controllers.own_priority = responders.ids
            if adaptive:
                signals = devices.adaptive_signals()
            if coordinated:
                navigation = devices.navigation(
                    spec.seed, controllers.vehicle_prefix, _walk_destinations(engine, scenario)
                )
            nats_url = json.loads((spec.services_dir / "endpoints.json").read_text()).get("nats")
            if nats_url:
                bus = BusListener(
                    nats_url,
                    replayed=[(SIGNALS.name, SIGNAL_SUBJECTS[0])],  # the plans in force; old grants are history
                    live=[SIGNAL_SUBJECTS[1], *GUIDANCE_SUBJECTS],
                    streams=[DETECTORS.config(DEFAULT_LIMITS)],
                )
        loops = list(engine.inductionloop.getIDList())
        junctions = {
            j: _geo(engine, *engine.junction.getPosition(j)) for j in engine.junction.getIDList() if ":" not in j
        }
        edges = [e for e in engine.edge.getIDList() if not e.startswith(":")]
        lengths = {e: engine.lane.getLength(f"{e}_0") for e in edges}
        started = time.monotonic()
        with tqdm(total=int(spec.end_s), unit="sim s", desc=f"{spec.scenario} {spec.mode} seed {spec.seed}") as bar:
            now = 0.0
            if signals:
                signals.start(engine, now, record=False)
            while now < spec.end_s:
                if bus:
                    for subject, payload in bus.drain():
                        controllers.apply(engine, now, subject, payload)
                engine.simulationStep()
                now = engine.simulation.getTime()
                if signals:
                    signals.step(engine, now)
                if equipper:
                    equipper.step()
                if spec.clock == "realtime":
                    _wait_until(started + now, bus, partial(controllers.apply, engine, now))
                incidents.step(now)
                responders.step(now)
                stops.step(engine, now)
                controllers.retry(engine, now)
                controllers.lights.step(engine, now)
                if now % spec.sample_s == 0:
                    rows.append(_sample(engine, now, edges))
                    bar.update(int(spec.sample_s))
                    if devices:
                        devices.count(now, {f: int(rows[-1][f"parked:{f}"]) for f in FACILITY_IDS})
                    if bus:
                        _publish_detectors(engine, bus, loops, now, spec.sample_s)
                if navigation and now % spec.decision_s == 0:
                    for decision in navigation.report(engine, now, edges):
                        controllers.decide(engine, now, decision)
    finally:
        engine.close()
        responders.close()
        stops.write(run_dir / "stops.xml")
        controllers.close()
        incidents.close()
        if bus:
            bus.close()
        if devices:
            devices.close()
            counts = {
                "occupancy_reports": devices.reports,
                "decisions_applied": controllers.applied,
                "decisions_skipped": controllers.skipped,
                "vehicle_reports": navigation.reports if navigation else 0,
                "signal_steps": signals.steps if signals else 0,
                "lights_awaiting_approval": signals.awaiting_approval if signals else [],
                "lights_refused": signals.refused if signals else [],
                "equipped_share": navigation.share if navigation else None,
                "incident_reported_wall_s": devices.reported_wall_s,
            }
            (run_dir / "devices.json").write_text(json.dumps(counts))
    with (run_dir / "timeseries.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    result = kpis.compute(
        run_dir / "tripinfo.xml",
        run_dir / "stops.xml",
        run_dir / "statistics.xml",
        scenario.trips,
        spec.end_s,
        incidents.met,
        json.loads(scenario.walks.read_text()),
        locations,
        junctions,
        kpis.parking_search(
            run_dir / "vehroutes.xml",
            layout.centre_edges(),
            lengths,
            {f.facility_id: f.edge for f in layout.FACILITIES},
        ),
        frozenset(responders.ids),
        (lambda v: equipped(spec.seed, v, spec.equipped)) if spec.mode != "none" else (lambda v: False),
    )
    (run_dir / "kpis.json").write_text(json.dumps(result, indent=2))
    (run_dir / "incident_vehicles.json").write_text(json.dumps(sorted(incidents.met)))  # for a closer look
    with (run_dir / "kpis.csv").open("w", newline="") as f:
        csv.writer(f).writerows(kpis.flatten(result).items())
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
