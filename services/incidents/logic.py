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
from services.common.terms import Access, Outcome

MAX_TITLE = 200
MAX_NOTES = 4000
MAX_REASON = 1000
MAX_CLOSURES = 200
MAX_DESCRIPTION = 2000

S = pb.IncidentState
OPEN_STATES = frozenset(
    {
        S.INCIDENT_STATE_UNVERIFIED,
        S.INCIDENT_STATE_REPORTED,
        S.INCIDENT_STATE_CONFIRMED,
        S.INCIDENT_STATE_ACTIVE,
        S.INCIDENT_STATE_CLEARING,
    }
)
# What the police make of a partner's report.
VERIFIED_STATES = frozenset({S.INCIDENT_STATE_CONFIRMED, S.INCIDENT_STATE_ACTIVE})
# The lifecycle. CLEARING may fall back to ACTIVE when the situation worsens; CANCELLED is for
# incidents withdrawn before they affected traffic.
TRANSITIONS: dict[int, frozenset[int]] = {
    S.INCIDENT_STATE_UNVERIFIED: frozenset({*VERIFIED_STATES, S.INCIDENT_STATE_REJECTED, S.INCIDENT_STATE_CANCELLED}),
    S.INCIDENT_STATE_REPORTED: frozenset(
        {S.INCIDENT_STATE_CONFIRMED, S.INCIDENT_STATE_ACTIVE, S.INCIDENT_STATE_CANCELLED}
    ),
    S.INCIDENT_STATE_CONFIRMED: frozenset({S.INCIDENT_STATE_ACTIVE, S.INCIDENT_STATE_CANCELLED}),
    S.INCIDENT_STATE_ACTIVE: frozenset({S.INCIDENT_STATE_CLEARING, S.INCIDENT_STATE_CLEARED}),
    S.INCIDENT_STATE_CLEARING: frozenset({S.INCIDENT_STATE_ACTIVE, S.INCIDENT_STATE_CLEARED}),
    S.INCIDENT_STATE_CLEARED: frozenset(),
    S.INCIDENT_STATE_CANCELLED: frozenset(),
    S.INCIDENT_STATE_REJECTED: frozenset(),
}
# What TransitionIncident moves to (UNVERIFIED is where partners' reports start, never a target).
TARGET_NAMES = "REPORTED, CONFIRMED, ACTIVE, CLEARING, CLEARED, CANCELLED, REJECTED"
UPDATABLE_FIELDS = frozenset({"type", "severity", "title", "location", "network_location", "impact", "notes"})

AGENCY_OF_ROLE = {
    Role.POLICE: pb.AGENCY_POLICE,
    Role.FIRE: pb.AGENCY_FIRE,
    Role.EMS: pb.AGENCY_EMS,
    Role.ENGINEER: pb.AGENCY_TRAFFIC_CONTROL,
    Role.PARTNER: pb.AGENCY_PARTNER,
}
REPORTERS = frozenset({*PUBLIC_SAFETY, Role.ENGINEER, Role.SIM, Role.PARTNER})
# Who edits incidents (UpdateIncident) and who moves them through their lifecycle: engineers any,
# public safety those of their own agency, the twin those it reported (authorize_change).
EDITORS = frozenset({*PUBLIC_SAFETY, Role.ENGINEER})
MOVERS = frozenset({*EDITORS, Role.SIM, Role.PARTNER})
# Who reads incidents besides the public: every caller, a partner its own reports only.
READERS = frozenset({*ANY_CALLER, Role.PARTNER})
# What a partner may report: what it sees on the street, not the authorities' own business.
PARTNER_TYPES = frozenset(pb.IncidentType.values()) - {
    pb.INCIDENT_TYPE_UNSPECIFIED,
    pb.INCIDENT_TYPE_POLICE_ACTION,
    pb.INCIDENT_TYPE_ROAD_WORKS,
    pb.INCIDENT_TYPE_PLANNED_EVENT,
}
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
    Role.PARTNER: "UNVERIFIED, until the police verify it",
}
OWN_AGENCY = dict.fromkeys(PUBLIC_SAFETY, "own agency's")
OWN_INCIDENTS = {
    **OWN_AGENCY,
    Role.POLICE: "own agency's; verify or reject partners' reports",
    Role.SIM: "those it reported",
    Role.PARTNER: "withdraw its own unverified report",
}


def state_name(state: int) -> str:
    return pb.IncidentState.Name(state).removeprefix("INCIDENT_STATE_")  # type: ignore[arg-type]


# --- roles ---------------------------------------------------------------------------------------


def partner_of(incident: pb.Incident) -> str:
    """The partner id of a partner's report ("" for any other incident)."""
    return incident.partner_report.partner.removeprefix("partners/")


def is_own_report(identity: Identity, incident: pb.Incident) -> bool:
    return identity.role is Role.PARTNER and partner_of(incident) == identity.subject


def is_pending(incident: pb.Incident) -> bool:
    """A partner's report the police never verified, whatever its state (waiting, rejected, withdrawn):
    public safety's and the partner's business only."""
    return bool(partner_of(incident)) and not incident.partner_report.HasField("verify_time")


def may_see(identity: Identity, incident: pb.Incident) -> bool:
    """Whether the caller may know of the incident at all: a partner its own reports only, the public
    what public_may_see, and a report the police never verified only public safety."""
    if identity.role is Role.PARTNER:
        return is_own_report(identity, incident)
    if identity.role is Role.PUBLIC:
        return public_may_see(incident) and not is_pending(incident)
    return not is_pending(incident) or identity.role in PUBLIC_SAFETY


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
    """Who may change an incident the caller may see (may_see is checked first)."""
    if is_pending(incident) or is_own_report(identity, incident):
        _authorize_report_change(identity, incident)
        return
    if identity.role in MANAGERS:
        return
    if identity.role is Role.POLICE and incident.reporting_agency == pb.AGENCY_PARTNER:
        return  # the police verified it: theirs now
    if identity.role in PUBLIC_SAFETY and AGENCY_OF_ROLE[identity.role] == incident.reporting_agency:
        return
    if identity.role is Role.SIM and incident.reporter == identity.caller:
        return
    raise PermissionDenied(f"{identity.role_name} may not change {incident.name}, reported by another agency")


def _authorize_report_change(identity: Identity, incident: pb.Incident) -> None:
    """A partner's report waiting for verification is the police's to verify, reject or edit; the
    partner may only withdraw it (check_partner_move). Once verified it is the authorities'."""
    if is_pending(incident) and identity.role is Role.POLICE:
        return
    if is_pending(incident) and is_own_report(identity, incident):
        return  # to withdraw it while it waits (check_partner_move); once over, the lifecycle says no
    if is_pending(incident):
        raise PermissionDenied(f"{incident.name} is a partner's report: only the police verify or reject it")
    raise PermissionDenied(f"{incident.name} was verified by the police: it is theirs to change now")


def check_partner_move(identity: Identity, target: int) -> None:
    if identity.role is Role.PARTNER and target != S.INCIDENT_STATE_CANCELLED:
        raise PermissionDenied("a partner may only withdraw its report (CANCELLED); the police verify or reject it")


def check_rejection(target: int, reason: str) -> None:
    if target == S.INCIDENT_STATE_REJECTED and not reason.strip():
        raise InvalidArgument("reason is required to reject a partner's report: the partner reads it")


def validate_partner_report(identity: Identity, incident: pb.Incident) -> None:
    """What a partner reports: a kind it may report, its words in partner_report.description, and no
    responders' fields."""
    if identity.role is not Role.PARTNER:
        if incident.HasField("partner_report"):
            raise InvalidArgument("partner_report is set from a partner's own report (role partner)")
        return
    if incident.type not in PARTNER_TYPES:
        name = pb.IncidentType.Name(incident.type) if incident.type in pb.IncidentType.values() else incident.type
        raise InvalidArgument(f"a partner does not report type {name}: police actions and works are the city's")
    if incident.notes:
        raise InvalidArgument("notes are the responders'; put what you saw in partner_report.description")
    description = incident.partner_report.description
    if not description.strip() or len(description) > MAX_DESCRIPTION:
        raise InvalidArgument(f"partner_report.description is required (at most {MAX_DESCRIPTION} characters)")


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
    Role.ENGINEER: "no notes or reporter of police actions; partners' reports once verified",
    **{
        r: "no notes or reporter; partners' reports once verified" for r in ANY_CALLER - PUBLIC_SAFETY - {Role.ENGINEER}
    },
    Role.PARTNER: "its own reports only, without police notes",
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
    they wrote (its notes, its history's reasons, a partner's description). Public safety always;
    engineers unless it is a police action; nobody else (a partner sees its own description, never
    the notes). The one rule of every read: Get, List, Watch and the history."""
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
        if not is_own_report(identity, incident):
            view.ClearField("reporter")
            view.partner_report.ClearField("description")
    return view


def shown(view: pb.Incident, access: Access | None) -> pb.Incident:
    """A visible() incident with its partner's parts withheld when the partner's agreement does not
    share its reports with the caller (marked, with the reason); `access` None: not a partner's
    report, or the caller's own."""
    if access is None or access.outcome not in (Outcome.WITHHELD, Outcome.REFUSED):
        return view
    out = pb.Incident()
    out.CopyFrom(view)  # a view may be the stored document itself
    out.partner_report.Clear()
    out.partner_report.withheld = True
    out.partner_report.withheld_reason = access.reason
    out.ClearField("reporter")  # the partner's own caller: who it is, withheld as well
    return out


def visible_entry(
    identity: Identity, incident: pb.Incident, entry: pb.IncidentHistoryEntry, *, partner_withheld: bool = False
) -> pb.IncidentHistoryEntry:
    """A history entry of `incident`, cut down in place to what this caller may see: without the
    actor and the reason (who changed it and why, like the incident's reporter and notes) unless
    sees_restricted; a partner's own entries likewise when its agreement withholds its reports."""
    partners_own = entry.actor_role.startswith(f"{Role.PARTNER}:")
    if not sees_restricted(identity, incident) or (partner_withheld and partners_own):
        entry.ClearField("actor")
        entry.ClearField("reason")
    return entry


# --- lifecycle -----------------------------------------------------------------------------------


def check_target(target: int) -> None:
    if target not in TRANSITIONS or target == S.INCIDENT_STATE_UNVERIFIED:
        raise InvalidArgument(f"state must be one of {TARGET_NAMES}")


def check_transition(current: int, target: int) -> None:
    check_target(target)
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
