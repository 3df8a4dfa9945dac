"""DATEX II v3 SituationPublication of the incident service's incidents: one situation per incident.

Each situation holds the incident's own record (its class from the incident type: sit:Accident,
sit:MaintenanceWorks, sit:PublicEvent ...) and, where its impact asks for them, the measures it
causes: a sit:RoadOrCarriagewayOrLaneManagement for a closure and a sit:SpeedManagement for a speed
limit, each naming the incident's record as its managed cause.

Choices:
- Only public fields are read: type, severity, state, title, location, network location, impact and
  the times. `notes` and `reporter` are restricted and never read, whoever built the message.
- Validity: a cleared or cancelled incident stays in the publication, definedByValidityTimeSpec with
  its overallEndTime at its last change (when it was cleared or cancelled), so readers learn it ended;
  one not yet started is `planned`; every other one `active` (overrunning when past its expected end).
- A reported, not yet verified incident is `probable`; all others `certain`.
- The network location is a point along linear elements of the city's SUMO network
  (linearElementReferenceModel "SUMO"): the edge, and each lane by its SUMO lane id ("<edge>_<index>",
  0 = rightmost). DATEX II lane numbers count from the inner edge of the road, which needs the edge's
  lane count the incident does not carry.
- An incident without a name has no id to publish and is left out.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from almere.incidents.v1 import incidents_pb2 as pb

from services.gateway.formats.datex2 import (
    COM,
    LOC,
    SIT,
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

NETWORK_MODEL = "SUMO"


@dataclass(frozen=True, kw_only=True)
class _RecordClass:
    """The v3 class of an incident's record and the value of its one required type element."""

    xsi_type: str
    # The abstract class between SituationRecord and this one, whose elements come first.
    branch: Literal["trafficElement", "operatorAction", "none"]
    element: str
    value: str
    # CauseTypeEnum value when this record causes a closure or speed limit.
    cause: str


_CLASSES = {
    pb.INCIDENT_TYPE_COLLISION: _RecordClass(
        xsi_type="sit:Accident", branch="trafficElement", element="accidentType", value="collision", cause="accident"
    ),
    pb.INCIDENT_TYPE_BREAKDOWN: _RecordClass(
        xsi_type="sit:VehicleObstruction",
        branch="trafficElement",
        element="vehicleObstructionType",
        value="brokenDownVehicle",
        cause="vehicleObstruction",
    ),
    pb.INCIDENT_TYPE_HAZARD: _RecordClass(
        xsi_type="sit:GeneralObstruction",
        branch="trafficElement",
        element="obstructionType",
        value="hazardsOnTheRoad",
        cause="obstruction",
    ),
    pb.INCIDENT_TYPE_ROAD_WORKS: _RecordClass(
        xsi_type="sit:MaintenanceWorks",
        branch="operatorAction",
        element="roadMaintenanceType",
        value="roadworks",
        cause="roadMaintenance",
    ),
    # What the police do is restricted: only that an authority is at work.
    pb.INCIDENT_TYPE_POLICE_ACTION: _RecordClass(
        xsi_type="sit:AuthorityOperation",
        branch="trafficElement",
        element="authorityOperationType",
        value="undefinedAuthorityActivity",
        cause="authorityOperation",
    ),
    pb.INCIDENT_TYPE_FIRE: _RecordClass(
        xsi_type="sit:EnvironmentalObstruction",
        branch="trafficElement",
        element="environmentalObstructionType",
        value="seriousFire",
        cause="environmentalObstruction",
    ),
    pb.INCIDENT_TYPE_MEDICAL: _RecordClass(
        xsi_type="sit:RoadsideAssistance",
        branch="operatorAction",
        element="roadsideAssistanceType",
        value="emergencyServices",
        cause="roadsideAssistance",
    ),
    pb.INCIDENT_TYPE_DEMONSTRATION: _RecordClass(
        xsi_type="sit:DisturbanceActivity",
        branch="trafficElement",
        element="disturbanceActivityType",
        value="demonstration",
        cause="disturbance",
    ),
    # The service does not say which kind of event (festival, match, market).
    pb.INCIDENT_TYPE_PLANNED_EVENT: _RecordClass(
        xsi_type="sit:PublicEvent",
        branch="trafficElement",
        element="publicEventType",
        value="unknown",
        cause="publicEvent",
    ),
    pb.INCIDENT_TYPE_WEATHER: _RecordClass(
        xsi_type="sit:PoorEnvironmentConditions",
        branch="trafficElement",
        element="poorEnvironmentType",
        value="badWeather",
        cause="poorEnvironment",
    ),
}
# OTHER and anything unknown.
_GENERIC = _RecordClass(
    xsi_type="sit:GenericSituationRecord",
    branch="none",
    element="genericSituationRecordName",
    value="other",
    cause="other",
)

_SEVERITY = {
    pb.SEVERITY_MINOR: "low",
    pb.SEVERITY_MODERATE: "medium",
    pb.SEVERITY_MAJOR: "high",
    pb.SEVERITY_CRITICAL: "highest",
}

# How far an operator action (road works, emergency services, closures) has come.
_ACTION_STATUS = {
    pb.INCIDENT_STATE_REPORTED: "requested",
    pb.INCIDENT_STATE_CONFIRMED: "approved",
    pb.INCIDENT_STATE_ACTIVE: "implemented",
    pb.INCIDENT_STATE_CLEARING: "beingTerminated",
}

_ENDED = (pb.INCIDENT_STATE_CLEARED, pb.INCIDENT_STATE_CANCELLED)


def situation_publication(incidents: Iterable[pb.Incident], *, publisher: Publisher, now: datetime) -> bytes:
    """The incidents as a SituationPublication; no incidents give one without situations."""
    root = payload("sit:SituationPublication", publisher=publisher, now=now)
    for incident in incidents:
        if resource_id(incident.name):
            _situation(root, incident, publisher=publisher, now=now)
    return to_bytes(root)


def _situation(root: Node, incident: pb.Incident, *, publisher: Publisher, now: datetime) -> None:
    incident_id = resource_id(incident.name)
    record_class = _CLASSES.get(incident.type, _GENERIC)
    situation = sub(root, SIT, "situation", attrs={"id": incident_id})
    if incident.severity in _SEVERITY:
        sub(situation, SIT, "overallSeverity", text=_SEVERITY[incident.severity])
    if incident.HasField("update_time"):
        sub(situation, SIT, "situationVersionTime", text=timestamp(from_timestamp(incident.update_time)))
    header = sub(situation, SIT, "headerInformation")
    sub(header, COM, "confidentiality", text="noRestriction")
    sub(header, COM, "informationStatus", text="real")

    record = _record(situation, incident, incident_id, xsi_type=record_class.xsi_type, publisher=publisher, now=now)
    if record_class.branch == "trafficElement":
        constriction = _constriction(incident.impact)
        if constriction:
            sub(record, SIT, "trafficConstrictionType", text=constriction)
    elif record_class.branch == "operatorAction":
        _action_status(record, incident)
    sub(record, SIT, record_class.element, text=record_class.value)

    impact = incident.impact
    if impact.full_closure or impact.closed_lanes:
        closure = _record(
            situation,
            incident,
            f"{incident_id}_closure",
            xsi_type="sit:RoadOrCarriagewayOrLaneManagement",
            publisher=publisher,
            now=now,
            cause=record_class.cause,
        )
        _network_management(closure, incident)
        management = "roadClosed" if impact.full_closure else "laneClosures"
        sub(closure, SIT, "roadOrCarriagewayOrLaneManagementType", text=management)
    if impact.speed_limit_kmh > 0:
        speed = _record(
            situation,
            incident,
            f"{incident_id}_speed",
            xsi_type="sit:SpeedManagement",
            publisher=publisher,
            now=now,
            cause=record_class.cause,
        )
        _network_management(speed, incident)
        sub(speed, SIT, "speedManagementType", text="speedRestrictionInOperation")
        sub(speed, SIT, "temporarySpeedLimit", text=number(impact.speed_limit_kmh, digits=1))


def _record(
    situation: Node,
    incident: pb.Incident,
    record_id: str,
    *,
    xsi_type: str,
    publisher: Publisher,
    now: datetime,
    cause: str | None = None,
) -> Node:
    """A situationRecord up to its SituationRecord elements. The incident's own record (no `cause`)
    carries the impact and the public title; a measure it causes names it as managed cause."""
    record = sub(
        situation, SIT, "situationRecord", xsi_type=xsi_type, attrs={"id": record_id, "version": _version(incident)}
    )
    created = from_timestamp(incident.create_time) if incident.HasField("create_time") else now
    changed = from_timestamp(incident.update_time) if incident.HasField("update_time") else created
    sub(record, SIT, "situationRecordCreationTime", text=timestamp(created))
    sub(record, SIT, "situationRecordVersionTime", text=timestamp(changed))
    probability = "probable" if incident.state == pb.INCIDENT_STATE_REPORTED else "certain"
    sub(record, SIT, "probabilityOfOccurrence", text=probability)
    if incident.severity in _SEVERITY:
        sub(record, SIT, "severity", text=_SEVERITY[incident.severity])
    _validity(record, incident, created=created, changed=changed, now=now)
    if cause is None:
        _impact(record, incident.impact)
    else:
        managed = sub(record, SIT, "cause")
        sub(managed, SIT, "causeType", text=cause)
        reference = sub(managed, SIT, "managedCause")
        sub(
            reference,
            SIT,
            "objectReference",
            attrs={
                "targetClass": "sit:SituationRecord",
                "id": resource_id(incident.name),
                "version": _version(incident),
            },
        )
    if cause is None and incident.title:
        comment = sub(record, SIT, "generalPublicComment")
        multilingual(comment, SIT, "comment", incident.title, lang=publisher.language)
        sub(comment, SIT, "commentType", text="description")
    _location(record, incident)
    return record


def _version(incident: pb.Incident) -> str:
    return str(incident.version)


def _validity(record: Node, incident: pb.Incident, *, created: datetime, changed: datetime, now: datetime) -> None:
    impact = incident.impact
    start = from_timestamp(impact.expected_start_time) if impact.HasField("expected_start_time") else created
    end = from_timestamp(impact.expected_end_time) if impact.HasField("expected_end_time") else None
    overrunning = False
    if incident.state in _ENDED:
        status, end = "definedByValidityTimeSpec", changed
        start = min(start, end)
    elif start > now:
        status = "planned"
    else:
        status = "active"
        overrunning = end is not None and end < now
    validity = sub(record, SIT, "validity")
    sub(validity, COM, "validityStatus", text=status)
    if overrunning:
        sub(validity, COM, "overrunning", text="true")
    spec = sub(validity, COM, "validityTimeSpecification")
    sub(spec, COM, "overallStartTime", text=timestamp(start))
    if end is not None:
        sub(spec, COM, "overallEndTime", text=timestamp(end))


def _impact(record: Node, impact: pb.Impact) -> None:
    """What is known of the capacity: none left when closed; how many lanes are closed."""
    if not (impact.full_closure or impact.closed_lanes):
        return
    node = sub(record, SIT, "impact")
    if impact.full_closure:
        sub(node, SIT, "capacityRemaining", text="0")
    if impact.closed_lanes:
        sub(node, SIT, "numberOfLanesRestricted", text=str(len(set(impact.closed_lanes))))


def _constriction(impact: pb.Impact) -> str | None:
    if impact.full_closure:
        return "roadBlocked"
    return "lanesBlocked" if impact.closed_lanes else None


def _action_status(record: Node, incident: pb.Incident) -> None:
    if incident.state in _ACTION_STATUS:
        sub(record, SIT, "operatorActionStatus", text=_ACTION_STATUS[incident.state])


def _network_management(record: Node, incident: pb.Incident) -> None:
    """The OperatorAction and NetworkManagement elements of a closure or speed limit: compulsory."""
    _action_status(record, incident)
    sub(record, SIT, "complianceOption", text="mandatory")


def _location(record: Node, incident: pb.Incident) -> None:
    """A point location: the WGS84 point and, where the incident is placed on the network, the same
    point along its edge and along each of its lanes, at the offset from the edge's start."""
    location = sub(record, SIT, "locationReference", xsi_type="loc:PointLocation")
    if incident.HasField("location"):
        point_by_coordinates(location, incident.location)
    network = incident.network_location
    if not network.edge_id:
        return
    lanes = [f"{network.edge_id}_{index}" for index in sorted(set(network.lane_indices))]
    for element_id in [network.edge_id, *lanes]:
        along = sub(location, LOC, "pointAlongLinearElement")
        sub(along, LOC, "directionRelativeAtPoint", text="aligned")
        linear = sub(along, LOC, "linearElement", xsi_type="loc:LinearElementByCode")
        sub(linear, LOC, "linearElementReferenceModel", text=NETWORK_MODEL)
        sub(linear, LOC, "linearElementIdentifier", text=element_id)
        distance = sub(along, LOC, "distanceAlongLinearElement", xsi_type="loc:DistanceFromLinearElementStart")
        sub(distance, LOC, "distanceAlong", text=number(network.position_meters, digits=2))
