"""Scripted incidents on the running SUMO: lanes closed or slowed while an incident lasts and given back
after it; the police field device (when the run has the services) reports them."""

from __future__ import annotations

from typing import Any

from sim.devices import FieldDevices
from sim.variants import ScriptedIncident

CLOSED_TO = ["authority", "emergency"]  # only responders pass a closed lane


class ScriptedIncidents:
    """Applies scripted incidents to the running SUMO and undoes them when they end; the police
    field device (if any) reports them."""

    def __init__(
        self,
        sumo: Any,
        incidents: tuple[ScriptedIncident, ...],
        *,
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

    @property
    def in_force(self) -> list[ScriptedIncident]:
        """The incidents started and not yet over (what a saved state must be given again)."""
        return [incident for incident, _ in self._active]

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
                    self._sumo.lane.setMaxSpeed(lane, incident.speed_limit_mps)
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
