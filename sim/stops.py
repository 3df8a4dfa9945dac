"""Parking stops as the twin sees them begin and end, written like SUMO's stop output (stopinfo
elements with id, parkingArea, started, ended). SUMO's own --stop-output is not used: its bookkeeping
crashed libsumo 1.28 (MSStopOut::stopStarted) when cars waiting at a full area were given another."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr


class StopRecorder:
    def __init__(self, areas: set[str]) -> None:
        self._areas = areas
        self._started: dict[str, tuple[str, float]] = {}
        self._done: list[tuple[str, str, float, float]] = []

    def step(self, sumo: Any, now: float) -> None:
        """After each step; `now` is the time after it, the stops began or ended during it."""
        now -= sumo.simulation.getDeltaT()
        for vehicle in sumo.simulation.getStopEndingVehiclesIDList():
            if vehicle in self._started:
                area, started = self._started.pop(vehicle)
                self._done.append((vehicle, area, started, now))
        for vehicle in sumo.simulation.getStopStartingVehiclesIDList():
            stops = sumo.vehicle.getStops(vehicle, 1)
            if stops and stops[0].stoppingPlaceID in self._areas:
                self._started[vehicle] = (stops[0].stoppingPlaceID, now)

    def write(self, path: Path) -> None:
        """Finished stops, then those still going on at the end (ended="-1")."""
        rows = [*self._done, *((v, a, s, -1.0) for v, (a, s) in self._started.items())]
        lines = ['<?xml version="1.0" encoding="UTF-8"?>', "<stops>"]
        lines += [
            f'  <stopinfo id={quoteattr(v)} parkingArea={quoteattr(a)} started="{s:.2f}" ended="{e:.2f}"/>'
            for v, a, s, e in rows
        ]
        lines.append("</stops>")
        path.write_text("\n".join(lines) + "\n")
