"""The generated city's demand, proportional to its size: per traffic light and hour at scale 1, 10
through trips (gate to gate), 16 local trips (street to street) and 14 parkers (a gate or a street to
a facility, staying 20 minutes to 2 hours): 40 vehicles per light and hour, ~20,000 an hour at 500
lights. The event adds 6 event-goers per light and hour from EVENT_FROM_S to EVENT_UNTIL_S, for the
facilities nearest the venue (the central junction), staying three to four hours."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from sim.scenarios.almere_centrum import demand as centrum_demand
from sim.scenarios.almere_centrum.demand import Trip
from sim.scenarios.almere_centrum.layout import Facility
from sim.scenarios.city.layout import Grid, node_id

PER_LIGHT_HOUR = {"through": 10.0, "local": 16.0, "visitor": 14.0}
EVENT_PER_LIGHT_HOUR = 6.0
EVENT_FROM_S, EVENT_UNTIL_S = 600.0, 2400.0
EVENT_FACILITIES = 5  # the venue's nearest
VISITOR_STAY_S = (20 * 60, 2 * 3600)
EVENT_STAY_S = (3 * 3600, 4 * 3600)
LOCAL_VTYPE = '  <vType id="local" vClass="passenger" color="0.2,0.8,0.2"/>'


def _arrivals(rng: np.random.Generator, per_hour: float, *, start_s: float, end_s: float) -> np.ndarray:
    """Poisson arrivals at a constant rate between start_s and end_s."""
    if end_s <= start_s:
        return np.empty(0)
    return np.sort(rng.uniform(start_s, end_s, rng.poisson(per_hour * (end_s - start_s) / 3600)))


def _grid_cell(edge: str) -> tuple[int, int]:
    """(col, row) of the junction a grid link or an inbound connector ends at."""
    col, row = edge.rsplit("-", 1)[1].removeprefix("n").split("_")
    return int(col), int(row)


def venue_facilities(grid: Grid, facilities: list[Facility]) -> list[Facility]:
    """The facilities nearest the venue (straight line, grid units)."""
    vc, vr = grid.centre()

    def distance(f: Facility) -> float:
        c, r = _grid_cell(f.edge)
        return float(np.hypot(c - vc, r - vr))

    return sorted((f for f in facilities if f.kind != "park_and_ride"), key=distance)[:EVENT_FACILITIES]


def generate(
    grid: Grid, facilities: list[Facility], *, seed: int, scale: float, horizon_s: float, event: bool
) -> list[Trip]:
    rng = np.random.default_rng(seed)
    entries, exits, streets = grid.entries(), grid.exits(), grid.street_edges()
    rate = {kind: per * grid.lights * scale for kind, per in PER_LIGHT_HOUR.items()}
    trips: list[Trip] = []
    for t in _arrivals(rng, rate["through"], start_s=0, end_s=horizon_s):
        i, j = rng.choice(len(entries), 2, replace=False)
        trips.append(Trip(vid="", depart=float(t), kind="through", origin=entries[i], destination=exits[j]))
    for t in _arrivals(rng, rate["local"], start_s=0, end_s=horizon_s):
        i, j = rng.choice(len(streets), 2, replace=False)
        trips.append(Trip(vid="", depart=float(t), kind="local", origin=streets[i], destination=streets[j]))
    capacity = np.array([f.capacity for f in facilities], dtype=np.float64)
    groups = [("visitor", rate["visitor"], facilities, capacity / capacity.sum(), VISITOR_STAY_S, 0.0, horizon_s)]
    if event:
        near = venue_facilities(grid, facilities)
        share = np.full(len(near), 1 / len(near))
        until = min(horizon_s, EVENT_UNTIL_S)
        per_hour = EVENT_PER_LIGHT_HOUR * grid.lights * scale
        groups.append(("event", per_hour, near, share, EVENT_STAY_S, EVENT_FROM_S, until))
    venue = node_id(*grid.centre())
    for kind, per_hour, choice, weights, (low, high), start_s, end_s in groups:
        for t in _arrivals(rng, per_hour, start_s=start_s, end_s=end_s):
            facility = choice[rng.choice(len(choice), p=weights)]
            from_gate = rng.random() < 0.5
            origin = entries[rng.integers(len(entries))] if from_gate else streets[rng.integers(len(streets))]
            trips.append(
                Trip(
                    vid="",
                    depart=float(t),
                    kind=kind,
                    origin=origin,
                    destination=exits[rng.integers(len(exits))],
                    parking_area=facility.facility_id,
                    park_seconds=float(rng.uniform(low, high)),
                    # The shop or office: the junction the facility's street leads to; the venue.
                    walk_to=venue if kind == "event" else facility.edge.rsplit("-", 1)[1],
                )
            )
    trips.sort(key=lambda trip: trip.depart)
    return [replace(trip, vid=f"{trip.kind}-{n}") for n, trip in enumerate(trips)]


def routes_xml(trips: list[Trip]) -> str:
    """almere-centrum's trip file, with the local trips' vehicle type added."""
    return centrum_demand.routes_xml(trips).replace("<routes>", f"<routes>\n{LOCAL_VTYPE}", 1)
