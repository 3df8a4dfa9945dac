"""Parking gauges for Prometheus: the last written occupancy of every facility."""

from __future__ import annotations

from prometheus_client import Gauge

OCCUPIED = Gauge("almere_parking_occupied_spaces", "Occupied spaces, as last written", ["facility"])
FREE = Gauge("almere_parking_free_spaces", "Free spaces, as last written", ["facility"])


def record(facility_id: str, occupied: int, capacity: int) -> None:
    OCCUPIED.labels(facility_id).set(occupied)
    FREE.labels(facility_id).set(max(0, capacity - occupied))
