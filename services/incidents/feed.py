"""The incident events WatchIncidents listens to."""

from __future__ import annotations

from almere.incidents.v1 import events_pb2

from services.common.bus import Bus
from services.common.feed import EventFeed
from services.incidents import events


def incident_feed(bus: Bus) -> EventFeed:
    names = (events.REPORTED, events.UPDATED, events.STATE_CHANGED)
    return EventFeed(bus, events.SUBJECT_PREFIX, dict.fromkeys(names, events_pb2.IncidentEvent))
