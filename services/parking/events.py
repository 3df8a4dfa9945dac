"""The parking service's events (stream PARKING, see contract.bus), built as outbox rows."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from almere.parking.v1 import events_pb2
from almere.parking.v1 import parking_pb2 as pb

from contract.bus import (
    FACILITY_CREATED,
    FACILITY_UPDATED,
    FORECAST_UPDATED,
    OCCUPANCY_CHANGED,
    PARKING,
    STATUS_CHANGED,
)
from services.common.clock import to_timestamp
from services.common.outbox import outbox_row
from services.common.terms import Access
from services.parking.convert import facility_to_proto, thresholds_of
from services.parking.models import Facility
from services.parking.shaping import for_bus

subject = PARKING.subject


def facility_changed(
    *, row: Facility, created: bool, changed: list[str], access: Access, now: datetime
) -> dict[str, Any]:
    """`access`: the bus reader's to the facility's occupancy (see shaping.for_bus)."""
    event = FACILITY_CREATED if created else FACILITY_UPDATED
    facility = facility_to_proto(row)
    facility.occupancy.CopyFrom(for_bus(facility.occupancy, access=access, thresholds=thresholds_of(row)))
    message = events_pb2.FacilityChangedEvent(
        facility_id=row.id,
        version=row.version,
        occur_time=to_timestamp(now),
        facility=facility,
        changed_fields=changed,
    )
    return outbox_row(subject=subject(event, row.id), event_type=event, message=message, now=now)


def occupancy_changed(
    *, facility_id: str, version: int, occupancy: pb.Occupancy, previous_status: int, cause: int, now: datetime
) -> list[dict[str, Any]]:
    """An occupancy_changed row, plus status_changed when the derived status moved; `occupancy` as the
    bus may carry it (shaping.for_bus), `previous_status` likewise."""
    occurred = to_timestamp(now)
    rows = [
        outbox_row(
            subject=subject(OCCUPANCY_CHANGED, facility_id),
            event_type=OCCUPANCY_CHANGED,
            message=events_pb2.OccupancyChangedEvent(
                facility_id=facility_id,
                version=version,
                occur_time=occurred,
                occupancy=occupancy,
                previous_status=previous_status,  # type: ignore[arg-type]
                cause=cause,  # type: ignore[arg-type]
            ),
            now=now,
        )
    ]
    if previous_status != occupancy.status:
        rows.append(
            outbox_row(
                subject=subject(STATUS_CHANGED, facility_id),
                event_type=STATUS_CHANGED,
                message=events_pb2.StatusChangedEvent(
                    facility_id=facility_id,
                    version=version,
                    occur_time=occurred,
                    previous_status=previous_status,  # type: ignore[arg-type]
                    status=occupancy.status,
                    occupancy=occupancy,
                ),
                now=now,
            )
        )
    return rows


def forecast_updated(*, facility_id: str, made: pb.FacilityForecast, now: datetime) -> dict[str, Any]:
    """A forecast_updated row; `made` as the bus reader may see it (forecast_bus)."""
    message = events_pb2.ForecastUpdatedEvent(
        facility_id=facility_id, version=made.version, occur_time=to_timestamp(now), forecast=made
    )
    return outbox_row(
        subject=subject(FORECAST_UPDATED, facility_id), event_type=FORECAST_UPDATED, message=message, now=now
    )
