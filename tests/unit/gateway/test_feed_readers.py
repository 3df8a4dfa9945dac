"""Unit tests of the feed readers (services/gateway/ingest/readers.py) on recorded operator payloads
(tests/fixtures/feeds/) and on every kind of bad input: no I/O, a fixed clock."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from services.gateway.ingest.readers import (
    PRK,
    FeedDocument,
    FeedRejected,
    Reading,
    Reason,
    read_datex2_status,
    read_spdp,
)

FEEDS = Path(__file__).parents[2] / "fixtures" / "feeds"
SPDP = (FEEDS / "spdp-dynamic.json").read_text()
DATEX = (FEEDS / "datex2-parking-status.xml").read_text()
NOW = datetime(2025, 10, 9, 8, 13, tzinfo=UTC)  # a minute after the recordings were measured
FORUM = Reading(
    facility="ALM-P01-FORUM",
    occupied=438,
    capacity=650,
    measured_at=datetime(2025, 10, 9, 8, 12, tzinfo=UTC),
    open=True,
)
SCHOUWBURG = Reading(
    facility="ALM-P02-SCHOUWBURG",
    occupied=380 - 12,
    capacity=380,
    measured_at=datetime(2025, 10, 9, 8, 11, 45, 250000, tzinfo=UTC),
    open=True,
)
BILLION_LAUGHS = (FEEDS / "billion-laughs.xml").read_bytes()  # entity expansion: 10^9 "lol"s
EXTERNAL_ENTITY = (
    '<?xml version="1.0"?>\n<!DOCTYPE mc:messageContainer [<!ENTITY secret SYSTEM "file:///etc/passwd">]>\n'
    + DATEX.split("?>", 1)[1].replace("NL-ALMERE-PARKEREN", "&secret;")
)


def replaced(text: str, old: str, new: str) -> str:
    """`text` with `old` (which must occur) replaced: a recorded payload with one fault put in."""
    assert old in text
    return text.replace(old, new, 1)


def spdp(**status: Any) -> dict[str, Any]:
    """The recorded SPDP document with these facilityActualStatus fields changed (None: removed)."""
    document: dict[str, Any] = json.loads(SPDP)
    actual = document["parkingFacilityDynamicInformation"]["facilityActualStatus"]
    for key, value in status.items():
        if value is None:
            del actual[key]
        else:
            actual[key] = value
    return document


def only_rejection(document: FeedDocument) -> FeedRejected:
    assert len(document.rejected) == 1
    return document.rejected[0]


def test_spdp_recording_reads_as_one_count() -> None:
    document = read_spdp(SPDP.encode(), now=NOW)
    assert document.rejected == ()
    assert document.readings == (
        Reading(
            facility="7b4c1c3e-2f4a-4d1e-9a52-0c7e5f1d2a61",
            occupied=600 - 232,
            capacity=600,
            measured_at=datetime(2025, 10, 9, 8, 12, tzinfo=UTC),
            open=True,
        ),
    )


def test_spdp_lists_of_documents_and_of_records_are_read() -> None:
    second = json.loads(SPDP)["parkingFacilityDynamicInformation"] | {"identifier": "p2"}
    second["facilityActualStatus"] = second["facilityActualStatus"] | {"vacantSpaces": 0, "open": False}
    as_documents = [json.loads(SPDP), {"parkingFacilityDynamicInformation": second}]
    as_records = {"parkingFacilityDynamicInformation": [json.loads(SPDP)["parkingFacilityDynamicInformation"], second]}
    for body in (as_documents, as_records):
        readings = read_spdp(json.dumps(body).encode(), now=NOW).readings
        assert [(r.facility, r.occupied, r.open) for r in readings] == [
            ("7b4c1c3e-2f4a-4d1e-9a52-0c7e5f1d2a61", 368, True),
            ("p2", 600, False),
        ]


def test_spdp_open_is_optional() -> None:
    (reading,) = read_spdp(json.dumps(spdp(open=None)).encode(), now=NOW).readings
    assert reading.open is None


def test_datex2_recording_reads_each_record() -> None:
    document = read_datex2_status(DATEX.encode(), now=NOW)
    assert document.rejected == ()
    assert document.readings == (FORUM, SCHOUWBURG)


def test_datex2_d2payload_root_is_read_like_a_container_payload() -> None:
    payload = DATEX.split("<mc:payload ", 1)[1].split("</mc:payload>", 1)[0]
    body = (
        '<d2:payload xmlns:d2="http://datex2.eu/schema/3/d2Payload" xmlns:com="http://datex2.eu/schema/3/common" '
        'xmlns:prk="http://datex2.eu/schema/3/parking" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        f"{payload}</d2:payload>"
    )
    assert read_datex2_status(body.encode(), now=NOW).readings == (FORUM, SCHOUWBURG)


@pytest.mark.parametrize(
    ("opening", "expected"),
    [
        ("open", True),
        ("openWithServiceLimitation", True),
        ("closed", False),
        ("temporarilyClosed", False),
        ("statusUnknown", None),
        ("other", None),
    ],
)
def test_datex2_opening_status_says_whether_open(opening: str, expected: bool | None) -> None:
    body = replaced(DATEX, ">open</prk:parkingSiteOpeningStatus>", f">{opening}</prk:parkingSiteOpeningStatus>")
    assert read_datex2_status(body.encode(), now=NOW).readings[0].open is expected


def test_a_count_within_the_clock_skew_is_accepted() -> None:
    body = replaced(DATEX, "2025-10-09T10:12:00+02:00", "2025-10-09T10:13:50+02:00")
    assert read_datex2_status(body.encode(), now=NOW).readings[0].measured_at == NOW + timedelta(seconds=50)


@pytest.mark.parametrize(
    ("body", "reason", "message"),
    [
        (b"", Reason.MALFORMED, "not JSON"),
        (b'{"parkingFacilityDynamicInformation": {', Reason.MALFORMED, "not JSON"),
        (b"\xff\xfe\xfa", Reason.MALFORMED, "not JSON"),
        (b"[" * 100_000, Reason.MALFORMED, "not JSON"),
        (b'"a string"', Reason.WRONG_TYPE, "parkingFacilityDynamicInformation"),
        (b'{"parkingFacilityStaticInformation": {}}', Reason.WRONG_TYPE, "parkingFacilityDynamicInformation"),
        (b"[1, 2]", Reason.WRONG_TYPE, "parkingFacilityDynamicInformation"),
    ],
)
def test_spdp_documents_that_cannot_be_read_are_refused(body: bytes, reason: Reason, message: str) -> None:
    with pytest.raises(FeedRejected) as refused:
        read_spdp(body, now=NOW)
    assert (refused.value.reason, refused.value.record) == (reason, None)
    assert message in refused.value.message


@pytest.mark.parametrize(
    ("document", "reason", "message"),
    [
        ({"parkingFacilityDynamicInformation": "garage"}, Reason.WRONG_TYPE, "not an object"),
        ({"parkingFacilityDynamicInformation": {"facilityActualStatus": {}}}, Reason.MISSING_FIELD, "identifier"),
        ({"parkingFacilityDynamicInformation": {"identifier": "p1"}}, Reason.MISSING_FIELD, "facilityActualStatus"),
        (spdp(vacantSpaces=None), Reason.MISSING_FIELD, "facilityActualStatus.vacantSpaces is required"),
        (spdp(parkingCapacity=None), Reason.MISSING_FIELD, "facilityActualStatus.parkingCapacity is required"),
        (spdp(lastUpdated=None), Reason.MISSING_FIELD, "facilityActualStatus.lastUpdated is required"),
        (spdp(vacantSpaces=601), Reason.OVER_CAPACITY, "vacantSpaces 601 exceed parkingCapacity 600"),
        (spdp(vacantSpaces=-1), Reason.NEGATIVE_COUNT, "vacantSpaces is negative (-1)"),
        (spdp(parkingCapacity=-5), Reason.NEGATIVE_COUNT, "parkingCapacity is negative (-5)"),
        (spdp(vacantSpaces="232"), Reason.BAD_VALUE, "whole number, got '232'"),
        (spdp(vacantSpaces=True), Reason.BAD_VALUE, "whole number, got True"),
        (spdp(parkingCapacity=600.5), Reason.BAD_VALUE, "whole number, got 600.5"),
        (spdp(open="yes"), Reason.BAD_VALUE, "open must be true or false"),
        (spdp(lastUpdated="2025-10-09T08:12:00Z"), Reason.BAD_VALUE, "epoch seconds"),
        (spdp(lastUpdated=1759997520 * 1000), Reason.BAD_VALUE, "is not a time in epoch seconds"),
        (spdp(lastUpdated=1759997520 + 180), Reason.FUTURE_TIME, "in the future"),
        (spdp(lastUpdated=1759997520 - 8 * 86400), Reason.TOO_OLD, "more than 7 days ago"),
        (spdp(lastUpdated=0), Reason.TOO_OLD, "1970-01-01"),
    ],
)
def test_spdp_bad_records_are_left_out_with_their_reason(document: Any, reason: Reason, message: str) -> None:
    good = json.loads(SPDP)
    read = read_spdp(json.dumps([document, good]).encode(), now=NOW)
    assert [r.facility for r in read.readings] == ["7b4c1c3e-2f4a-4d1e-9a52-0c7e5f1d2a61"]  # the good one stays
    rejection = only_rejection(read)
    assert rejection.reason == reason and message in rejection.message
    identifier = document["parkingFacilityDynamicInformation"]
    named = isinstance(identifier, dict) and "identifier" in identifier
    assert rejection.record == (identifier["identifier"] if named else "record 1")


@pytest.mark.parametrize(
    ("body", "reason", "message"),
    [
        (b"", Reason.MALFORMED, "not well-formed XML"),
        (b"parkingNumberOfVacantSpaces=12", Reason.MALFORMED, "not well-formed XML"),
        (DATEX[:-40].encode(), Reason.MALFORMED, "not well-formed XML"),
        (BILLION_LAUGHS, Reason.DOCTYPE, "DOCTYPE"),
        (EXTERNAL_ENTITY.encode(), Reason.DOCTYPE, "DOCTYPE"),
        # In UTF-16 the quick check before parsing does not see the DOCTYPE; the check after it does.
        (EXTERNAL_ENTITY.replace("&secret;", "x").encode("utf-16"), Reason.DOCTYPE, "DOCTYPE"),
        (
            replaced(DATEX, 'xmlns:mc="http://datex2.eu/schema/3/messageContainer"', 'xmlns:mc="urn:datex2:v2"'),
            Reason.WRONG_NAMESPACE,
            "messageContainer is in namespace 'urn:datex2:v2'",
        ),
        (
            replaced(DATEX, 'xmlns:prk="http://datex2.eu/schema/3/parking"', 'xmlns:prk="http://example.com/parking"'),
            Reason.WRONG_NAMESPACE,
            "payload type prk:ParkingStatusPublication is in namespace 'http://example.com/parking'",
        ),
        (
            replaced(DATEX, "<com:publicationTime>", '<x:publicationTime xmlns:x="urn:other">').replace(
                "</com:publicationTime>", "</x:publicationTime>"
            ),
            Reason.WRONG_NAMESPACE,
            "{urn:other}publicationTime of the publication is not in the parking namespace",
        ),
        (
            replaced(DATEX, "<mc:messageContainer", '<d2LogicalModel xmlns="http://datex2.eu/schema/2/2_0"').replace(
                "</mc:messageContainer>", "</d2LogicalModel>"
            ),
            Reason.WRONG_TYPE,
            "is not a DATEX II v3 messageContainer",
        ),
        (
            replaced(DATEX, 'xsi:type="prk:ParkingStatusPublication"', 'xsi:type="prk:ParkingTablePublication"'),
            Reason.WRONG_TYPE,
            "prk:ParkingTablePublication is not a ParkingStatusPublication",
        ),
        (
            replaced(DATEX, 'xsi:type="prk:ParkingStatusPublication"', ""),
            Reason.WRONG_TYPE,
            "the payload has no xsi:type",
        ),
        (
            b'<mc:messageContainer xmlns:mc="http://datex2.eu/schema/3/messageContainer"/>',
            Reason.WRONG_TYPE,
            "holds no payload",
        ),
    ],
)
def test_datex2_documents_that_cannot_be_read_are_refused(body: bytes | str, reason: Reason, message: str) -> None:
    with pytest.raises(FeedRejected) as refused:
        read_datex2_status(body.encode() if isinstance(body, str) else body, now=NOW)
    assert (refused.value.reason, refused.value.record) == (reason, None)
    assert message in refused.value.message
    assert "root:" not in refused.value.message  # nothing of /etc/passwd was read


def forum(old: str, new: str) -> str:
    """The recording with the first record (ALM-P01-FORUM) changed."""
    first, rest = DATEX.split("</prk:parkingRecordStatus>", 1)
    return replaced(first, old, new) + "</prk:parkingRecordStatus>" + rest


def forum_without(*tags: str) -> str:
    """The recording with these elements taken out of its first record (ALM-P01-FORUM)."""
    root = etree.fromstring(DATEX.encode())
    record = root.find(f".//{{{PRK}}}parkingRecordStatus")
    for tag in tags:
        element = record.find(f".//{{{PRK}}}{tag}")
        element.getparent().remove(element)
    return str(etree.tostring(root, encoding="unicode"))


@pytest.mark.parametrize(
    ("body", "reason", "message"),
    [
        (forum_without("parkingStatusOriginTime"), Reason.MISSING_FIELD, "parkingStatusOriginTime is required"),
        (
            forum_without("parkingNumberOfOccupiedSpaces", "parkingNumberOfSpacesOverride"),
            Reason.MISSING_FIELD,
            "parkingOccupancy needs parkingNumberOfOccupiedSpaces, or parkingNumberOfVacantSpaces with",
        ),
        (forum_without("parkingOccupancy"), Reason.MISSING_FIELD, "parkingOccupancy is required"),
        (forum(">438<", ">651<"), Reason.OVER_CAPACITY, "OccupiedSpaces 651 exceed parkingNumberOfSpacesOverride 650"),
        (
            forum_without("parkingNumberOfOccupiedSpaces").replace(">212<", ">700<", 1),
            Reason.OVER_CAPACITY,
            "VacantSpaces 700 exceed parkingNumberOfSpacesOverride 650",
        ),
        (forum(">438<", ">-3<"), Reason.NEGATIVE_COUNT, "parkingNumberOfOccupiedSpaces is negative (-3)"),
        (forum(">650<", ">many<"), Reason.BAD_VALUE, "parkingNumberOfSpacesOverride must be a whole number"),
        (forum("+02:00<", "<"), Reason.BAD_VALUE, "has no time zone"),
        (forum("2025-10-09T10:12:00+02:00", "yesterday"), Reason.BAD_VALUE, "is not an xs:dateTime"),
        (forum("2025-10-09T10:12:00+02:00", "2025-10-09T10:15:00+02:00"), Reason.FUTURE_TIME, "in the future"),
        (forum("2025-10-09T10:12:00+02:00", "2025-10-01T10:12:00+02:00"), Reason.TOO_OLD, "more than 7 days ago"),
    ],
)
def test_datex2_bad_records_are_left_out_with_their_reason(body: str, reason: Reason, message: str) -> None:
    read = read_datex2_status(body.encode(), now=NOW)
    assert read.readings == (SCHOUWBURG,)  # the good record stays
    rejection = only_rejection(read)
    assert (rejection.record, rejection.reason) == ("ALM-P01-FORUM", reason)
    assert message in rejection.message


def test_a_datex2_record_without_an_id_is_named_by_its_place() -> None:
    read = read_datex2_status(forum(' id="ALM-P01-FORUM"', "").encode(), now=NOW)
    assert read.readings == (SCHOUWBURG,)
    rejection = only_rejection(read)
    assert (rejection.record, rejection.reason) == ("parkingRecordStatus 1", Reason.MISSING_FIELD)
    assert "parkingRecordReference with an id is required" in rejection.message


def test_readings_are_frozen_and_keyword_only() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        FORUM.occupied = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        Reading("ALM-P01-FORUM", 438, 650, NOW, True)  # type: ignore[call-arg]


def test_counts_beyond_any_facility_are_refused_as_broken() -> None:
    """2**40 spaces would not even fit the parking service's contract: a record error, not a crash."""
    huge = json.dumps(spdp(parkingCapacity=2**40, vacantSpaces=2**39)).encode()
    rejected = only_rejection(read_spdp(huge, now=NOW))
    assert rejected.reason == Reason.BAD_VALUE and "no facility has more than 100000" in rejected.message
    body = forum("<prk:parkingNumberOfVacantSpaces>", "<prk:parkingNumberOfVacantSpaces>9999999999")
    assert only_rejection(read_datex2_status(body.encode(), now=NOW)).reason == Reason.BAD_VALUE


def test_feed_addresses_in_logs_carry_no_credentials() -> None:
    from services.gateway.ingest.poller import _shown

    url = "https://user:secret@feeds.example.nl:8443/parking/status?apikey=abc123#x"
    assert _shown(url) == "https://feeds.example.nl:8443/parking/status"
