"""The parking events WatchOccupancy listens to."""

from __future__ import annotations

from almere.parking.v1 import events_pb2

from contract import bus as bus_contract
from services.common.bus import Bus
from services.common.feed import EventFeed


def occupancy_feed(bus: Bus) -> EventFeed:
    return EventFeed(
        bus,
        bus_contract.PARKING,
        {
            bus_contract.OCCUPANCY_CHANGED: events_pb2.OccupancyChangedEvent,
            bus_contract.FACILITY_CREATED: events_pb2.FacilityChangedEvent,
            bus_contract.FACILITY_UPDATED: events_pb2.FacilityChangedEvent,
        },
    )
