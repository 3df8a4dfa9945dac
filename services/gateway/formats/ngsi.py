"""NGSI-LD entities of the Smart Data Models (https://smartdatamodels.org): OffStreetParking
(dataModel.Parking) for facilities and Alert (dataModel.Alert) for incidents, so FIWARE context
brokers and city dashboards take our data as they take any other city's.

Two representations, as NGSI-LD defines them: normalized (each attribute a ``Property``,
``GeoProperty`` or ``Relationship`` object, live figures with ``observedAt``) and key-values (plain
values). Enumerated values are the models' own (OffStreetParking ``status``, ``category``,
``usageScenario``; Alert ``category``, ``subCategory``, ``severity``). Where we do not know a value
(a facility's tariff, permits, how it counts) the attribute is left out rather than guessed.

Incidents carry restricted fields (``notes``, ``reporter``); nothing here reads them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from almere.incidents.v1 import incidents_pb2 as ipb
from almere.parking.v1 import parking_pb2 as ppb
from almere.type.v1.geo_pb2 import LatLng
from google.protobuf.timestamp_pb2 import Timestamp

from services.gateway.formats.publisher import Publisher

CORE_CONTEXT = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld"
# The subjects' contexts, as the Smart Data Models catalogue lists them for each model.
PARKING_CONTEXT = "https://raw.githubusercontent.com/smart-data-models/dataModel.Parking/master/context.jsonld"
ALERT_CONTEXT = "https://raw.githubusercontent.com/smart-data-models/dataModel.Alert/master/context.jsonld"

# --- OffStreetParking ----------------------------------------------------------------------------

CATEGORY = {
    ppb.FACILITY_KIND_GARAGE: ["parkingGarage"],
    ppb.FACILITY_KIND_SURFACE_LOT: ["parkingLot"],
    ppb.FACILITY_KIND_PARK_AND_RIDE: ["parkingLot"],
    ppb.FACILITY_KIND_EVENT_PARKING: ["parkingLot"],
}
USAGE_SCENARIO = {
    ppb.FACILITY_KIND_PARK_AND_RIDE: ["parkAndRide"],
    ppb.FACILITY_KIND_EVENT_PARKING: ["eventParking"],
}
# The service's status names are DATEX II's, as are the model's.
STATUS = {
    ppb.OCCUPANCY_STATUS_SPACES_AVAILABLE: "spacesAvailable",
    ppb.OCCUPANCY_STATUS_ALMOST_FULL: "almostFull",
    ppb.OCCUPANCY_STATUS_FULL: "full",
}
# schema.org day abbreviations for openingHours, ISO day 1..7.
SCHEMA_ORG_DAYS = ("Mo", "Tu", "We", "Th", "Fr", "Sa", "Su")

# --- Alert ---------------------------------------------------------------------------------------

T = ipb.IncidentType
SUB_CATEGORY = {
    T.INCIDENT_TYPE_COLLISION: "carAccident",
    T.INCIDENT_TYPE_BREAKDOWN: "carStopped",
    T.INCIDENT_TYPE_HAZARD: "hazardOnRoad",
    T.INCIDENT_TYPE_ROAD_WORKS: "roadWorks",
}
SEVERITY = {
    ipb.SEVERITY_MINOR: "low",
    ipb.SEVERITY_MODERATE: "medium",
    ipb.SEVERITY_MAJOR: "high",
    ipb.SEVERITY_CRITICAL: "critical",
}
ENDED = frozenset({ipb.INCIDENT_STATE_CLEARED, ipb.INCIDENT_STATE_CANCELLED})


@dataclass(frozen=True, kw_only=True)
class _Attribute:
    value: Any
    kind: Literal["Property", "GeoProperty", "Relationship"] = "Property"
    # When a live value was measured (normalized form only).
    observed_at: str | None = None
    # A date-time value, typed as such in normalized form.
    date_time: bool = False


def offstreet_parking(facility: ppb.Facility, *, publisher: Publisher, key_values: bool) -> dict[str, Any]:
    """A facility with its current occupancy. On-street zones are the OnStreetParking model, not
    this one: they raise ValueError. A stale count or none at all gives no live figures, since
    key-values has no way to say they are old; the last measurement time stays."""
    if facility.kind == ppb.FACILITY_KIND_ON_STREET_ZONE:
        raise ValueError(f"{facility.name} is an on-street zone, not an OffStreetParking")
    occupancy = facility.occupancy
    closed = facility.state == ppb.FACILITY_STATE_CLOSED or occupancy.status == ppb.OCCUPANCY_STATUS_CLOSED
    counted = occupancy.HasField("source_time") and occupancy.status in STATUS
    attrs: dict[str, _Attribute] = {
        "name": _Attribute(value=facility.display_name),
        "category": _Attribute(value=CATEGORY.get(facility.kind, ["other"])),
        "allowedVehicleType": _Attribute(value=["car"]),
        "totalSpotNumber": _Attribute(value=facility.capacity),
        "openingHours": _Attribute(value=_opening_hours(facility.opening_hours)),
        "dataProvider": _Attribute(value=publisher.name),
    }
    if facility.HasField("location"):
        attrs["location"] = _Attribute(value=_point(facility.location), kind="GeoProperty")
    if facility.kind in USAGE_SCENARIO:
        attrs["usageScenario"] = _Attribute(value=USAGE_SCENARIO[facility.kind])
    measured = occupancy.source_time.ToJsonString() if occupancy.HasField("source_time") else None
    if closed:
        attrs["status"] = _Attribute(value=["closed"])
    elif counted and not occupancy.stale:
        # The model bounds occupied spots by the total and occupancy by 1; an over-full garage is full.
        occupied = min(occupancy.occupied_spaces, facility.capacity)
        attrs["status"] = _Attribute(value=[STATUS[occupancy.status]], observed_at=measured)
        if not occupancy.sharing.counts_withheld:  # a partner may share its status only
            attrs["availableSpotNumber"] = _Attribute(value=occupancy.free_spaces, observed_at=measured)
            attrs["occupiedSpotNumber"] = _Attribute(value=occupied, observed_at=measured)
            attrs["occupancy"] = _Attribute(value=min(occupancy.occupancy_ratio, 1.0), observed_at=measured)
    else:
        attrs["status"] = _Attribute(value=["open"])
    if measured is not None:
        attrs["observationDateTime"] = _Attribute(value=measured, date_time=True)
    _dates(attrs, created=facility.create_time, modified=facility.update_time)
    return _entity(
        entity_id=f"urn:ngsi-ld:OffStreetParking:{facility.name.removeprefix('facilities/')}",
        entity_type="OffStreetParking",
        context=PARKING_CONTEXT,
        attrs=attrs,
        key_values=key_values,
    )


def alert(incident: ipb.Incident, *, publisher: Publisher, key_values: bool) -> dict[str, Any]:
    """An incident as a traffic Alert (weather incidents as a weather Alert). Its validity runs
    from the expected start (or its report) to the expected end, or to when it ended."""
    weather = incident.type == T.INCIDENT_TYPE_WEATHER
    attrs: dict[str, _Attribute] = {
        "category": _Attribute(value="weather" if weather else "traffic"),
        "dateIssued": _Attribute(value=incident.create_time.ToJsonString(), date_time=True),
        "alertSource": _Attribute(
            value=f"urn:ngsi-ld:Organization:{publisher.country}:{publisher.national_identifier}", kind="Relationship"
        ),
        "dataProvider": _Attribute(value=publisher.name),
    }
    sub_category = SUB_CATEGORY.get(incident.type)
    if sub_category is None and incident.impact.full_closure and not weather:
        sub_category = "roadClosed"
    if sub_category is not None:
        attrs["subCategory"] = _Attribute(value=sub_category)
    if incident.severity in SEVERITY:
        attrs["severity"] = _Attribute(value=SEVERITY[incident.severity])
    if incident.title:
        attrs["description"] = _Attribute(value=incident.title)
    if incident.HasField("location"):
        attrs["location"] = _Attribute(value=_point(incident.location), kind="GeoProperty")
    impact = incident.impact
    start = impact.expected_start_time if impact.HasField("expected_start_time") else incident.create_time
    attrs["validFrom"] = _Attribute(value=start.ToJsonString(), date_time=True)
    if incident.state in ENDED:
        attrs["validTo"] = _Attribute(value=incident.update_time.ToJsonString(), date_time=True)
    elif impact.HasField("expected_end_time"):
        attrs["validTo"] = _Attribute(value=impact.expected_end_time.ToJsonString(), date_time=True)
    _dates(attrs, created=incident.create_time, modified=incident.update_time)
    return _entity(
        entity_id=f"urn:ngsi-ld:Alert:{incident.name.removeprefix('incidents/')}",
        entity_type="Alert",
        context=ALERT_CONTEXT,
        attrs=attrs,
        key_values=key_values,
    )


def _entity(
    *, entity_id: str, entity_type: str, context: str, attrs: dict[str, _Attribute], key_values: bool
) -> dict[str, Any]:
    entity: dict[str, Any] = {"id": entity_id, "type": entity_type}
    for name, attr in attrs.items():
        entity[name] = attr.value if key_values else _normalized(attr)
    entity["@context"] = [context, CORE_CONTEXT]
    return entity


def _normalized(attr: _Attribute) -> dict[str, Any]:
    if attr.kind == "Relationship":
        return {"type": "Relationship", "object": attr.value}
    value = {"@type": "DateTime", "@value": attr.value} if attr.date_time else attr.value
    out: dict[str, Any] = {"type": attr.kind, "value": value}
    if attr.observed_at is not None:
        out["observedAt"] = attr.observed_at
    return out


def _dates(attrs: dict[str, _Attribute], *, created: Timestamp, modified: Timestamp) -> None:
    if created.seconds:
        attrs["dateCreated"] = _Attribute(value=created.ToJsonString(), date_time=True)
    if modified.seconds:
        attrs["dateModified"] = _Attribute(value=modified.ToJsonString(), date_time=True)


def _point(location: LatLng) -> dict[str, Any]:
    """GeoJSON order: longitude first."""
    return {"type": "Point", "coordinates": [location.longitude, location.latitude]}


def _opening_hours(windows: Iterable[ppb.OpeningWindow]) -> str:
    """schema.org openingHours text ("Mo 07:00-23:00, Tu ..."); no windows means around the clock."""
    texts = [f"{SCHEMA_ORG_DAYS[w.day_of_week - 1]} {w.opens}-{w.closes}" for w in windows]
    return ", ".join(texts) or "Mo-Su 00:00-24:00"
