"""Parking gauges for Prometheus: the last written occupancy of every facility."""

from __future__ import annotations

from prometheus_client import Gauge

OCCUPIED = Gauge("almere_parking_occupied_spaces", "Occupied spaces, as last written", ["facility"])
FREE = Gauge("almere_parking_free_spaces", "Free spaces, as last written", ["facility"])

# Each facility's two children, looked up once: `labels` takes a lock and builds a key per call, and
# every accepted report records both. (Facilities are never deleted, so neither are their gauges.)
_children: dict[str, tuple[Gauge, Gauge]] = {}


def record(facility_id: str, occupied: int, capacity: int) -> None:
    children = _children.get(facility_id)
    if children is None:
        children = _children[facility_id] = (OCCUPIED.labels(facility_id), FREE.labels(facility_id))
    children[0].set(occupied)
    children[1].set(max(0, capacity - occupied))
