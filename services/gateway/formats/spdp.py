"""SPDP v2 (Standaard voor Publicatie Dynamische Parkeerdata), the JSON the Dutch national parking
register publishes at https://npropendata.rdw.nl/parkingdata/v2: an index of facilities, and per
facility a static and a dynamic document. Navigation apps read this format already, so publishing
it lets them show our garages without an adapter.

Field names followed (as in the NPR/RDW v2 publication):

- index: ``ParkingFacilities[]`` with ``identifier``, ``name``, ``staticDataUrl``, ``dynamicDataUrl``,
  ``limitedAccess``, ``staticDataLastUpdated`` (epoch seconds).
- static: ``parkingFacilityInformation`` with ``identifier``, ``name``, ``description``,
  ``limitedAccess``, ``validityStartOfPeriod``, ``operator.name``, ``specifications[].capacity``,
  ``accessPoints[]`` (``isVehicleEntrance``, ``isVehicleExit``, ``accessPointLocation[]`` with
  ``latitude``/``longitude``) and ``openingTimes[]`` (``openAllYear``, ``exitPossibleAllDay``,
  ``entryTimes[]`` with ``enterFrom``/``enterUntil`` as ``{h, m, s}`` and ``dayNames`` Mon...Sun).
- dynamic: ``parkingFacilityDynamicInformation`` with ``identifier``, ``name``, ``description`` and
  ``facilityActualStatus``: ``open``, ``full``, ``parkingCapacity``, ``vacantSpaces``,
  ``lastUpdated`` (epoch seconds of the measurement), ``statusDescription``.

Our facility id (the last part of ``facilities/<id>``) is the SPDP identifier, so the documents'
URLs resolve without a lookup table. Nothing here has a field for tariffs, addresses or contacts:
the parking service does not hold them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from almere.parking.v1 import parking_pb2 as pb

# ISO day 1..7 as SPDP dayNames.
DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
# SPDP times are wall-clock {h, m, s}; the last entry second of a day stands for "until midnight".
END_OF_DAY = {"h": 23, "m": 59, "s": 59}

STATUS_DESCRIPTIONS = {
    pb.OCCUPANCY_STATUS_SPACES_AVAILABLE: "Open",
    pb.OCCUPANCY_STATUS_ALMOST_FULL: "Almost full",
    pb.OCCUPANCY_STATUS_FULL: "Full",
    pb.OCCUPANCY_STATUS_CLOSED: "Closed",
}


def _facility_id(facility: pb.Facility) -> str:
    return facility.name.removeprefix("facilities/")


def index(facilities: Iterable[pb.Facility], *, base_url: str) -> dict[str, Any]:
    """The list a consumer starts from. staticDataLastUpdated is the facility's update time, which
    also moves with occupancy changes: a consumer may re-read static data needlessly, never miss
    a change."""
    base = base_url.rstrip("/")
    entries = []
    for facility in facilities:
        fid = _facility_id(facility)
        entries.append(
            {
                "identifier": fid,
                "name": facility.display_name,
                "staticDataUrl": f"{base}/static/{fid}",
                "dynamicDataUrl": f"{base}/dynamic/{fid}",
                "limitedAccess": False,
                "staticDataLastUpdated": facility.update_time.seconds,
            }
        )
    return {"ParkingFacilities": entries}


def static(facility: pb.Facility) -> dict[str, Any]:
    info: dict[str, Any] = {
        "identifier": _facility_id(facility),
        "name": facility.display_name,
        "description": facility.display_name,
        "limitedAccess": False,
        "validityStartOfPeriod": facility.create_time.seconds,
        "operator": {"name": facility.operator_id},
        "specifications": [{"capacity": facility.capacity}],
        "openingTimes": [_opening_times(facility.opening_hours)],
    }
    if facility.HasField("location"):
        info["accessPoints"] = [
            {
                "isVehicleEntrance": True,
                "isVehicleExit": True,
                "accessPointLocation": [
                    {"latitude": facility.location.latitude, "longitude": facility.location.longitude}
                ],
            }
        ]
    return {"parkingFacilityInformation": info}


def dynamic(facility: pb.Facility) -> dict[str, Any]:
    """The live status. `full` is the service's status (with its hysteresis), so it agrees with the
    signs; figures of a stale count keep the time they were measured and say they are stale. With
    no count yet there are no figures at all (SPDP has no 'unknown')."""
    occupancy = facility.occupancy
    closed = facility.state == pb.FACILITY_STATE_CLOSED or occupancy.status == pb.OCCUPANCY_STATUS_CLOSED
    status: dict[str, Any] = {
        "open": not closed,
        "full": not closed and occupancy.status == pb.OCCUPANCY_STATUS_FULL,
        "parkingCapacity": occupancy.capacity or facility.capacity,
    }
    known = occupancy.HasField("source_time") and occupancy.status != pb.OCCUPANCY_STATUS_UNKNOWN
    # A partner's agreement may give the public the status only: no figures then, a status still.
    counted = known and not occupancy.sharing.counts_withheld
    if counted:
        status["vacantSpaces"] = occupancy.free_spaces
        status["lastUpdated"] = occupancy.source_time.seconds
    if closed:
        status["statusDescription"] = STATUS_DESCRIPTIONS[pb.OCCUPANCY_STATUS_CLOSED]
    elif not known:
        status["statusDescription"] = "Open; no occupancy count yet"
    else:
        described = STATUS_DESCRIPTIONS.get(occupancy.status, "Open")
        if occupancy.stale:
            described += f"; stale: last count {occupancy.source_time.ToJsonString()}"
        status["statusDescription"] = described
    return {
        "parkingFacilityDynamicInformation": {
            "identifier": _facility_id(facility),
            "name": facility.display_name,
            "description": facility.display_name,
            "facilityActualStatus": status,
        }
    }


def _opening_times(windows: Iterable[pb.OpeningWindow]) -> dict[str, Any]:
    """Our weekly windows as SPDP entry times. A window past midnight becomes two (SPDP times do not
    wrap), and days with the same hours share one entry, as published data do."""
    pieces: list[tuple[int, str, str]] = []
    for w in windows:
        if _minutes(w.closes) > _minutes(w.opens):
            pieces.append((w.day_of_week, w.opens, w.closes))
        else:
            pieces.append((w.day_of_week, w.opens, "24:00"))
            if w.closes != "00:00":
                pieces.append((w.day_of_week % 7 + 1, "00:00", w.closes))
    if not pieces:
        all_day = {"enterFrom": _clock("00:00"), "enterUntil": END_OF_DAY, "dayNames": list(DAY_NAMES)}
        return {"openAllYear": True, "exitPossibleAllDay": True, "entryTimes": [all_day]}
    days_by_hours: dict[tuple[str, str], list[int]] = {}
    for day, opens, closes in pieces:
        days_by_hours.setdefault((opens, closes), []).append(day)
    entry_times = [
        {
            "enterFrom": _clock(opens),
            "enterUntil": _clock(closes),
            "dayNames": [DAY_NAMES[d - 1] for d in sorted(set(days))],
        }
        for (opens, closes), days in days_by_hours.items()
    ]
    return {"openAllYear": True, "entryTimes": entry_times}


def _minutes(text: str) -> int:
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


def _clock(text: str) -> dict[str, int]:
    if text == "24:00":
        return dict(END_OF_DAY)
    hours, minutes = text.split(":")
    return {"h": int(hours), "m": int(minutes), "s": 0}
