"""The twin's side of what-if runs: between two steps it saves its state on the what-if service's
request (SaveStateRequest -> SavedState, the state in the TWIN_STATES bucket), then measures the next
horizon with the runs' own KPIs and publishes them as Observed, so a plan's forecast can be checked
against what the city did."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from almere.whatif.v1 import runs_pb2, whatif_pb2

from contract.bus import OBSERVED, WHATIF_RESULTS
from sim.bus_listener import BusListener
from sim.incidents import ScriptedIncidents
from sim.scenarios.almere_centrum.layout import Facility
from sim.variants import Responder
from sim.whatif.kpis import WindowKpis

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class TwinIdentity:
    """What a saved state is of: a run starts its copy of the twin from the same scenario files."""

    scenario: str
    seed: int
    scale: float
    begin_s: float
    end_s: float  # the scenario's length (its demand is generated up to it)
    mode: str
    variant: str
    run_tag: str


@dataclass
class _Window:
    request: runs_pb2.SaveStateRequest
    start_s: float
    kpis: WindowKpis


@dataclass
class TwinStates:
    """Answers save-state requests and observes their horizons; `step` runs in the runner's thread."""

    sumo: Any
    bus: BusListener
    identity: TwinIdentity
    incidents: ScriptedIncidents
    facilities: list[Facility]
    responders: tuple[Responder, ...]
    walks: dict[str, tuple[float, float]]
    adaptive_tls_ids: Callable[[], list[str]]
    windows: list[_Window] = field(default_factory=list)

    def step(self, now: float) -> None:
        """After a simulation step: take waiting requests, advance the windows, publish the ended ones."""
        while not self.bus.state_requests.empty():
            payload, reply = self.bus.state_requests.get_nowait()
            self._save(now, payload, reply)
        for window in list(self.windows):
            window.kpis.step(now)
            if window.kpis.done:
                self.windows.remove(window)
                self._publish(window)

    def closures(self, now: float) -> list[whatif_pb2.Closure]:
        """The incidents in force as closures (SUMO's saved state holds no lane permissions)."""
        return [
            whatif_pb2.Closure(
                edge_id=incident.edge,
                closed_lanes=list(incident.closed_lanes),
                full_closure=incident.full_closure,
                expected_end_seconds=max(0.0, incident.end_s - now),
            )
            for incident in self.incidents.in_force
        ]

    def _save(self, now: float, payload: bytes, reply: str) -> None:
        ident = self.identity
        try:
            request = runs_pb2.SaveStateRequest.FromString(payload)
        except Exception as exc:  # a malformed request gets an answer, not a dead twin
            self._answer_error(reply, f"bad request: {exc!r}")
            return
        name = f"{ident.scenario}-{ident.run_tag}-{int(now)}"
        fd, tmp = tempfile.mkstemp(suffix=".xml.gz", prefix="twin-state-")
        Path(tmp).unlink()  # SUMO writes the file itself
        del fd
        try:
            self.sumo.simulation.saveState(tmp)
        except Exception as exc:
            self._answer_error(reply, f"saveState failed: {exc!r}")
            return
        saved = runs_pb2.SavedState(
            object_name=name,
            scenario=ident.scenario,
            seed=ident.seed,
            scale=ident.scale,
            sim_time_seconds=now - ident.begin_s,
            begin_seconds=ident.begin_s,
            mode=ident.mode,
            adaptive_tls_ids=self.adaptive_tls_ids(),
            variant=ident.variant,
            closures=self.closures(now),
            scenario_seconds=ident.end_s,
        )
        state = Path(tmp).read_bytes()
        Path(tmp).unlink()
        self.bus.store_state(
            state,
            name,
            reply,
            saved.SerializeToString(),
            lambda reason: runs_pb2.SavedState(error=reason).SerializeToString(),
        )
        if request.horizon_seconds > 0:
            self.windows.append(_Window(request, now, self._window_kpis(now, request.horizon_seconds)))
        log.info("saved the twin's state", extra={"object": name, "what_if": request.what_if})

    def _window_kpis(self, now: float, horizon_s: float) -> WindowKpis:
        # The runs' own KPIs, measured the same way.
        return WindowKpis(
            ls=self.sumo,
            start_s=now,
            horizon_s=horizon_s,
            watched_edges=[i.edge for i in self.incidents.in_force],
            facilities=self.facilities,
            responders=self.responders,
            walks=self.walks,
        )

    def _answer_error(self, reply: str, reason: str) -> None:
        log.warning("could not save the twin's state: %s", reason)
        if reply:
            self.bus.publish([(reply, runs_pb2.SavedState(error=reason).SerializeToString())])

    def _publish(self, window: _Window) -> None:
        what_if = window.request.what_if
        observed = runs_pb2.Observed(
            what_if=what_if,
            start_sim_time_seconds=window.start_s - self.identity.begin_s,
            horizon_seconds=window.request.horizon_seconds,
            kpis={k: float(v) for k, v in window.kpis.result().items()},
        )
        subject = WHATIF_RESULTS.subject(OBSERVED, what_if)
        self.bus.publish_stored(
            subject, observed.SerializeToString(), msg_id=f"observed-{what_if}-{int(window.start_s)}"
        )
