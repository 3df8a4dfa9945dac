"""DATEX II v3 parking publications of the parking service's facilities: the static
ParkingTablePublication and the live ParkingStatusPublication, both keyed by the facility id.

Choices where DATEX II and the service differ:
- Status: ParkingSiteStatusEnum has spacesAvailable, almostFull, fullAtEntrance, full, unknown and
  other; "no information" is `unknown` (noParkingInformationAvailable is a ParkingFaultEnum value, so
  it goes with it into parkingFault). There is no "closed" in it: a closed facility is published with
  parkingSiteOpeningStatus `closed` and no parkingSiteStatus.
- A stale count (Occupancy.stale) keeps its figures and its parkingStatusOriginTime (the old
  measurement time), so readers can judge its age, but its status is `unknown`.
- Facility.version also counts occupancy changes, so a record's version moves with its counts; the
  table's version is the sum of its records' versions, which grows with any change of any record.
- Opening times are the facility's local times: DATEX II times carry no time-zone name, and a fixed
  offset would be wrong half the year.
- With no facilities the documents hold no records, though the schema asks for at least one: there is
  nothing true to put there.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from almere.parking.v1 import parking_pb2 as pb

from services.gateway.formats.datex2 import (
    COM,
    PRK,
    Node,
    from_timestamp,
    multilingual,
    number,
    payload,
    point_by_coordinates,
    resource_id,
    sub,
    timestamp,
    to_bytes,
)
from services.gateway.formats.publisher import Publisher

TABLE_ID = "facilities"

# FacilityKind -> (parkingLayout, urbanParkingSiteType, parkingUsageScenario or None).
_KINDS: dict[int, tuple[str, str, str | None]] = {
    pb.FACILITY_KIND_GARAGE: ("multiStorey", "offStreetParking", None),
    pb.FACILITY_KIND_PARK_AND_RIDE: ("openSpace", "offStreetParking", "parkAndRide"),
    pb.FACILITY_KIND_ON_STREET_ZONE: ("openSpace", "onStreetParking", None),
    pb.FACILITY_KIND_EVENT_PARKING: ("field", "offStreetParking", "eventParking"),
    pb.FACILITY_KIND_SURFACE_LOT: ("openSpace", "offStreetParking", None),
}
_UNKNOWN_KIND = ("unknown", "other", None)

_SITE_STATUS = {
    pb.OCCUPANCY_STATUS_SPACES_AVAILABLE: "spacesAvailable",
    pb.OCCUPANCY_STATUS_ALMOST_FULL: "almostFull",
    pb.OCCUPANCY_STATUS_FULL: "full",
}

# ISO day of week (1 = Monday) -> com:DayEnum.
_DAYS = {1: "monday", 2: "tuesday", 3: "wednesday", 4: "thursday", 5: "friday", 6: "saturday", 7: "sunday"}


def parking_table_publication(facilities: Iterable[pb.Facility], *, publisher: Publisher, now: datetime) -> bytes:
    """The facilities as one parking table of UrbanParkingSite records (static data)."""
    listed = [f for f in facilities if resource_id(f.name)]
    root = payload("prk:ParkingTablePublication", publisher=publisher, now=now)
    table = sub(root, PRK, "parkingTable", attrs={"id": TABLE_ID, "version": str(sum(f.version for f in listed))})
    changed = [from_timestamp(f.update_time) for f in listed if f.HasField("update_time")]
    sub(table, PRK, "parkingTableVersionTime", text=timestamp(max(changed, default=now)))
    for facility in listed:
        _parking_record(table, facility, publisher=publisher, now=now)
    return to_bytes(root)


def parking_status_publication(facilities: Iterable[pb.Facility], *, publisher: Publisher, now: datetime) -> bytes:
    """One ParkingSiteStatus per facility: its occupancy and status as last measured."""
    root = payload("prk:ParkingStatusPublication", publisher=publisher, now=now)
    for facility in facilities:
        if resource_id(facility.name):
            _record_status(root, facility, now=now)
    return to_bytes(root)


def _parking_record(table: Node, f: pb.Facility, *, publisher: Publisher, now: datetime) -> None:
    layout, site_type, scenario = _KINDS.get(f.kind, _UNKNOWN_KIND)
    record = sub(
        table,
        PRK,
        "parkingRecord",
        xsi_type="prk:UrbanParkingSite",
        attrs={"id": resource_id(f.name), "version": str(f.version)},
    )
    # ParkingRecord
    if f.display_name:
        multilingual(record, PRK, "parkingName", f.display_name, lang=publisher.language)
    sub(record, PRK, "parkingRecordVersionTime", text=timestamp(_changed(f, now=now)))
    sub(record, PRK, "parkingNumberOfSpaces", text=str(max(0, f.capacity)))
    if f.operator_id:
        # The service knows operators by id only: the id names them until operators are resources.
        operator = sub(
            record, PRK, "operator", xsi_type="prk:ContactDetails", attrs={"id": f.operator_id, "version": "1"}
        )
        multilingual(operator, PRK, "contactOrganisationName", f.operator_id, lang=publisher.language)
    location = sub(record, PRK, "parkingLocation", xsi_type="loc:PointLocation")
    if f.HasField("location"):
        point_by_coordinates(location, f.location)
    # ParkingSite
    sub(record, PRK, "parkingLayout", text=layout)
    if f.kind == pb.FACILITY_KIND_EVENT_PARKING:
        sub(record, PRK, "temporaryParking", text="true")
    if scenario:
        indexed = sub(record, PRK, "parkingUsageScenario", attrs={"scenarioIndex": "1"})
        usage = sub(indexed, PRK, "parkingUsageScenario")
        sub(usage, PRK, "parkingUsageScenario", text=scenario)
    _opening_times(record, f, now=now)
    # UrbanParkingSite
    sub(record, PRK, "urbanParkingSiteType", text=site_type)


def _changed(f: pb.Facility, *, now: datetime) -> datetime:
    """When the facility last changed; `now` for one the service has not stored."""
    if f.HasField("update_time"):
        return from_timestamp(f.update_time)
    return from_timestamp(f.create_time) if f.HasField("create_time") else now


def _opening_times(record: Node, f: pb.Facility, *, now: datetime) -> None:
    """Weekly windows as validPeriods (local time, see the module docstring); none: always open."""
    opening = sub(record, PRK, "openingTimes")
    windows = [w for w in f.opening_hours if w.day_of_week in _DAYS]
    if not windows:
        sub(opening, PRK, "openAllYear", text="true")
        sub(opening, PRK, "available24hours", text="true")
        return
    validity = sub(opening, PRK, "validity")
    sub(validity, COM, "validityStatus", text="definedByValidityTimeSpec")
    spec = sub(validity, COM, "validityTimeSpecification")
    since = from_timestamp(f.create_time) if f.HasField("create_time") else now
    sub(spec, COM, "overallStartTime", text=timestamp(since))
    for window in windows:
        period = sub(spec, COM, "validPeriod")
        hours = sub(period, COM, "recurringTimePeriodOfDay")
        sub(hours, COM, "startTimeOfPeriod", text=f"{window.opens}:00")
        sub(hours, COM, "endTimeOfPeriod", text=f"{window.closes}:00")
        days = sub(period, COM, "recurringDayWeekMonthPeriod")
        sub(days, COM, "applicableDay", text=_DAYS[window.day_of_week])


def _record_status(root: Node, f: pb.Facility, *, now: datetime) -> None:
    occupancy = f.occupancy
    counted = occupancy.HasField("source_time") and not occupancy.sharing.counts_withheld
    site_status = None if occupancy.stale else _SITE_STATUS.get(occupancy.status)
    closed = occupancy.status == pb.OCCUPANCY_STATUS_CLOSED and not occupancy.stale
    status = sub(root, PRK, "parkingRecordStatus", xsi_type="prk:ParkingSiteStatus")
    # ParkingRecordStatus
    sub(
        status,
        PRK,
        "parkingRecordReference",
        attrs={"targetClass": "prk:ParkingRecord", "id": resource_id(f.name), "version": str(f.version)},
    )
    origin = from_timestamp(occupancy.source_time) if counted else now
    sub(status, PRK, "parkingStatusOriginTime", text=timestamp(origin))
    if site_status is None and not closed:
        sub(status, PRK, "parkingFault", text="noParkingInformationAvailable")
    figures = sub(status, PRK, "parkingOccupancy")
    capacity = occupancy.capacity or f.capacity
    sub(figures, PRK, "parkingNumberOfSpacesOverride", text=str(max(0, capacity)))
    if counted:
        sub(figures, PRK, "parkingNumberOfVacantSpaces", text=str(max(0, occupancy.free_spaces)))
        sub(figures, PRK, "parkingNumberOfOccupiedSpaces", text=str(max(0, occupancy.occupied_spaces)))
        sub(figures, PRK, "parkingOccupancy", text=number(occupancy.occupancy_ratio * 100, digits=1))
    # ParkingSiteStatus
    if closed:
        sub(status, PRK, "parkingSiteOpeningStatus", text="closed")
    else:
        sub(status, PRK, "parkingSiteStatus", text=site_status or "unknown")
