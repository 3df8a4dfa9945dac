"""The incident events WatchIncidents listens to."""

from __future__ import annotations

from almere.incidents.v1 import events_pb2

from contract.bus import INCIDENT_EVENTS, INCIDENTS
from services.common.bus import Bus
from services.common.feed import EventFeed


def incident_feed(bus: Bus) -> EventFeed:
    return EventFeed(bus, INCIDENTS, dict.fromkeys(INCIDENT_EVENTS, events_pb2.IncidentEvent))
