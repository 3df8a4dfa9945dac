"""The parking events WatchOccupancy listens to."""

from __future__ import annotations

from almere.parking.v1 import events_pb2

from services.common.bus import Bus
from services.common.feed import EventFeed
from services.parking import events


def occupancy_feed(bus: Bus) -> EventFeed:
    return EventFeed(
        bus,
        events.SUBJECT_PREFIX,
        {
            events.OCCUPANCY_CHANGED: events_pb2.OccupancyChangedEvent,
            events.FACILITY_CREATED: events_pb2.FacilityChangedEvent,
            events.FACILITY_UPDATED: events_pb2.FacilityChangedEvent,
        },
    )
