"""What the parking service publishes: stream PARKING, subjects almere.parking.v1.<event>.<facility_id>."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from almere.parking.v1 import events_pb2
from almere.parking.v1 import parking_pb2 as pb

from services.common.bus import stream_config
from services.common.clock import to_timestamp
from services.common.config import Settings
from services.common.outbox import outbox_row
from services.parking.convert import facility_to_proto
from services.parking.models import Facility

STREAM = "PARKING"
SUBJECT_PREFIX = "almere.parking.v1"
FACILITY_CREATED = "facility_created"
FACILITY_UPDATED = "facility_updated"
OCCUPANCY_CHANGED = "occupancy_changed"
STATUS_CHANGED = "status_changed"


def parking_stream(settings: Settings) -> Any:
    return stream_config(STREAM, [f"{SUBJECT_PREFIX}.>"], settings)


def subject(event: str, facility_id: str) -> str:
    return f"{SUBJECT_PREFIX}.{event}.{facility_id}"


def facility_changed(row: Facility, created: bool, changed: list[str], now: datetime) -> dict[str, Any]:
    event = FACILITY_CREATED if created else FACILITY_UPDATED
    message = events_pb2.FacilityChangedEvent(
        facility_id=row.id,
        version=row.version,
        occur_time=to_timestamp(now),
        facility=facility_to_proto(row),
        changed_fields=changed,
    )
    return outbox_row(subject(event, row.id), event, message, now)


def occupancy_changed(
    facility_id: str, version: int, occupancy: pb.Occupancy, previous_status: int, cause: int, now: datetime
) -> list[dict[str, Any]]:
    """An occupancy_changed row, plus status_changed when the derived status moved."""
    occurred = to_timestamp(now)
    rows = [
        outbox_row(
            subject(OCCUPANCY_CHANGED, facility_id),
            OCCUPANCY_CHANGED,
            events_pb2.OccupancyChangedEvent(
                facility_id=facility_id,
                version=version,
                occur_time=occurred,
                occupancy=occupancy,
                previous_status=previous_status,  # type: ignore[arg-type]
                cause=cause,  # type: ignore[arg-type]
            ),
            now,
        )
    ]
    if previous_status != occupancy.status:
        rows.append(
            outbox_row(
                subject(STATUS_CHANGED, facility_id),
                STATUS_CHANGED,
                events_pb2.StatusChangedEvent(
                    facility_id=facility_id,
                    version=version,
                    occur_time=occurred,
                    previous_status=previous_status,  # type: ignore[arg-type]
                    status=occupancy.status,
                    occupancy=occupancy,
                ),
                now,
            )
        )
    return rows
