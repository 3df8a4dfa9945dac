"""Parking guidance: vehicles bound for the centre are assigned to facilities with free spaces, by
cost = drive to the facility + expected search + walk on to the destination. Spaces already promised
to vehicles on their way count as taken, so the next garage does not overflow; a facility at its
reserve gets no one; spaces about to be freed (a count going down) may only eat into the reserve.
Drivers without guidance keep arriving too: a facility filling at a given rate is expected to have
that many fewer spaces by the time a guided vehicle gets there, and gets no one it would not hold."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import numpy as np

from services.optimizer.routing import FloatArray, RoadGraph
from services.optimizer.state import Facility, Vehicle

# Extra time expected at a facility as it fills (other drivers compete for the last spaces):
# nothing below FILL_KNEE of capacity, rising to FULL_SEARCH_S at the reserve.
FILL_KNEE = 0.85
FULL_SEARCH_S = 120.0
# A facility must be open this long after the decision (a guided driver's arrival).
ARRIVAL = timedelta(minutes=15)


@dataclass(frozen=True, kw_only=True)
class Offer:
    """What a facility can take now."""

    facility: Facility
    spaces: int  # may still be promised
    fill: float  # share of capacity occupied or promised
    inflow: float = 0.0  # vehicles per second arriving without guidance


@dataclass(frozen=True, kw_only=True)
class Assignment:
    vehicle: Vehicle
    facility: Facility
    drive_s: float
    search_s: float
    walk_s: float

    @property
    def expected_s(self) -> float:
        return self.drive_s + self.search_s + self.walk_s


def offers(
    facilities: list[Facility],
    *,
    promised: dict[str, int],
    freeing: dict[str, int],
    reserve: int,
    inflow: dict[str, float] | None = None,
) -> list[Offer]:
    """Spaces each facility may still be promised: free by its count, minus promises, minus the reserve
    (which spaces about to be freed may cover, but never more than are free now)."""
    out = []
    for f in facilities:
        if not f.available or not f.counted or f.capacity <= 0 or f.edge_id == "":
            continue
        free_now = f.capacity - f.occupied - promised.get(f.id, 0)
        spaces = free_now - max(0, reserve - freeing.get(f.id, 0))
        out.append(
            Offer(
                facility=f,
                spaces=max(0, min(spaces, free_now)),
                fill=1 - free_now / f.capacity,
                inflow=(inflow or {}).get(f.id, 0.0),
            )
        )
    return out


def search_s(fill: float) -> float:
    return FULL_SEARCH_S * min(1.0, max(0.0, fill - FILL_KNEE) / (1 - FILL_KNEE))


def assign(graph: RoadGraph, cost: FloatArray, *, vehicles: list[Vehicle], available: list[Offer]) -> list[Assignment]:
    """Greedy by arrival: the vehicle nearest to a space chooses first, and what it takes is gone for
    the next. Never promises more spaces than an offer has."""
    usable = [o for o in available if o.spaces > 0 and o.facility.edge_id in graph.index]
    movable = [v for v in vehicles if v.edge_id in graph.index]
    if not usable or not movable:
        return []
    drive = graph.time_to([o.facility.edge_id for o in usable], cost)[:, [graph.index[v.edge_id] for v in movable]]
    walk = np.array(
        [[o.facility.walk_s(*v.walk_to) if v.walk_to else 0.0 for v in movable] for o in usable], dtype=np.float64
    )
    left = np.array([o.spaces for o in usable], dtype=np.float64)
    capacity = np.array([o.facility.capacity for o in usable], dtype=np.float64)
    filled = np.array([o.fill for o in usable]) * capacity
    inflow = np.array([o.inflow for o in usable])
    out = []
    for j in np.argsort(drive.min(axis=0), kind="stable"):
        # What is left when this vehicle gets there, after the drivers arriving on their own meanwhile.
        arriving = inflow * drive[:, j]
        at_arrival = left - arriving
        search = np.array([search_s(f) for f in (filled + arriving) / capacity])
        total = drive[:, j] + search + walk[:, j]
        total[at_arrival < 1] = np.inf
        best = int(np.argmin(total))
        if not np.isfinite(total[best]):
            continue
        left[best] -= 1
        filled[best] += 1
        out.append(
            Assignment(
                vehicle=movable[j],
                facility=usable[best].facility,
                drive_s=float(drive[best, j]),
                search_s=float(search[best]),
                walk_s=float(walk[best, j]),
            )
        )
    return out
