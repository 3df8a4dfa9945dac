"""Unit tests of the DATEX II v3 encoders (services/gateway/formats/datex2*.py).

The parking documents are read back by a reader we did not write: parkapi-sources' DATEX II
validators (ParkingRecordStatus, UrbanParkingSite) and its XMLHelper. Its converters look for the
records under the DATEX II 2.3 German path (d2LogicalModel/payloadPublication/
genericPublicationExtension/...); the records themselves have the same model in v3, so the tests take
them from the v3 path (d2:payload/...) and hand each to parkapi's validator. The situation document is
read back with lxml and namespaced XPath.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from almere.incidents.v1 import incidents_pb2 as ipb
from almere.parking.v1 import parking_pb2 as ppb
from lxml import etree
from parkapi_sources.converters.base_converter.datex2.parking_record_status_validator import ParkingRecordStatus
from parkapi_sources.converters.base_converter.datex2.urban_parking_site_validator import UrbanParkingSite
from parkapi_sources.models.enums import ParkingSiteType
from parkapi_sources.util import XMLHelper
from validataclass.exceptions import ValidationError
from validataclass.validators import DataclassValidator

from services.gateway.formats.datex2_parking import parking_status_publication, parking_table_publication
from services.gateway.formats.datex2_situation import situation_publication
from services.gateway.formats.publisher import Publisher

NOW = datetime(2025, 5, 1, 8, 0, tzinfo=UTC)
NS = {
    "d2": "http://datex2.eu/schema/3/d2Payload",
    "com": "http://datex2.eu/schema/3/common",
    "prk": "http://datex2.eu/schema/3/parking",
    "sit": "http://datex2.eu/schema/3/situation",
    "loc": "http://datex2.eu/schema/3/locationReferencing",
    "xsi": "http://www.w3.org/2001/XMLSchema-instance",
}
XSI_TYPE = f"{{{NS['xsi']}}}type"
PUBLISHER = Publisher()
# parkapi's UrbanParkingSite accepts names in German only (its Language enum is {'de'}), a rule of
# its German sources, not of DATEX II: the static checks publish in 'de' to get past it.
GERMAN = Publisher(language="de")

# --- builders --------------------------------------------------------------------------------------


def facility(
    facility_id: str,
    *,
    kind: int = ppb.FACILITY_KIND_GARAGE,
    capacity: int = 400,
    occupied: int | None = 100,
    status: int = ppb.OCCUPANCY_STATUS_SPACES_AVAILABLE,
    measured: datetime = NOW - timedelta(minutes=2),
    stale: bool = False,
) -> ppb.Facility:
    f = ppb.Facility(
        name=f"facilities/{facility_id}",
        display_name=f"Parkeergarage {facility_id.title()}",
        kind=kind,
        operator_id="q-park",
        capacity=capacity,
        time_zone="Europe/Amsterdam",
        state=ppb.FACILITY_STATE_OPEN,
        version=12,
    )
    f.location.latitude, f.location.longitude = 52.3731, 5.2180
    f.create_time.FromDatetime(datetime(2024, 1, 10, 9, 0, tzinfo=UTC))
    f.update_time.FromDatetime(datetime(2025, 4, 30, 17, 45, tzinfo=UTC))
    o = f.occupancy
    o.facility, o.capacity, o.status, o.stale, o.version = f.name, capacity, status, stale, 12
    if occupied is not None:
        o.occupied_spaces, o.free_spaces, o.occupancy_ratio = occupied, capacity - occupied, occupied / capacity
        o.source_time.FromDatetime(measured)
    return f


def incident(
    incident_id: str = "i-1",
    *,
    kind: int = ipb.INCIDENT_TYPE_COLLISION,
    state: int = ipb.INCIDENT_STATE_ACTIVE,
) -> ipb.Incident:
    i = ipb.Incident(
        name=f"incidents/{incident_id}",
        type=kind,
        severity=ipb.SEVERITY_MAJOR,
        state=state,
        title="Aanrijding Hogering richting Stad",
        version=4,
    )
    i.location.latitude, i.location.longitude = 52.3702, 5.2147
    i.network_location.edge_id = "-4711#2"
    i.network_location.lane_indices.extend([1])
    i.network_location.position_meters = 42.5
    i.create_time.FromDatetime(NOW - timedelta(minutes=30))
    i.update_time.FromDatetime(NOW - timedelta(minutes=5))
    return i


def parse(document: bytes) -> Any:
    assert document.startswith(b"<?xml version='1.0' encoding='UTF-8'?>")
    return etree.fromstring(document)


def texts(node: Any, path: str) -> list[str]:
    return [str(t) for t in node.xpath(f"{path}/text()", namespaces=NS)]


def text(node: Any, path: str) -> str:
    found = texts(node, path)
    assert len(found) == 1, f"{path}: {found}"
    return found[0]


def local_names(node: Any) -> list[str]:
    return [etree.QName(child).localname for child in node]


# --- the envelope ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("encode", "publication"),
    [
        (parking_table_publication, "prk:ParkingTablePublication"),
        (parking_status_publication, "prk:ParkingStatusPublication"),
        (situation_publication, "sit:SituationPublication"),
    ],
)
def test_every_publication_is_a_v3_payload_with_its_time_and_creator(encode: Any, publication: str) -> None:
    root = parse(encode([], publisher=PUBLISHER, now=NOW.astimezone(timezone(timedelta(hours=2)))))
    assert etree.QName(root).namespace == NS["d2"] and etree.QName(root).localname == "payload"
    assert root.get(XSI_TYPE) == publication
    assert root.get("lang") == "nl" and root.get("modelBaseVersion") == "3"
    assert local_names(root)[:2] == ["publicationTime", "publicationCreator"]
    assert text(root, "com:publicationTime") == "2025-05-01T08:00:00Z"  # UTC, whatever zone `now` had
    assert text(root, "com:publicationCreator/com:country") == "nl"
    assert text(root, "com:publicationCreator/com:nationalIdentifier") == "almere-traffic"


def test_a_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        parking_status_publication([], publisher=PUBLISHER, now=datetime(2025, 5, 1, 8, 0))


# --- parking status, read by parkapi ----------------------------------------------------------------


def parkapi_status_records(document: bytes) -> list[dict[str, Any]]:
    data = XMLHelper.xml_to_dict(parse(document), ensure_array_keys=[("payload", "parkingRecordStatus")])
    records: list[dict[str, Any]] = data["payload"].get("parkingRecordStatus", [])
    return records


def test_parkapi_reads_the_live_occupancy_of_every_facility() -> None:
    facilities = [
        facility("centrum", capacity=400, occupied=100),
        facility("station", kind=ppb.FACILITY_KIND_PARK_AND_RIDE, capacity=250, occupied=240,
                 status=ppb.OCCUPANCY_STATUS_ALMOST_FULL, measured=NOW - timedelta(seconds=61, milliseconds=250)),
        facility("markt", kind=ppb.FACILITY_KIND_SURFACE_LOT, capacity=80, occupied=80,
                 status=ppb.OCCUPANCY_STATUS_FULL),
    ]  # fmt: skip
    records = parkapi_status_records(parking_status_publication(facilities, publisher=PUBLISHER, now=NOW))

    validator = DataclassValidator(ParkingRecordStatus)
    inputs = [validator.validate(record).to_realtime_parking_site_input() for record in records]
    assert [(i.uid, i.realtime_capacity, i.realtime_free_capacity) for i in inputs] == [
        ("centrum", 400, 300),
        ("station", 250, 10),
        ("markt", 80, 0),
    ]
    # parkapi keeps whole seconds; the measurement time is the count's, not the publication's.
    measured = [f.occupancy.source_time.ToDatetime(tzinfo=UTC).replace(microsecond=0) for f in facilities]
    assert [i.realtime_data_updated_at for i in inputs] == measured
    assert records[1]["parkingStatusOriginTime"] == "2025-05-01T07:58:58.750Z"
    assert records[1]["parkingRecordReference"] == {
        "targetClass": "prk:ParkingRecord",
        "id": "station",
        "version": "12",
    }


@pytest.mark.parametrize(
    ("status", "stale", "site_status", "opening_status", "fault"),
    [
        (ppb.OCCUPANCY_STATUS_SPACES_AVAILABLE, False, "spacesAvailable", None, None),
        (ppb.OCCUPANCY_STATUS_ALMOST_FULL, False, "almostFull", None, None),
        (ppb.OCCUPANCY_STATUS_FULL, False, "full", None, None),
        # ParkingSiteStatusEnum has no "closed": the opening status says it.
        (ppb.OCCUPANCY_STATUS_CLOSED, False, None, "closed", None),
        (ppb.OCCUPANCY_STATUS_UNKNOWN, False, "unknown", None, "noParkingInformationAvailable"),
        (ppb.OCCUPANCY_STATUS_UNSPECIFIED, False, "unknown", None, "noParkingInformationAvailable"),
        (ppb.OCCUPANCY_STATUS_FULL, True, "unknown", None, "noParkingInformationAvailable"),
        (ppb.OCCUPANCY_STATUS_CLOSED, True, "unknown", None, "noParkingInformationAvailable"),
    ],
)
def test_site_status_follows_the_service_status_and_staleness(
    status: int, stale: bool, site_status: str | None, opening_status: str | None, fault: str | None
) -> None:
    f = facility("centrum", status=status, stale=stale)
    record = parse(parking_status_publication([f], publisher=PUBLISHER, now=NOW)).find("prk:parkingRecordStatus", NS)

    assert record.get(XSI_TYPE) == "prk:ParkingSiteStatus"
    assert texts(record, "prk:parkingSiteStatus") == ([site_status] if site_status else [])
    assert texts(record, "prk:parkingSiteOpeningStatus") == ([opening_status] if opening_status else [])
    assert texts(record, "prk:parkingFault") == ([fault] if fault else [])


def test_a_stale_count_keeps_its_figures_and_its_measurement_time() -> None:
    measured = NOW - timedelta(hours=3)
    f = facility("centrum", occupied=150, measured=measured, stale=True)
    record = parse(parking_status_publication([f], publisher=PUBLISHER, now=NOW)).find("prk:parkingRecordStatus", NS)

    assert text(record, "prk:parkingStatusOriginTime") == "2025-05-01T05:00:00Z"
    assert text(record, "prk:parkingOccupancy/prk:parkingNumberOfVacantSpaces") == "250"
    assert text(record, "prk:parkingSiteStatus") == "unknown"


def test_the_status_record_follows_the_schema_sequence() -> None:
    f = facility("centrum", occupied=334, capacity=400, status=ppb.OCCUPANCY_STATUS_UNKNOWN)
    record = parse(parking_status_publication([f], publisher=PUBLISHER, now=NOW)).find("prk:parkingRecordStatus", NS)

    assert local_names(record) == [
        "parkingRecordReference",
        "parkingStatusOriginTime",
        "parkingFault",
        "parkingOccupancy",
        "parkingSiteStatus",
    ]
    occupancy = record.find("prk:parkingOccupancy", NS)
    assert local_names(occupancy) == [
        "parkingNumberOfSpacesOverride",
        "parkingNumberOfVacantSpaces",
        "parkingNumberOfOccupiedSpaces",
        "parkingOccupancy",
    ]
    assert texts(occupancy, "*") == ["400", "66", "334", "83.5"]


def test_an_over_full_facility_has_no_negative_vacancy() -> None:
    f = facility("centrum", capacity=100, occupied=104, status=ppb.OCCUPANCY_STATUS_FULL)
    record = parse(parking_status_publication([f], publisher=PUBLISHER, now=NOW)).find("prk:parkingRecordStatus", NS)
    assert texts(record.find("prk:parkingOccupancy", NS), "*") == ["100", "0", "104", "104"]


def test_a_facility_never_counted_has_no_figures_that_parkapi_could_take_for_zero() -> None:
    f = facility("nieuw", occupied=None, status=ppb.OCCUPANCY_STATUS_UNKNOWN)
    document = parking_status_publication([f], publisher=PUBLISHER, now=NOW)
    record = parse(document).find("prk:parkingRecordStatus", NS)

    assert text(record, "prk:parkingStatusOriginTime") == "2025-05-01T08:00:00Z"
    assert local_names(record.find("prk:parkingOccupancy", NS)) == ["parkingNumberOfSpacesOverride"]
    with pytest.raises(ValidationError):
        DataclassValidator(ParkingRecordStatus).validate(parkapi_status_records(document)[0])


def test_facilities_without_a_name_are_left_out() -> None:
    document = parking_status_publication([ppb.Facility(), facility("centrum")], publisher=PUBLISHER, now=NOW)
    assert [r["parkingRecordReference"]["id"] for r in parkapi_status_records(document)] == ["centrum"]
    assert parkapi_status_records(parking_status_publication([], publisher=PUBLISHER, now=NOW)) == []


# --- parking table, read by parkapi -----------------------------------------------------------------


def parkapi_table_records(document: bytes) -> list[dict[str, Any]]:
    # The same options as parkapi's UrbanParkingSiteMixin, on the v3 path.
    data = XMLHelper.xml_to_dict(
        parse(document),
        conditional_remote_type_tags=[("parkingName", "values"), ("values", "value")],
        ensure_array_keys=[("parkingTable", "parkingRecord"), ("parkingName", "values")],
    )
    records: list[dict[str, Any]] = data["payload"]["parkingTable"]["parkingRecord"]
    return records


def test_parkapi_reads_the_static_data_of_every_facility() -> None:
    facilities = [
        facility("centrum"),
        facility("station", kind=ppb.FACILITY_KIND_PARK_AND_RIDE, capacity=250),
        facility("hoofdstraat", kind=ppb.FACILITY_KIND_ON_STREET_ZONE, capacity=35),
    ]
    facilities[1].location.latitude, facilities[1].location.longitude = 52.3756789, 5.1966543
    records = parkapi_table_records(parking_table_publication(facilities, publisher=GERMAN, now=NOW))

    validator = DataclassValidator(UrbanParkingSite)
    sites = [validator.validate(r).to_static_parking_site_input(has_realtime_data=True) for r in records]
    assert [(s.uid, s.name, s.capacity, s.type) for s in sites] == [
        ("centrum", "Parkeergarage Centrum", 400, ParkingSiteType.CAR_PARK),
        ("station", "Parkeergarage Station", 250, ParkingSiteType.OFF_STREET_PARKING_GROUND),
        ("hoofdstraat", "Parkeergarage Hoofdstraat", 35, ParkingSiteType.ON_STREET),
    ]
    assert (sites[1].lat, sites[1].lon) == (Decimal("52.3756789"), Decimal("5.1966543"))
    assert all(s.static_data_updated_at == datetime(2025, 4, 30, 17, 45, tzinfo=UTC) for s in sites)


def test_parkapi_refuses_only_the_dutch_name_of_a_dutch_table() -> None:
    # Our own language is valid DATEX II; parkapi's German-only name rule is the one thing it rejects.
    record = parkapi_table_records(parking_table_publication([facility("centrum")], publisher=PUBLISHER, now=NOW))[0]
    with pytest.raises(ValidationError) as refused:
        DataclassValidator(UrbanParkingSite).validate(record)
    assert set(refused.value.to_dict()["field_errors"]) == {"parkingName"}


def test_the_table_version_grows_with_any_record_and_its_time_is_the_latest_change() -> None:
    a, b = facility("a"), facility("b")
    b.version = 30
    b.update_time.FromDatetime(datetime(2025, 4, 30, 19, 0, tzinfo=UTC))
    table = parse(parking_table_publication([a, b], publisher=PUBLISHER, now=NOW)).find("prk:parkingTable", NS)
    assert (table.get("id"), table.get("version")) == ("facilities", "42")
    assert text(table, "prk:parkingTableVersionTime") == "2025-04-30T19:00:00Z"


def test_the_parking_record_follows_the_schema_sequence() -> None:
    f = facility("festival", kind=ppb.FACILITY_KIND_EVENT_PARKING)
    f.opening_hours.add(day_of_week=5, opens="18:00", closes="02:00")
    record = parse(parking_table_publication([f], publisher=PUBLISHER, now=NOW)).find(".//prk:parkingRecord", NS)

    assert (record.get(XSI_TYPE), record.get("id"), record.get("version")) == ("prk:UrbanParkingSite", "festival", "12")
    assert local_names(record) == [
        "parkingName",
        "parkingRecordVersionTime",
        "parkingNumberOfSpaces",
        "operator",
        "parkingLocation",
        "parkingLayout",
        "temporaryParking",
        "parkingUsageScenario",
        "openingTimes",
        "urbanParkingSiteType",
    ]
    assert text(record, "prk:operator/prk:contactOrganisationName/com:values/com:value") == "q-park"
    assert record.find("prk:parkingLocation", NS).get(XSI_TYPE) == "loc:PointLocation"
    scenario = "prk:parkingUsageScenario[@scenarioIndex='1']/prk:parkingUsageScenario/prk:parkingUsageScenario"
    assert text(record, scenario) == "eventParking"


@pytest.mark.parametrize(
    ("kind", "layout", "site_type", "scenario"),
    [
        (ppb.FACILITY_KIND_GARAGE, "multiStorey", "offStreetParking", []),
        (ppb.FACILITY_KIND_PARK_AND_RIDE, "openSpace", "offStreetParking", ["parkAndRide"]),
        (ppb.FACILITY_KIND_ON_STREET_ZONE, "openSpace", "onStreetParking", []),
        (ppb.FACILITY_KIND_EVENT_PARKING, "field", "offStreetParking", ["eventParking"]),
        (ppb.FACILITY_KIND_SURFACE_LOT, "openSpace", "offStreetParking", []),
        (ppb.FACILITY_KIND_UNSPECIFIED, "unknown", "other", []),
    ],
)
def test_layout_and_site_type_follow_the_kind(kind: int, layout: str, site_type: str, scenario: list[str]) -> None:
    record = parse(parking_table_publication([facility("x", kind=kind)], publisher=PUBLISHER, now=NOW)).find(
        ".//prk:parkingRecord", NS
    )
    assert text(record, "prk:parkingLayout") == layout
    assert text(record, "prk:urbanParkingSiteType") == site_type
    assert texts(record, ".//prk:parkingUsageScenario/prk:parkingUsageScenario") == scenario


def test_opening_hours_are_weekly_local_windows_and_none_means_always_open() -> None:
    weekly = facility("centrum")
    weekly.opening_hours.add(day_of_week=1, opens="07:00", closes="23:30")
    weekly.opening_hours.add(day_of_week=7, opens="10:00", closes="24:00")
    always = facility("station")
    root = parse(parking_table_publication([weekly, always], publisher=PUBLISHER, now=NOW))
    weekly_times, always_times = root.findall(".//prk:openingTimes", NS)

    spec = "prk:validity/com:validityTimeSpecification"
    assert text(weekly_times, "prk:validity/com:validityStatus") == "definedByValidityTimeSpec"
    assert text(weekly_times, f"{spec}/com:overallStartTime") == "2024-01-10T09:00:00Z"
    periods = weekly_times.findall(f"{spec}/com:validPeriod", NS)
    assert [
        (
            text(p, "com:recurringDayWeekMonthPeriod/com:applicableDay"),
            text(p, "com:recurringTimePeriodOfDay/com:startTimeOfPeriod"),
            text(p, "com:recurringTimePeriodOfDay/com:endTimeOfPeriod"),
        )
        for p in periods
    ] == [("monday", "07:00:00", "23:30:00"), ("sunday", "10:00:00", "24:00:00")]
    assert local_names(always_times) == ["openAllYear", "available24hours"]
    assert texts(always_times, "*") == ["true", "true"]


def test_names_are_utf8_multilingual_strings_in_the_publishers_language() -> None:
    f = facility("centrum")
    f.display_name = "Parkeergarage Stadhuisplein Café Noord"
    document = parking_table_publication([f], publisher=PUBLISHER, now=NOW)
    assert "Stadhuisplein Café".encode() in document
    name = parse(document).find(".//prk:parkingName/com:values/com:value", NS)
    assert (name.text, name.get("lang")) == ("Parkeergarage Stadhuisplein Café Noord", "nl")


# --- situations -------------------------------------------------------------------------------------


def situations(*incidents: ipb.Incident, now: datetime = NOW) -> Any:
    return parse(situation_publication(list(incidents), publisher=PUBLISHER, now=now))


def records_of(root: Any) -> list[Any]:
    return list(root.xpath("sit:situation/sit:situationRecord", namespaces=NS))


def test_an_incident_becomes_a_situation_with_its_record_and_location() -> None:
    root = situations(incident())
    situation = root.find("sit:situation", NS)
    assert situation.get("id") == "i-1"
    assert local_names(situation) == ["overallSeverity", "situationVersionTime", "headerInformation", "situationRecord"]
    assert text(situation, "sit:headerInformation/com:informationStatus") == "real"

    (record,) = records_of(root)
    assert (record.get(XSI_TYPE), record.get("id"), record.get("version")) == ("sit:Accident", "i-1", "4")
    assert local_names(record) == [
        "situationRecordCreationTime",
        "situationRecordVersionTime",
        "probabilityOfOccurrence",
        "severity",
        "validity",
        "generalPublicComment",
        "locationReference",
        "accidentType",
    ]
    assert text(record, "sit:situationRecordCreationTime") == "2025-05-01T07:30:00Z"
    assert text(record, "sit:situationRecordVersionTime") == "2025-05-01T07:55:00Z"
    assert text(record, "sit:probabilityOfOccurrence") == "certain"
    assert text(record, "sit:severity") == "high"
    assert text(record, "sit:validity/com:validityStatus") == "active"
    assert text(record, "sit:validity/com:validityTimeSpecification/com:overallStartTime") == "2025-05-01T07:30:00Z"
    comment = record.find("sit:generalPublicComment/sit:comment/com:values/com:value", NS)
    assert (comment.text, comment.get("lang")) == ("Aanrijding Hogering richting Stad", "nl")
    assert text(record, "sit:accidentType") == "collision"

    location = record.find("sit:locationReference", NS)
    assert location.get(XSI_TYPE) == "loc:PointLocation"
    assert text(location, "loc:pointByCoordinates/loc:pointCoordinates/loc:latitude") == "52.3702"
    assert text(location, "loc:pointByCoordinates/loc:pointCoordinates/loc:longitude") == "5.2147"
    along = location.findall("loc:pointAlongLinearElement", NS)
    assert [text(a, "loc:linearElement/loc:linearElementIdentifier") for a in along] == ["-4711#2", "-4711#2_1"]
    assert {a.find("loc:linearElement", NS).get(XSI_TYPE) for a in along} == {"loc:LinearElementByCode"}
    assert texts(location, ".//loc:linearElementReferenceModel") == ["SUMO", "SUMO"]
    assert texts(location, ".//loc:distanceAlongLinearElement/loc:distanceAlong") == ["42.5", "42.5"]


def test_closures_and_speed_limits_become_measures_caused_by_the_incident() -> None:
    i = incident()
    i.impact.closed_lanes.extend([0, 1])
    i.impact.speed_limit_kmh = 30
    primary, closure, speed = records_of(situations(i))

    assert text(primary, "sit:impact/sit:numberOfLanesRestricted") == "2"
    assert texts(primary, "sit:impact/sit:capacityRemaining") == []
    assert text(primary, "sit:trafficConstrictionType") == "lanesBlocked"

    assert (closure.get(XSI_TYPE), closure.get("id")) == ("sit:RoadOrCarriagewayOrLaneManagement", "i-1_closure")
    assert text(closure, "sit:roadOrCarriagewayOrLaneManagementType") == "laneClosures"
    assert text(closure, "sit:complianceOption") == "mandatory"
    assert local_names(closure)[-4:] == [
        "locationReference",
        "operatorActionStatus",
        "complianceOption",
        "roadOrCarriagewayOrLaneManagementType",
    ]
    for measure in (closure, speed):
        assert text(measure, "sit:cause/sit:causeType") == "accident"
        reference = measure.find("sit:cause/sit:managedCause/sit:objectReference", NS)
        assert dict(reference.attrib) == {"targetClass": "sit:SituationRecord", "id": "i-1", "version": "4"}
        assert measure.find("sit:generalPublicComment", NS) is None
    assert (speed.get(XSI_TYPE), speed.get("id")) == ("sit:SpeedManagement", "i-1_speed")
    assert text(speed, "sit:temporarySpeedLimit") == "30"


def test_a_full_closure_leaves_no_capacity_and_closes_the_road() -> None:
    i = incident(kind=ipb.INCIDENT_TYPE_ROAD_WORKS)
    i.impact.full_closure = True
    primary, closure = records_of(situations(i))
    assert text(primary, "sit:impact/sit:capacityRemaining") == "0"
    assert text(primary, "sit:operatorActionStatus") == "implemented"
    assert text(closure, "sit:roadOrCarriagewayOrLaneManagementType") == "roadClosed"
    assert text(closure, "sit:cause/sit:causeType") == "roadMaintenance"


@pytest.mark.parametrize(
    ("kind", "xsi_type", "element", "value"),
    [
        (ipb.INCIDENT_TYPE_COLLISION, "sit:Accident", "accidentType", "collision"),
        (ipb.INCIDENT_TYPE_BREAKDOWN, "sit:VehicleObstruction", "vehicleObstructionType", "brokenDownVehicle"),
        (ipb.INCIDENT_TYPE_HAZARD, "sit:GeneralObstruction", "obstructionType", "hazardsOnTheRoad"),
        (ipb.INCIDENT_TYPE_ROAD_WORKS, "sit:MaintenanceWorks", "roadMaintenanceType", "roadworks"),
        (
            ipb.INCIDENT_TYPE_POLICE_ACTION,
            "sit:AuthorityOperation",
            "authorityOperationType",
            "undefinedAuthorityActivity",
        ),
        (ipb.INCIDENT_TYPE_FIRE, "sit:EnvironmentalObstruction", "environmentalObstructionType", "seriousFire"),
        (ipb.INCIDENT_TYPE_MEDICAL, "sit:RoadsideAssistance", "roadsideAssistanceType", "emergencyServices"),
        (ipb.INCIDENT_TYPE_DEMONSTRATION, "sit:DisturbanceActivity", "disturbanceActivityType", "demonstration"),
        (ipb.INCIDENT_TYPE_PLANNED_EVENT, "sit:PublicEvent", "publicEventType", "unknown"),
        (ipb.INCIDENT_TYPE_WEATHER, "sit:PoorEnvironmentConditions", "poorEnvironmentType", "badWeather"),
        (ipb.INCIDENT_TYPE_OTHER, "sit:GenericSituationRecord", "genericSituationRecordName", "other"),
        (ipb.INCIDENT_TYPE_UNSPECIFIED, "sit:GenericSituationRecord", "genericSituationRecordName", "other"),
    ],
)
def test_the_record_class_follows_the_incident_type(kind: int, xsi_type: str, element: str, value: str) -> None:
    (record,) = records_of(situations(incident(kind=kind)))
    assert record.get(XSI_TYPE) == xsi_type
    # The class's own element comes last, after those of SituationRecord and its branch.
    assert local_names(record)[-1] == element
    assert text(record, f"sit:{element}") == value


@pytest.mark.parametrize("kind", list(ipb.IncidentType.values()))
def test_notes_and_reporter_are_never_published(kind: int) -> None:
    i = incident(kind=kind)
    i.notes = "Verdachte gevlucht richting Almere Haven, kenteken 12-ABC-3"
    i.reporter = "user:agent-7731"
    i.impact.full_closure, i.impact.speed_limit_kmh = True, 50
    document = situation_publication([i], publisher=PUBLISHER, now=NOW)

    for secret in ("Verdachte", "12-ABC-3", "agent-7731", "user:"):
        assert secret.encode() not in document
    published = " ".join(parse(document).itertext())
    assert "Verdachte" not in published and "agent-7731" not in published
    assert "Aanrijding Hogering" in published


def test_a_cleared_incident_ends_at_its_clearance() -> None:
    i = incident(state=ipb.INCIDENT_STATE_CLEARED)
    i.impact.expected_end_time.FromDatetime(NOW + timedelta(hours=1))
    (record,) = records_of(situations(i))
    assert text(record, "sit:validity/com:validityStatus") == "definedByValidityTimeSpec"
    spec = "sit:validity/com:validityTimeSpecification"
    assert text(record, f"{spec}/com:overallStartTime") == "2025-05-01T07:30:00Z"
    assert text(record, f"{spec}/com:overallEndTime") == "2025-05-01T07:55:00Z"


def test_a_planned_closure_is_planned_until_it_starts_and_cancelled_ends_before_it_began() -> None:
    i = incident(kind=ipb.INCIDENT_TYPE_PLANNED_EVENT, state=ipb.INCIDENT_STATE_CONFIRMED)
    i.impact.full_closure = True
    i.impact.expected_start_time.FromDatetime(NOW + timedelta(days=2))
    i.impact.expected_end_time.FromDatetime(NOW + timedelta(days=2, hours=6))
    spec = "sit:validity/com:validityTimeSpecification"

    for record in records_of(situations(i)):
        assert text(record, "sit:validity/com:validityStatus") == "planned"
        assert text(record, f"{spec}/com:overallStartTime") == "2025-05-03T08:00:00Z"
        assert text(record, f"{spec}/com:overallEndTime") == "2025-05-03T14:00:00Z"
    assert text(records_of(situations(i))[1], "sit:operatorActionStatus") == "approved"

    i.state = ipb.INCIDENT_STATE_CANCELLED
    for record in records_of(situations(i)):
        assert text(record, "sit:validity/com:validityStatus") == "definedByValidityTimeSpec"
        assert text(record, f"{spec}/com:overallStartTime") == "2025-05-01T07:55:00Z"
        assert text(record, f"{spec}/com:overallEndTime") == "2025-05-01T07:55:00Z"
        assert record.find("sit:operatorActionStatus", NS) is None


def test_an_active_incident_past_its_expected_end_is_overrunning() -> None:
    i = incident()
    i.impact.expected_end_time.FromDatetime(NOW - timedelta(minutes=1))
    (record,) = records_of(situations(i))
    assert local_names(record.find("sit:validity", NS)) == [
        "validityStatus",
        "overrunning",
        "validityTimeSpecification",
    ]
    assert text(record, "sit:validity/com:overrunning") == "true"


def test_a_reported_incident_is_probable() -> None:
    (record,) = records_of(situations(incident(state=ipb.INCIDENT_STATE_REPORTED)))
    assert text(record, "sit:probabilityOfOccurrence") == "probable"


def test_an_incident_only_on_the_network_or_only_in_wgs84_has_that_location() -> None:
    network_only = incident("net")
    network_only.ClearField("location")
    network_only.network_location.ClearField("lane_indices")
    wgs84_only = incident("wgs")
    wgs84_only.ClearField("network_location")
    on_network, in_wgs84 = (
        r.find("sit:locationReference", NS) for r in records_of(situations(network_only, wgs84_only))
    )

    assert local_names(on_network) == ["pointAlongLinearElement"]
    assert text(on_network, ".//loc:linearElementIdentifier") == "-4711#2"
    assert local_names(in_wgs84) == ["pointByCoordinates"]


@pytest.mark.parametrize("incidents", [[], [ipb.Incident()], [ipb.Incident(notes="geheim", reporter="x")]])
def test_no_or_nameless_incidents_give_an_empty_publication(incidents: list[ipb.Incident]) -> None:
    document = situation_publication(incidents, publisher=PUBLISHER, now=NOW)
    root = parse(document)
    assert local_names(root) == ["publicationTime", "publicationCreator"]
    assert b"geheim" not in document


def test_a_bare_incident_still_gives_a_complete_record() -> None:
    (record,) = records_of(situations(ipb.Incident(name="incidents/bare")))
    assert record.get(XSI_TYPE) == "sit:GenericSituationRecord"
    assert local_names(record) == [
        "situationRecordCreationTime",
        "situationRecordVersionTime",
        "probabilityOfOccurrence",
        "validity",
        "locationReference",
        "genericSituationRecordName",
    ]
    assert text(record, "sit:situationRecordCreationTime") == "2025-05-01T08:00:00Z"
    assert local_names(record.find("sit:locationReference", NS)) == []
