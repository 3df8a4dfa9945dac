"""Readers of operators' standard parking feeds: SPDP v2 dynamic JSON and DATEX II v3 parking status.

Pure functions, bytes in, readings out. A feed is untrusted input: a document that cannot be read as
a whole (malformed, a DTD, the wrong namespace or publication) is refused with FeedRejected; a
document with some bad records keeps its good ones and says why each bad one was left out, so one
garage's broken counter does not blind the city to the others.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol, TypeVar

from lxml import etree

# Counts measured further ahead of our clock than this are a clock or unit bug at the operator (the
# parking service allows the same skew).
CLOCK_SKEW = timedelta(seconds=60)
# Counts measured longer ago than this are not news but a broken feed (or seconds read as milliseconds).
MAX_AGE = timedelta(days=7)
# The parking service takes no facility above 100,000 spaces: a larger count is a broken feed.
MAX_COUNT = 100_000

MC = "http://datex2.eu/schema/3/messageContainer"
D2 = "http://datex2.eu/schema/3/d2Payload"
COM = "http://datex2.eu/schema/3/common"
PRK = "http://datex2.eu/schema/3/parking"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
# fac:OpeningStatusEnum (DATEXII_3_Facilities.xsd), the type of prk:parkingSiteOpeningStatus.
OPEN_STATUSES = {"open": True, "openWithServiceLimitation": True}
CLOSED_STATUSES = dict.fromkeys(["closed", "closedOnHoliday", "closedOnMaintenance", "temporarilyClosed"], False)

T = TypeVar("T")


class Reason(StrEnum):
    """Why a document or record was refused: short, stable values for metric labels and logs."""

    MALFORMED = "malformed"
    DOCTYPE = "doctype"
    WRONG_NAMESPACE = "wrong_namespace"
    WRONG_TYPE = "wrong_type"
    MISSING_FIELD = "missing_field"
    BAD_VALUE = "bad_value"
    NEGATIVE_COUNT = "negative_count"
    OVER_CAPACITY = "over_capacity"
    FUTURE_TIME = "future_time"
    TOO_OLD = "too_old"
    TOO_LARGE = "too_large"


class FeedRejected(Exception):
    """A document (record is None) or one record of it that was not read, with a machine reason and
    a message for the operator."""

    def __init__(self, reason: Reason, message: str, *, record: str | None = None) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
        self.record = record


@dataclass(frozen=True, kw_only=True)
class Reading:
    """One facility's count as its feed states it."""

    facility: str  # the feed's own id of the facility
    occupied: int
    capacity: int | None
    measured_at: datetime  # aware, UTC
    open: bool | None


@dataclass(frozen=True, kw_only=True)
class FeedDocument:
    """A document read: the readings of its good records and, for each bad record, why it was left out."""

    readings: tuple[Reading, ...]
    rejected: tuple[FeedRejected, ...]


class Reader(Protocol):
    def __call__(self, body: bytes, *, now: datetime) -> FeedDocument: ...


def read_spdp(body: bytes, *, now: datetime) -> FeedDocument:
    """An SPDP v2 dynamic document ({"parkingFacilityDynamicInformation": {...}}), a list of them,
    or one whose parkingFacilityDynamicInformation is a list."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as error:  # ValueError: JSON and UTF-8 errors
        raise FeedRejected(Reason.MALFORMED, f"not JSON: {error}") from None
    records: list[Any] = []
    for document in data if isinstance(data, list) else [data]:
        if not isinstance(document, dict) or "parkingFacilityDynamicInformation" not in document:
            raise FeedRejected(Reason.WRONG_TYPE, "expected SPDP objects with parkingFacilityDynamicInformation")
        info = document["parkingFacilityDynamicInformation"]
        records.extend(info if isinstance(info, list) else [info])
    return _each(records, lambda record: _spdp_reading(record, now), _spdp_label)


def _spdp_reading(record: Any, now: datetime) -> Reading:
    if not isinstance(record, dict):
        raise FeedRejected(Reason.WRONG_TYPE, "parkingFacilityDynamicInformation is not an object")
    identifier = record.get("identifier")
    if not isinstance(identifier, str) or not identifier:
        raise FeedRejected(Reason.MISSING_FIELD, "identifier is required (a non-empty string)")
    status = record.get("facilityActualStatus")
    if not isinstance(status, dict):
        raise FeedRejected(Reason.MISSING_FIELD, "facilityActualStatus is required (an object)")
    capacity = _count(status.get("parkingCapacity"), "facilityActualStatus.parkingCapacity")
    vacant = _count(status.get("vacantSpaces"), "facilityActualStatus.vacantSpaces")
    if vacant > capacity:
        raise FeedRejected(Reason.OVER_CAPACITY, f"vacantSpaces {vacant} exceed parkingCapacity {capacity}")
    is_open = status.get("open")
    if is_open is not None and not isinstance(is_open, bool):
        raise FeedRejected(Reason.BAD_VALUE, f"facilityActualStatus.open must be true or false, got {is_open!r}")
    return Reading(
        facility=identifier,
        occupied=capacity - vacant,
        capacity=capacity,
        measured_at=_checked_time(_epoch_seconds(status.get("lastUpdated")), now),
        open=is_open,
    )


def _spdp_label(record: Any, index: int) -> str:
    identifier = record.get("identifier") if isinstance(record, dict) else None
    return identifier if isinstance(identifier, str) and identifier else f"record {index + 1}"


def _count(value: Any, field: str) -> int:
    if value is None:
        raise FeedRejected(Reason.MISSING_FIELD, f"{field} is required")
    if isinstance(value, bool) or not isinstance(value, int):
        raise FeedRejected(Reason.BAD_VALUE, f"{field} must be a whole number, got {value!r}")
    return _in_range(value, field)


def _in_range(value: int, field: str) -> int:
    if value < 0:
        raise FeedRejected(Reason.NEGATIVE_COUNT, f"{field} is negative ({value})")
    if value > MAX_COUNT:
        raise FeedRejected(Reason.BAD_VALUE, f"{field} is {value}; no facility has more than {MAX_COUNT} spaces")
    return value


def _epoch_seconds(value: Any) -> datetime:
    field = "facilityActualStatus.lastUpdated"
    if value is None:
        raise FeedRejected(Reason.MISSING_FIELD, f"{field} is required (epoch seconds)")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FeedRejected(Reason.BAD_VALUE, f"{field} must be epoch seconds, got {value!r}")
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, ValueError, OSError):
        raise FeedRejected(Reason.BAD_VALUE, f"{field} {value!r} is not a time in epoch seconds") from None


def read_datex2_status(body: bytes, *, now: datetime) -> FeedDocument:
    """A DATEX II v3 ParkingStatusPublication, in a messageContainer (mc:payload) or as a d2:payload
    root. A DOCTYPE is refused before parsing: feeds have no use for DTDs, and entity declarations are
    how XML bombs and external-entity reads come in."""
    if b"<!DOCTYPE" in body:  # also caught after parsing (below), e.g. in UTF-16 documents
        raise FeedRejected(Reason.DOCTYPE, "XML with a DOCTYPE (DTD or entity declarations) is not accepted")
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
    try:
        root = etree.fromstring(body, parser)
    except etree.XMLSyntaxError as error:
        raise FeedRejected(Reason.MALFORMED, f"not well-formed XML: {error}") from None
    info = root.getroottree().docinfo
    if info.doctype or info.internalDTD is not None:
        raise FeedRejected(Reason.DOCTYPE, "XML with a DOCTYPE (DTD or entity declarations) is not accepted")
    records = [record for payload in _payloads(root) for record in _status_records(payload)]
    return _each(records, lambda record: _datex2_reading(record, now), _datex2_label)


def _payloads(root: etree._Element) -> list[etree._Element]:
    name = etree.QName(root)
    if root.tag == f"{{{MC}}}messageContainer":
        payloads: list[etree._Element] = root.findall(f"{{{MC}}}payload")
        if not payloads:
            raise FeedRejected(Reason.WRONG_TYPE, "the messageContainer holds no payload")
        return payloads
    if root.tag == f"{{{D2}}}payload":
        return [root]
    if name.localname in ("messageContainer", "payload"):
        raise FeedRejected(
            Reason.WRONG_NAMESPACE, f"root element {name.localname} is in namespace {name.namespace!r}, not {MC!r}"
        )
    raise FeedRejected(Reason.WRONG_TYPE, f"root element {root.tag} is not a DATEX II v3 messageContainer")


def _status_records(payload: etree._Element) -> list[etree._Element]:
    """The parkingRecordStatus elements of a payload that must be a prk:ParkingStatusPublication,
    all of whose elements are in the parking or common namespace."""
    declared = payload.get(f"{{{XSI}}}type")
    if not declared:
        raise FeedRejected(Reason.WRONG_TYPE, "the payload has no xsi:type (expected prk:ParkingStatusPublication)")
    prefix, _, local = declared.rpartition(":")
    namespace = payload.nsmap.get(prefix or None)
    if namespace != PRK:
        raise FeedRejected(
            Reason.WRONG_NAMESPACE, f"payload type {declared} is in namespace {namespace!r}, not the parking {PRK!r}"
        )
    if local != "ParkingStatusPublication":
        raise FeedRejected(Reason.WRONG_TYPE, f"payload type {declared} is not a ParkingStatusPublication")
    for child in payload.iterchildren(tag=etree.Element):
        if etree.QName(child).namespace not in (PRK, COM):
            raise FeedRejected(
                Reason.WRONG_NAMESPACE, f"element {child.tag} of the publication is not in the parking namespace"
            )
    records: list[etree._Element] = payload.findall(f"{{{PRK}}}parkingRecordStatus")
    return records


def _datex2_label(record: etree._Element, index: int) -> str:
    return _datex2_id(record) or f"parkingRecordStatus {index + 1}"


def _datex2_id(record: etree._Element) -> str | None:
    reference = record.find(f"{{{PRK}}}parkingRecordReference")
    return reference.get("id") if reference is not None else None


def _datex2_reading(record: etree._Element, now: datetime) -> Reading:
    identifier = _datex2_id(record)
    if not identifier:
        raise FeedRejected(Reason.MISSING_FIELD, "parkingRecordReference with an id is required")
    occupancy = record.find(f"{{{PRK}}}parkingOccupancy")
    if occupancy is None:
        raise FeedRejected(Reason.MISSING_FIELD, "parkingOccupancy is required")
    occupied = _xml_count(occupancy, "parkingNumberOfOccupiedSpaces")
    vacant = _xml_count(occupancy, "parkingNumberOfVacantSpaces")
    capacity = _xml_count(occupancy, "parkingNumberOfSpacesOverride")
    if occupied is None:
        if vacant is None or capacity is None:
            raise FeedRejected(
                Reason.MISSING_FIELD,
                "parkingOccupancy needs parkingNumberOfOccupiedSpaces, or parkingNumberOfVacantSpaces "
                "with parkingNumberOfSpacesOverride (the capacity)",
            )
        if vacant > capacity:
            raise FeedRejected(
                Reason.OVER_CAPACITY,
                f"parkingNumberOfVacantSpaces {vacant} exceed parkingNumberOfSpacesOverride {capacity}",
            )
        occupied = capacity - vacant
    if capacity is not None and occupied > capacity:
        raise FeedRejected(
            Reason.OVER_CAPACITY,
            f"parkingNumberOfOccupiedSpaces {occupied} exceed parkingNumberOfSpacesOverride {capacity}",
        )
    opening = record.findtext(f"{{{PRK}}}parkingSiteOpeningStatus")
    return Reading(
        facility=identifier,
        occupied=occupied,
        capacity=capacity,
        measured_at=_checked_time(_xml_time(record.findtext(f"{{{PRK}}}parkingStatusOriginTime")), now),
        open={**OPEN_STATUSES, **CLOSED_STATUSES}.get((opening or "").strip()),
    )


def _xml_count(parent: etree._Element, name: str) -> int | None:
    text = parent.findtext(f"{{{PRK}}}{name}")
    if text is None:
        return None
    try:
        value = int(text.strip())
    except ValueError:
        raise FeedRejected(Reason.BAD_VALUE, f"{name} must be a whole number, got {text!r}") from None
    return _in_range(value, name)


def _xml_time(text: str | None) -> datetime:
    if not text:
        raise FeedRejected(Reason.MISSING_FIELD, "parkingStatusOriginTime is required")
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise FeedRejected(Reason.BAD_VALUE, f"parkingStatusOriginTime {text!r} is not an xs:dateTime") from None
    if when.tzinfo is None:
        raise FeedRejected(Reason.BAD_VALUE, f"parkingStatusOriginTime {text!r} has no time zone")
    return when.astimezone(UTC)


def _checked_time(when: datetime, now: datetime) -> datetime:
    if when > now + CLOCK_SKEW:
        raise FeedRejected(
            Reason.FUTURE_TIME, f"measured at {when.isoformat()}, in the future (our time {now.isoformat()})"
        )
    if when < now - MAX_AGE:
        raise FeedRejected(
            Reason.TOO_OLD,
            f"measured at {when.isoformat()}, more than {MAX_AGE.days} days ago (our time {now.isoformat()})",
        )
    return when


def _each(records: list[T], read: Callable[[T], Reading], label: Callable[[T, int], str]) -> FeedDocument:
    """Reads every record, keeping the good ones and the reason each bad one was left out."""
    readings: list[Reading] = []
    rejected: list[FeedRejected] = []
    for index, record in enumerate(records):
        try:
            readings.append(read(record))
        except FeedRejected as error:
            rejected.append(FeedRejected(error.reason, error.message, record=label(record, index)))
    return FeedDocument(readings=tuple(readings), rejected=tuple(rejected))


READERS: dict[str, Reader] = {"spdp": read_spdp, "datex2": read_datex2_status}
