"""Incident domain rules: who may do what, who sees what, the lifecycle, and validation.
No gRPC, no NATS, no database."""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime

from almere.incidents.v1 import incidents_pb2 as pb

from services.common.access import ANY_CALLER
from services.common.auth import PUBLIC_SAFETY, Identity, Role
from services.common.clock import from_timestamp
from services.common.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from services.common.geo import validate_lat_lng

MAX_TITLE = 200
MAX_NOTES = 4000
MAX_REASON = 1000
MAX_CLOSURES = 200

S = pb.IncidentState
OPEN_STATES = frozenset(
    {S.INCIDENT_STATE_REPORTED, S.INCIDENT_STATE_CONFIRMED, S.INCIDENT_STATE_ACTIVE, S.INCIDENT_STATE_CLEARING}
)
# The lifecycle. CLEARING may fall back to ACTIVE when the situation worsens; CANCELLED is for
# incidents withdrawn before they affected traffic.
TRANSITIONS: dict[int, frozenset[int]] = {
    S.INCIDENT_STATE_REPORTED: frozenset(
        {S.INCIDENT_STATE_CONFIRMED, S.INCIDENT_STATE_ACTIVE, S.INCIDENT_STATE_CANCELLED}
    ),
    S.INCIDENT_STATE_CONFIRMED: frozenset({S.INCIDENT_STATE_ACTIVE, S.INCIDENT_STATE_CANCELLED}),
    S.INCIDENT_STATE_ACTIVE: frozenset({S.INCIDENT_STATE_CLEARING, S.INCIDENT_STATE_CLEARED}),
    S.INCIDENT_STATE_CLEARING: frozenset({S.INCIDENT_STATE_ACTIVE, S.INCIDENT_STATE_CLEARED}),
    S.INCIDENT_STATE_CLEARED: frozenset(),
    S.INCIDENT_STATE_CANCELLED: frozenset(),
}
UPDATABLE_FIELDS = frozenset({"type", "severity", "title", "location", "network_location", "impact", "notes"})

AGENCY_OF_ROLE = {
    Role.POLICE: pb.AGENCY_POLICE,
    Role.FIRE: pb.AGENCY_FIRE,
    Role.EMS: pb.AGENCY_EMS,
    Role.ENGINEER: pb.AGENCY_TRAFFIC_CONTROL,
}
REPORTERS = frozenset({*PUBLIC_SAFETY, Role.ENGINEER, Role.SIM})
# Who edits incidents (UpdateIncident) and who moves them through their lifecycle: engineers any,
# public safety those of their own agency, the twin those it reported (authorize_change).
EDITORS = frozenset({*PUBLIC_SAFETY, Role.ENGINEER})
MOVERS = frozenset({*EDITORS, Role.SIM})
MANAGERS = frozenset({Role.ENGINEER})  # any incident, whoever reported it
PLANNERS = frozenset({Role.ENGINEER, Role.POLICE})
HISTORY_READERS = frozenset({*PUBLIC_SAFETY, Role.ENGINEER})
# The agencies the twin plays: a scenario's incident is reported by police, fire or ems, never as
# the traffic control room (that is the engineers').
FIELD_AGENCIES = frozenset(AGENCY_OF_ROLE[r] for r in PUBLIC_SAFETY)
# What narrows a role inside an RPC, for the role table (docs/roles.md).
REPORTS_AS = {
    **dict.fromkeys(PUBLIC_SAFETY, "as its agency"),
    Role.ENGINEER: "as traffic control",
    Role.SIM: "as police, fire or ems",
}
OWN_AGENCY = dict.fromkeys(PUBLIC_SAFETY, "own agency's")
OWN_INCIDENTS = {**OWN_AGENCY, Role.SIM: "those it reported"}


def state_name(state: int) -> str:
    return pb.IncidentState.Name(state).removeprefix("INCIDENT_STATE_")  # type: ignore[arg-type]


# --- roles ---------------------------------------------------------------------------------------


def reporting_agency(identity: Identity, requested: int) -> int:
    """The agency a report is filed under: the caller's own; the twin names the one its scenario has
    on the scene (police, fire or ems)."""
    if identity.role is not Role.SIM:
        return AGENCY_OF_ROLE[identity.role]
    if requested in FIELD_AGENCIES:
        return requested
    if requested in pb.Agency.values() and requested:
        raise PermissionDenied(f"role sim reports as police, fire or ems, not as {pb.Agency.Name(requested)}")  # type: ignore[arg-type]
    raise InvalidArgument("role sim must set reporting_agency to the agency it plays: police, fire or ems")


def authorize_change(identity: Identity, incident: pb.Incident) -> None:
    if identity.role in MANAGERS:
        return
    if identity.role in PUBLIC_SAFETY and AGENCY_OF_ROLE[identity.role] == incident.reporting_agency:
        return
    if identity.role is Role.SIM and incident.reporter == identity.caller:
        return
    raise PermissionDenied(f"{identity.role_name} may not change {incident.name}, reported by another agency")


def authorize_type_change(
    identity: Identity, *, incident: pb.Incident, patch: pb.Incident, paths: Iterable[str]
) -> None:
    """Whether an incident is a police action (whose notes only public safety may read) is the
    police's call: anyone else re-typing it could uncover or hide restricted notes."""
    action = pb.INCIDENT_TYPE_POLICE_ACTION
    if "type" in paths and action in (incident.type, patch.type) and identity.role is not Role.POLICE:
        raise PermissionDenied("only the police change whether an incident is a police action")


# What visible() leaves out, for the role table.
VISIBILITY = {
    Role.ENGINEER: "no notes or reporter of police actions",
    **{r: "no notes or reporter" for r in ANY_CALLER - PUBLIC_SAFETY - {Role.ENGINEER}},
}
OPEN_VISIBILITY = {**VISIBILITY, Role.PUBLIC: "confirmed and not over, no police actions; no notes or reporter"}


# What the public (the open-data feeds) may know of: incidents an agency confirmed and that are not
# over; never police actions. Enforced here, so a leaked `public` token shows no more than the feeds.
PUBLIC_STATES = (pb.INCIDENT_STATE_CONFIRMED, pb.INCIDENT_STATE_ACTIVE, pb.INCIDENT_STATE_CLEARING)
PUBLIC_TYPES = tuple(t for t in pb.IncidentType.values() if t not in (0, pb.INCIDENT_TYPE_POLICE_ACTION))


def public_may_see(incident: pb.Incident) -> bool:
    return incident.state in PUBLIC_STATES and incident.type in PUBLIC_TYPES


def narrowed_for(
    identity: Identity, *, states: tuple[int, ...], types: tuple[int, ...]
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """A List's state and type filters, cut to what the caller may see (the public: PUBLIC_*).
    An empty result means nothing, not everything: the caller checks."""
    if identity.role is not Role.PUBLIC:
        return states, types
    return (tuple(s for s in states or PUBLIC_STATES if s in PUBLIC_STATES),
            tuple(t for t in types or PUBLIC_TYPES if t in PUBLIC_TYPES))  # fmt: skip


def sees_restricted(identity: Identity, incident: pb.Incident) -> bool:
    """Whether this caller sees an incident's restricted parts: who reported and changed it, and what
    they wrote (its notes, its history's reasons). Public safety always; engineers unless it is a
    police action; nobody else. The one rule of every read: Get, List, Watch and the history."""
    if identity.role in PUBLIC_SAFETY:
        return True
    return identity.role is Role.ENGINEER and incident.type != pb.INCIDENT_TYPE_POLICE_ACTION


def visible(identity: Identity, incident: pb.Incident) -> pb.Incident:
    """The incident as this caller may see it: without notes and reporter unless sees_restricted.
    Public safety shares the stored document; anybody else gets a copy of their own."""
    if identity.role in PUBLIC_SAFETY:
        return incident
    view = pb.Incident()
    view.CopyFrom(incident)
    if not sees_restricted(identity, incident):
        view.ClearField("notes")
        view.ClearField("reporter")
    return view


def visible_entry(identity: Identity, incident: pb.Incident, entry: pb.IncidentHistoryEntry) -> pb.IncidentHistoryEntry:
    """A history entry of `incident`, cut down in place to what this caller may see: without the
    actor and the reason (who changed it and why, like the incident's reporter and notes) unless
    sees_restricted."""
    if not sees_restricted(identity, incident):
        entry.ClearField("actor")
        entry.ClearField("reason")
    return entry


# --- lifecycle -----------------------------------------------------------------------------------


def check_transition(current: int, target: int) -> None:
    if target not in TRANSITIONS:
        raise InvalidArgument("state must be one of REPORTED, CONFIRMED, ACTIVE, CLEARING, CLEARED, CANCELLED")
    if target not in TRANSITIONS[current]:
        allowed = ", ".join(sorted(state_name(s) for s in TRANSITIONS[current])) or "none (terminal)"
        raise FailedPrecondition(f"cannot go from {state_name(current)} to {state_name(target)}; allowed: {allowed}")


# --- validation ----------------------------------------------------------------------------------


def validate_incident(incident: pb.Incident) -> None:
    """Checks the caller-settable fields of a complete incident (after report or update)."""
    if incident.type == pb.INCIDENT_TYPE_UNSPECIFIED or incident.type not in pb.IncidentType.values():
        raise InvalidArgument(f"type {incident.type} is not an incident type (COLLISION, BREAKDOWN, HAZARD, ...)")
    if incident.severity not in pb.Severity.values() or incident.severity == pb.SEVERITY_UNSPECIFIED:
        raise InvalidArgument("severity must be MINOR, MODERATE, MAJOR or CRITICAL")
    if len(incident.title) > MAX_TITLE:
        raise InvalidArgument(f"title is longer than {MAX_TITLE} characters")
    if len(incident.notes) > MAX_NOTES:
        raise InvalidArgument(f"notes are {len(incident.notes)} characters; at most {MAX_NOTES}")
    if incident.HasField("location"):
        validate_lat_lng(incident.location.latitude, incident.location.longitude, "location")
    elif not incident.network_location.edge_id:
        raise InvalidArgument("a location is required: location (WGS84) or network_location.edge_id")
    loc = incident.network_location
    if len(loc.edge_id) > 128:
        raise InvalidArgument("network_location.edge_id is longer than 128 characters")
    if not math.isfinite(loc.position_meters) or loc.position_meters < 0:
        raise InvalidArgument("network_location.position_meters must be a non-negative number")
    _check_lanes(loc.lane_indices, "network_location.lane_indices")
    validate_impact(incident.impact, "impact")


def validate_impact(impact: pb.Impact, field: str) -> None:
    _check_lanes(impact.closed_lanes, f"{field}.closed_lanes")
    if impact.speed_limit_kmh and not 5 <= impact.speed_limit_kmh <= 130:
        raise InvalidArgument(f"{field}.speed_limit_kmh must be 0 (unchanged) or between 5 and 130")
    start = end = None
    if impact.HasField("expected_start_time"):
        start = from_timestamp(impact.expected_start_time, f"{field}.expected_start_time")
    if impact.HasField("expected_end_time"):
        end = from_timestamp(impact.expected_end_time, f"{field}.expected_end_time")
    if start is not None and end is not None and end <= start:
        raise InvalidArgument(f"{field}.expected_end_time must be after expected_start_time")


def _check_lanes(lanes: Iterable[int], field: str) -> None:
    values = list(lanes)
    if any(i < 0 or i > 31 for i in values) or len(set(values)) != len(values):
        raise InvalidArgument(f"{field} must be distinct lane indices from 0 (rightmost)")


def check_lanes_exist(incident: pb.Incident, lane_count: int) -> None:
    """Lanes named by the incident must exist on its edge."""
    edge = incident.network_location.edge_id
    for field, lanes in (
        ("network_location.lane_indices", incident.network_location.lane_indices),
        ("impact.closed_lanes", incident.impact.closed_lanes),
    ):
        missing = [i for i in lanes if i >= lane_count]
        if missing:
            raise InvalidArgument(f"{field}: edge {edge!r} has {lane_count} lane(s); lane {missing[0]} does not exist")


def validate_closure(closure: pb.ScheduledClosure, index: int, now: datetime) -> None:
    field = f"closures[{index}]"
    impact = closure.impact
    if not (impact.HasField("expected_start_time") and impact.HasField("expected_end_time")):
        raise InvalidArgument(f"{field}.impact needs expected_start_time and expected_end_time")
    validate_impact(impact, f"{field}.impact")
    if from_timestamp(impact.expected_end_time) <= now:
        raise InvalidArgument(f"{field} is already over")
