"""Morning-to-midday demand for almere-centrum: through traffic, commuters who park for the day and
visitors who park for one to two hours (see README.md for the numbers and why)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from xml.sax.saxutils import quoteattr

import numpy as np

from sim.scenarios.almere_centrum.layout import FACILITIES, GATES, edge_id, node_id

# Vehicles per hour at scale 1.0, by hour after the start (07:00).
THROUGH = [1100, 1300, 1000, 900, 900]
COMMUTERS = [500, 650, 250, 100, 80]
VISITORS = [80, 200, 450, 650, 700]
# Visitors prefer the garages near the shops; commuters the cheaper edge garages and the P+R.
VISITOR_CHOICE = {"garage-stadhuisplein": 0.35, "garage-forum": 0.25, "street-centrum": 0.25, "garage-citadel": 0.15}
COMMUTER_CHOICE = {"garage-flevo": 0.35, "garage-citadel": 0.30, "pr-almere-poort": 0.35}
# A large event (like Assen's festival) at a venue by the Forum: event-goers from 08:30, hour by hour,
# for the garages nearest the venue; they stay three to five hours.
EVENT = [0, 300, 900, 700, 200]
EVENT_CHOICE = {"garage-forum": 0.45, "garage-stadhuisplein": 0.35, "street-centrum": 0.20}
VENUE = "j32"
# Where visitors of each facility are going: the junctions around it (their shop or office).
_NEAR = {f.facility_id: f.edge.split("-", 1) if not f.edge.startswith("ext") else ["j02", "j12"] for f in FACILITIES}


@dataclass(frozen=True, kw_only=True)
class Trip:
    vid: str
    depart: float
    kind: str  # through | commuter | visitor
    origin: str  # edge
    destination: str  # edge
    parking_area: str | None = None
    park_seconds: float = 0.0
    walk_to: str = ""  # junction a parker finally walks to (the shop, office or venue)


def _entries() -> list[str]:
    return [edge_id(gate, node_id(*cell)) for gate, cell, _ in GATES]


def _exits() -> list[str]:
    return [edge_id(node_id(*cell), gate) for gate, cell, _ in GATES]


def _arrivals(rng: np.random.Generator, per_hour: list[int], *, scale: float, horizon_s: float) -> list[float]:
    """Poisson arrivals per minute at the hourly rates."""
    times: list[float] = []
    for minute in range(int(horizon_s // 60)):
        rate = per_hour[min(minute // 60, len(per_hour) - 1)] * scale / 60
        times.extend(minute * 60 + np.sort(rng.uniform(0, 60, rng.poisson(rate))))
    return times


def generate(seed: int, scale: float, horizon_s: float, *, event: bool = False) -> list[Trip]:
    rng = np.random.default_rng(seed)
    entries, exits = _entries(), _exits()
    trips: list[Trip] = []
    for t in _arrivals(rng, THROUGH, scale=scale, horizon_s=horizon_s):
        i, j = rng.choice(len(entries), 2, replace=False)
        trips.append(Trip(vid="", depart=t, kind="through", origin=entries[i], destination=exits[j]))
    groups = [
        ("commuter", COMMUTERS, COMMUTER_CHOICE, (7 * 3600, 9 * 3600)),
        ("visitor", VISITORS, VISITOR_CHOICE, (45 * 60, 2 * 3600)),
    ]
    if event:
        groups.append(("event", EVENT, EVENT_CHOICE, (3 * 3600, 5 * 3600)))
    for kind, rates, choice, (low, high) in groups:
        names, weights = list(choice), np.array(list(choice.values()))
        for t in _arrivals(rng, rates, scale=scale, horizon_s=horizon_s):
            facility = names[rng.choice(len(names), p=weights / weights.sum())]
            walk_to = VENUE if kind == "event" else str(rng.choice(_NEAR[facility]))
            trips.append(
                Trip(
                    vid="",
                    depart=t,
                    kind=kind,
                    origin=entries[rng.integers(len(entries))],
                    destination=exits[rng.integers(len(exits))],
                    parking_area=facility,
                    park_seconds=float(rng.uniform(low, high)),
                    walk_to=walk_to,
                )
            )
    trips.sort(key=lambda trip: trip.depart)
    return [replace(trip, vid=f"{trip.kind}-{n}") for n, trip in enumerate(trips)]


VTYPES = """  <vType id="through" vClass="passenger" color="0.6,0.6,0.6"/>
  <vType id="commuter" vClass="passenger" color="0.2,0.4,1"/>
  <vType id="visitor" vClass="passenger" color="1,0.6,0"/>
  <vType id="event" vClass="passenger" color="0.8,0,0.8"/>"""


def routes_xml(trips: list[Trip]) -> str:
    lines = ['<?xml version="1.0" encoding="UTF-8"?>', "<routes>", VTYPES]
    for trip in trips:
        head = (
            f'  <trip id={quoteattr(trip.vid)} type={quoteattr(trip.kind)} depart="{trip.depart:.1f}" '
            f'departLane="best" from={quoteattr(trip.origin)} to={quoteattr(trip.destination)}'
        )
        if trip.parking_area:
            lines.append(f"{head}>")
            lines.append(f'    <stop parkingArea={quoteattr(trip.parking_area)} duration="{trip.park_seconds:.0f}"/>')
            lines.append("  </trip>")
        else:
            lines.append(f"{head}/>")
    lines.append("</routes>")
    return "\n".join(lines) + "\n"


def known_facilities() -> set[str]:
    return {f.facility_id for f in FACILITIES}
