"""Facility rows <-> protobuf messages."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from almere.parking.v1 import parking_pb2 as pb
from almere.type.v1 import geo_pb2
from google.protobuf import duration_pb2

from services.common.clock import to_timestamp, utcnow
from services.common.opening_hours import windows
from services.parking.logic import Thresholds, facility_name, is_stale
from services.parking.models import Facility


@dataclass(slots=True, kw_only=True)
class OccupancyRow:
    """The occupancy columns of a facility, read and written with SQLAlchemy Core on the hot path."""

    id: str
    capacity: int
    operator_id: str
    state: int
    almost_full: float
    full: float
    hysteresis: float
    version: int
    occupied: int | None
    status: int
    sequence: int
    reported_occupied: int | None
    report_time: datetime | None
    source_time: datetime | None
    occupancy_time: datetime | None
    update_time: datetime
    count_time: datetime | None
    stale_after_s: float | None


# What the occupancy rules read and change: the ORM row, or its hot-path subset.
FacilityView = Facility | OccupancyRow


def thresholds_of(row: FacilityView) -> Thresholds:
    return Thresholds(row.almost_full, row.full, row.hysteresis)


def occupancy_to_proto(row: FacilityView) -> pb.Occupancy:
    occupied = row.occupied or 0
    return pb.Occupancy(
        facility=facility_name(row.id),
        occupied_spaces=occupied,
        free_spaces=max(0, row.capacity - occupied),
        capacity=row.capacity,
        occupancy_ratio=occupied / row.capacity,
        status=row.status,  # type: ignore[arg-type]
        sequence=row.sequence,
        source_time=to_timestamp(row.source_time),
        update_time=to_timestamp(row.occupancy_time),
        version=row.version,
        stale=is_stale(row.count_time, row.stale_after_s, now=utcnow()),
    )


def facility_to_proto(row: Facility) -> pb.Facility:
    return pb.Facility(
        name=facility_name(row.id),
        display_name=row.display_name,
        kind=row.kind,  # type: ignore[arg-type]
        operator_id=row.operator_id,
        capacity=row.capacity,
        location=(
            geo_pb2.LatLng(latitude=row.latitude, longitude=row.longitude)
            if row.latitude is not None and row.longitude is not None
            else None
        ),
        entrance_edge_ids=row.entrance_edge_ids,
        sumo_parking_area_id=row.sumo_parking_area_id,
        opening_hours=[pb.OpeningWindow(**w) for w in row.opening_hours],
        time_zone=row.time_zone,
        state=row.state,  # type: ignore[arg-type]
        thresholds=pb.StatusThresholds(almost_full=row.almost_full, full=row.full, hysteresis=row.hysteresis),
        version=row.version,
        create_time=to_timestamp(row.create_time),
        update_time=to_timestamp(row.update_time),
        occupancy=occupancy_to_proto(row),
        stale_after=duration_pb2.Duration(seconds=round(row.stale_after_s)) if row.stale_after_s else None,
    )


def facility_fields(f: pb.Facility) -> dict[str, Any]:
    """Column values of the descriptive (not occupancy) part of a facility."""
    has_location = f.HasField("location")
    return {
        "display_name": f.display_name,
        "kind": f.kind,
        "operator_id": f.operator_id,
        "capacity": f.capacity,
        "latitude": f.location.latitude if has_location else None,
        "longitude": f.location.longitude if has_location else None,
        "entrance_edge_ids": list(f.entrance_edge_ids),
        "sumo_parking_area_id": f.sumo_parking_area_id,
        "opening_hours": windows(f.opening_hours),
        "time_zone": f.time_zone,
        "state": f.state,
        "almost_full": f.thresholds.almost_full,
        "full": f.thresholds.full,
        "hysteresis": f.thresholds.hysteresis,
        "stale_after_s": f.stale_after.ToTimedelta().total_seconds() or None,
    }
