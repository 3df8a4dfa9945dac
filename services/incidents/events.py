"""The incident service's events (stream INCIDENTS, see contract.bus), built as outbox rows."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from almere.incidents.v1 import events_pb2
from almere.incidents.v1 import incidents_pb2 as pb

from contract.bus import INCIDENTS
from services.common.auth import Identity, Role
from services.common.clock import to_timestamp
from services.common.outbox import outbox_row
from services.incidents import logic

# Whoever may read the INCIDENTS stream sees the incident as the optimizer, its consumer, does:
# restricted fields (notes, the reporter) never travel on the bus; those allowed read them over gRPC.
BUS_READER = Identity("bus", Role.OPTIMIZER)


def incident_event(
    *,
    event: str,
    incident: pb.Incident,
    actor: str,
    now: datetime,
    previous_state: int = 0,
    changed: list[str] | None = None,
) -> dict[str, Any]:
    incident_id = incident.name.removeprefix("incidents/")
    carried = logic.visible(BUS_READER, incident)
    if logic.is_pending(incident):
        carried.ClearField("title")  # the partner's words, like its description, until verified
    message = events_pb2.IncidentEvent(
        incident_id=incident_id,
        version=incident.version,
        occur_time=to_timestamp(now),
        incident=carried,
        previous_state=previous_state,  # type: ignore[arg-type]
        changed_fields=changed or [],
        actor=actor,
    )
    return outbox_row(subject=INCIDENTS.subject(event, incident_id), event_type=event, message=message, now=now)
