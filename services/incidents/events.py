"""What the incident service publishes: stream INCIDENTS, subjects almere.incidents.v1.<event>.<incident_id>."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from almere.incidents.v1 import events_pb2
from almere.incidents.v1 import incidents_pb2 as pb
from nats.js.api import StreamConfig

from services.common.bus import stream_config
from services.common.clock import to_timestamp
from services.common.config import Settings
from services.common.outbox import outbox_row

STREAM = "INCIDENTS"
SUBJECT_PREFIX = "almere.incidents.v1"
REPORTED = "incident_reported"
UPDATED = "incident_updated"
STATE_CHANGED = "incident_state_changed"


def incidents_stream(settings: Settings) -> StreamConfig:
    return stream_config(STREAM, [f"{SUBJECT_PREFIX}.>"], settings)


def incident_event(
    event: str,
    incident: pb.Incident,
    actor: str,
    now: datetime,
    previous_state: int = 0,
    changed: list[str] | None = None,
) -> dict[str, Any]:
    incident_id = incident.name.removeprefix("incidents/")
    message = events_pb2.IncidentEvent(
        incident_id=incident_id,
        version=incident.version,
        occur_time=to_timestamp(now),
        incident=incident,
        previous_state=previous_state,  # type: ignore[arg-type]
        changed_fields=changed or [],
        actor=actor,
    )
    return outbox_row(f"{SUBJECT_PREFIX}.{event}.{incident_id}", event, message, now)
