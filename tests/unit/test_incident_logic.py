"""Unit tests of the incident domain rules (services/incidents/logic.py) and of placing incidents on
the road network (services/incidents/locate.py). No gRPC, no NATS, no database."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from almere.incidents.v1 import incidents_pb2 as pb
from almere.type.v1 import geo_pb2
from hypothesis import given
from hypothesis import strategies as st

from libs.geo import haversine_m
from services.common.auth import Identity, Role
from services.common.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from services.common.network import RoadNetwork
from services.incidents import logic
from services.incidents.locate import locate

S = pb.IncidentState
REPORTED, CONFIRMED, ACTIVE = S.INCIDENT_STATE_REPORTED, S.INCIDENT_STATE_CONFIRMED, S.INCIDENT_STATE_ACTIVE
CLEARING, CLEARED, CANCELLED = S.INCIDENT_STATE_CLEARING, S.INCIDENT_STATE_CLEARED, S.INCIDENT_STATE_CANCELLED
UNVERIFIED, REJECTED = S.INCIDENT_STATE_UNVERIFIED, S.INCIDENT_STATE_REJECTED
# What a transition may move to (a partner's report starts UNVERIFIED; nothing moves back to it).
STATES = [REPORTED, CONFIRMED, ACTIVE, CLEARING, CLEARED, CANCELLED, REJECTED]
ALLOWED = {
    (UNVERIFIED, CONFIRMED),
    (UNVERIFIED, ACTIVE),
    (UNVERIFIED, REJECTED),
    (UNVERIFIED, CANCELLED),
    (REPORTED, CONFIRMED),
    (REPORTED, ACTIVE),
    (REPORTED, CANCELLED),
    (CONFIRMED, ACTIVE),
    (CONFIRMED, CANCELLED),
    (ACTIVE, CLEARING),
    (ACTIVE, CLEARED),
    (CLEARING, ACTIVE),
    (CLEARING, CLEARED),
}
NOW = datetime(2025, 6, 2, 12, 0, tzinfo=UTC)


def who(role: Role) -> Identity:
    return Identity(f"test-{role}", role, "op-a" if role is Role.OPERATOR else None)


def incident(**fields: object) -> pb.Incident:
    """A valid incident; keyword arguments replace its fields."""
    defaults: dict[str, object] = {
        "type": pb.INCIDENT_TYPE_COLLISION,
        "severity": pb.SEVERITY_MAJOR,
        "title": "Collision on Hogering northbound",
        "location": geo_pb2.LatLng(latitude=52.3742, longitude=5.2117),
        "network_location": pb.NetworkLocation(edge_id="ring-w-n", lane_indices=[0], position_meters=12.5),
        "impact": pb.Impact(closed_lanes=[0], speed_limit_kmh=30),
    }
    return pb.Incident(**(defaults | fields))  # type: ignore[arg-type]


def edge(edge_id: str, **fields: object) -> pb.Incident:
    return incident(network_location=pb.NetworkLocation(edge_id=edge_id, **fields))  # type: ignore[arg-type]


# --- lifecycle -----------------------------------------------------------------------------------


def test_transition_table_is_exactly_the_documented_lifecycle() -> None:
    assert {(a, b) for a, targets in logic.TRANSITIONS.items() for b in targets} == ALLOWED
    assert set(logic.TRANSITIONS) == {*STATES, UNVERIFIED}
    # CANCELLED is for incidents withdrawn before they affected traffic.
    assert {s for s, targets in logic.TRANSITIONS.items() if CANCELLED in targets} == {UNVERIFIED, REPORTED, CONFIRMED}
    # Only a partner's report awaiting the police is rejected.
    assert {s for s, targets in logic.TRANSITIONS.items() if REJECTED in targets} == {UNVERIFIED}


@pytest.mark.parametrize(("current", "target"), sorted(ALLOWED))
def test_allowed_transitions_pass(current: int, target: int) -> None:
    logic.check_transition(current, target)


@pytest.mark.parametrize(
    ("current", "target", "allowed"),
    [
        (REPORTED, CLEARED, "ACTIVE, CANCELLED, CONFIRMED"),
        (REPORTED, REPORTED, "ACTIVE, CANCELLED, CONFIRMED"),
        (CONFIRMED, CLEARING, "ACTIVE, CANCELLED"),
        (ACTIVE, CANCELLED, "CLEARED, CLEARING"),
        (ACTIVE, REPORTED, "CLEARED, CLEARING"),
        (CLEARING, CANCELLED, "ACTIVE, CLEARED"),
    ],
)
def test_disallowed_transitions_name_both_states_and_allowed_targets(current: int, target: int, allowed: str) -> None:
    with pytest.raises(FailedPrecondition) as err:
        logic.check_transition(current, target)
    from_name, to_name = logic.state_name(current), logic.state_name(target)
    assert err.value.message == f"cannot go from {from_name} to {to_name}; allowed: {allowed}"


@pytest.mark.parametrize("terminal", [CLEARED, CANCELLED, REJECTED])
@pytest.mark.parametrize("target", STATES)
def test_terminal_states_allow_nothing(terminal: int, target: int) -> None:
    with pytest.raises(FailedPrecondition, match=r"allowed: none \(terminal\)$"):
        logic.check_transition(terminal, target)


@pytest.mark.parametrize("target", [S.INCIDENT_STATE_UNSPECIFIED, 7, 99, -1])
def test_unknown_target_state_is_invalid_argument(target: int) -> None:
    with pytest.raises(InvalidArgument, match="state must be one of REPORTED, CONFIRMED"):
        logic.check_transition(REPORTED, target)


@given(st.sampled_from([REPORTED, UNVERIFIED]), st.lists(st.integers(min_value=0, max_value=5), max_size=40))
def test_random_walks_respect_the_lifecycle(start: int, choices: list[int]) -> None:
    state, path = start, [start]
    for choice in choices:
        targets = sorted(logic.TRANSITIONS[state])
        if not targets:  # terminal: nothing may follow
            for target in STATES:
                with pytest.raises(FailedPrecondition):
                    logic.check_transition(state, target)
            break
        target = targets[choice % len(targets)]
        logic.check_transition(state, target)
        state = target
        path.append(state)
    if not logic.TRANSITIONS[state]:
        assert state in (CLEARED, CANCELLED, REJECTED)
    assert all(s in logic.OPEN_STATES for s in path[:-1])
    assert UNVERIFIED not in path[1:], "nothing goes back to waiting for verification"
    if CANCELLED in path:
        assert path[-2] in (UNVERIFIED, REPORTED, CONFIRMED)
        assert ACTIVE not in path and CLEARING not in path


# --- roles ---------------------------------------------------------------------------------------

P, F, E, T = pb.AGENCY_POLICE, pb.AGENCY_FIRE, pb.AGENCY_EMS, pb.AGENCY_TRAFFIC_CONTROL
OWN_AGENCY = {Role.POLICE: P, Role.FIRE: F, Role.EMS: E}


@pytest.mark.parametrize(
    ("role", "requested", "agency"),
    [
        (Role.POLICE, 0, P),
        (Role.POLICE, F, P),
        (Role.FIRE, 0, F),
        (Role.FIRE, E, F),
        (Role.EMS, P, E),
        (Role.ENGINEER, 0, T),
        (Role.ENGINEER, P, T),
        (Role.SIM, F, F),
        (Role.SIM, P, P),
        (Role.SIM, E, E),
    ],
)
def test_reporting_agency_is_the_callers_own_or_the_one_the_twin_plays(role: Role, requested: int, agency: int) -> None:
    assert logic.reporting_agency(who(role), requested) == agency


def test_the_twin_plays_police_fire_or_ems_and_must_say_which() -> None:
    with pytest.raises(PermissionDenied, match="not as AGENCY_TRAFFIC_CONTROL"):
        logic.reporting_agency(who(Role.SIM), T)
    for requested in (0, 99):
        with pytest.raises(InvalidArgument, match="must set reporting_agency to the agency it plays"):
            logic.reporting_agency(who(Role.SIM), requested)


@pytest.mark.parametrize("reporter", ["test-sim", "police-unit-7"])
@pytest.mark.parametrize("agency", [P, F, E, T])
@pytest.mark.parametrize("role", list(Role))
def test_authorize_change(role: Role, agency: int, reporter: str) -> None:
    """Engineers change any incident, public safety its own agency's, the twin those it reported."""
    target = incident(name="incidents/i-1", reporting_agency=agency, reporter=reporter)
    if role is Role.ENGINEER or OWN_AGENCY.get(role) == agency or (role is Role.SIM and reporter == "test-sim"):
        logic.authorize_change(who(role), target)
    else:
        with pytest.raises(PermissionDenied, match="may not change incidents/i-1"):
            logic.authorize_change(who(role), target)


@pytest.mark.parametrize("kind", [pb.INCIDENT_TYPE_COLLISION, pb.INCIDENT_TYPE_POLICE_ACTION])
@pytest.mark.parametrize("role", list(Role))
def test_visible(role: Role, kind: int) -> None:
    original = incident(type=kind, notes="suspect fled north", reporter="police-unit-7", name="incidents/i-1")
    snapshot = pb.Incident()
    snapshot.CopyFrom(original)
    view = logic.visible(who(role), original)
    assert original == snapshot
    public_safety = role in (Role.POLICE, Role.FIRE, Role.EMS)
    sees_notes = public_safety or (role is Role.ENGINEER and kind != pb.INCIDENT_TYPE_POLICE_ACTION)
    assert view.notes == ("suspect fled north" if sees_notes else "")
    assert view.reporter == ("police-unit-7" if sees_notes else "")  # who: as restricted as what
    for field in ("name", "type", "severity", "title", "location", "network_location", "impact"):
        assert getattr(view, field) == getattr(snapshot, field), field
    if not public_safety:
        view.title = "changed"
        assert original.title == snapshot.title


# --- validation ----------------------------------------------------------------------------------


def test_valid_incident_passes() -> None:
    logic.validate_incident(incident())
    logic.validate_incident(incident(notes="n" * 4000, title="t" * 200))
    logic.validate_incident(incident(location=None))
    logic.validate_incident(incident(network_location=None))
    for speed in (0, 5, 130):
        logic.validate_incident(incident(impact=pb.Impact(speed_limit_kmh=speed)))


def _times(start: datetime, end: datetime) -> pb.Impact:
    impact = pb.Impact()
    impact.expected_start_time.FromDatetime(start)
    impact.expected_end_time.FromDatetime(end)
    return impact


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (incident(type=pb.INCIDENT_TYPE_UNSPECIFIED), "type 0 is not an incident type"),
        (incident(type=42), "type 42 is not an incident type"),
        (incident(severity=pb.SEVERITY_UNSPECIFIED), "severity must be"),
        (incident(severity=9), "severity must be"),
        (incident(title="t" * 201), "title is longer than 200"),
        (incident(notes="n" * 4001), "notes are 4001 characters; at most 4000"),
        (incident(location=None, network_location=None), "a location is required"),
        (incident(location=geo_pb2.LatLng(latitude=91, longitude=5.2)), "location must have latitude"),
        (incident(location=geo_pb2.LatLng(latitude=math.nan, longitude=5.2)), "location must have latitude"),
        (incident(network_location=pb.NetworkLocation(position_meters=-1)), "network_location.position_meters"),
        (incident(network_location=pb.NetworkLocation(lane_indices=[0, 0])), "network_location.lane_indices"),
        (incident(network_location=pb.NetworkLocation(lane_indices=[-1])), "network_location.lane_indices"),
        (incident(impact=pb.Impact(closed_lanes=[1, 1])), "impact.closed_lanes"),
        (incident(impact=pb.Impact(closed_lanes=[-2])), "impact.closed_lanes"),
        (incident(impact=pb.Impact(speed_limit_kmh=3)), "impact.speed_limit_kmh"),
        (incident(impact=pb.Impact(speed_limit_kmh=200)), "impact.speed_limit_kmh"),
        (incident(impact=_times(NOW, NOW)), "impact.expected_end_time must be after"),
        (incident(impact=_times(NOW, NOW - timedelta(hours=1))), "impact.expected_end_time must be after"),
    ],
)
def test_invalid_incidents(bad: pb.Incident, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        logic.validate_incident(bad)


def test_check_lanes_exist_names_the_edge_and_the_missing_lane() -> None:
    logic.check_lanes_exist(edge("e1", lane_indices=[0, 1]), 2)
    with pytest.raises(InvalidArgument, match=r"^network_location.lane_indices: edge 'e1' has 2 lane\(s\); lane 2 "):
        logic.check_lanes_exist(edge("e1", lane_indices=[0, 2]), 2)
    closing = edge("e1")
    closing.impact.closed_lanes[:] = [1, 3]
    with pytest.raises(InvalidArgument, match=r"^impact.closed_lanes: edge 'e1' has 2 lane\(s\); lane 3 does not"):
        logic.check_lanes_exist(closing, 2)


def test_validate_closure() -> None:
    hours = [NOW + timedelta(hours=h) for h in range(-3, 3)]
    logic.validate_closure(pb.ScheduledClosure(impact=_times(NOW, hours[5])), 0, NOW)
    only_end = pb.ScheduledClosure(impact=_times(NOW, hours[5]))
    only_end.impact.ClearField("expected_start_time")
    for index, closure, message in [
        (3, only_end, r"^closures\[3\]\.impact needs expected_start_time and expected_end_time$"),
        (1, pb.ScheduledClosure(), r"^closures\[1\]\.impact needs expected_start_time"),
        (2, pb.ScheduledClosure(impact=_times(hours[0], NOW)), r"^closures\[2\] is already over$"),
        (0, pb.ScheduledClosure(impact=_times(hours[5], hours[4])), r"^closures\[0\]\.impact\.expected_end_time must"),
    ]:
        with pytest.raises(InvalidArgument, match=message):
            logic.validate_closure(closure, index, NOW)


# --- locate --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> RoadNetwork:
    from sim.named_networks import build_network

    return RoadNetwork(build_network("centrum-mini", tmp_path_factory.mktemp("net")))


def at(lat: float, lng: float) -> pb.Incident:
    return incident(location=geo_pb2.LatLng(latitude=lat, longitude=lng), network_location=None, impact=None)


def test_locate_snaps_a_point_to_the_nearest_drivable_lane(network: RoadNetwork) -> None:
    point = at(52.3742, 5.2117)
    locate(point, network)
    loc = point.network_location
    assert (loc.edge_id, network.lane_count("ring-w-n")) == ("ring-w-n", 2)
    assert loc.snapped and 0 <= loc.snap_distance_meters < 5
    assert len(loc.lane_indices) == 1 and loc.lane_indices[0] in (0, 1)
    assert 0 < loc.position_meters <= network.edge_length("ring-w-n")
    assert (point.location.latitude, point.location.longitude) == (52.3742, 5.2117)


def test_locate_fills_in_coordinates_for_an_edge_only_location(network: RoadNetwork) -> None:
    edge_only = edge("ring-w-n", lane_indices=[1], position_meters=100, snapped=True, snap_distance_meters=3.0)
    edge_only.ClearField("location")
    locate(edge_only, network)
    assert edge_only.HasField("location")
    lat, lng = network.lat_lng_at("ring-w-n", 100)
    assert haversine_m(edge_only.location.latitude, edge_only.location.longitude, lat, lng) < 0.01
    assert haversine_m(lat, lng, 52.3700, 5.2080) < 150  # 100 m from ring-west, where the edge starts
    loc = edge_only.network_location
    assert (loc.edge_id, list(loc.lane_indices), loc.position_meters) == ("ring-w-n", [1], 100)
    assert not loc.snapped and loc.snap_distance_meters == 0


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (edge("no-such-edge"), "edge 'no-such-edge' is not in the road network"),
        (edge("ring-w-n", position_meters=5000), r"position_meters 5000.0 is beyond the end of edge 'ring-w-n'"),
        (edge("ring-w-n", lane_indices=[2]), "network_location.lane_indices: edge 'ring-w-n' has 2 .* lane 2 does not"),
        (incident(network_location=None, impact=pb.Impact(closed_lanes=[2])), "impact.closed_lanes: edge 'ring-w-n'"),
    ],
)
def test_locate_rejects_what_the_network_lacks(network: RoadNetwork, bad: pb.Incident, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        locate(bad, network)


def test_locate_needs_a_drivable_road_nearby(network: RoadNetwork) -> None:
    with pytest.raises(InvalidArgument, match=r"^no drivable road within 100 m of 52\.000000, 5\.000000$"):
        locate(at(52.0, 5.0), network)
    # 50 m along the promenade the nearest drivable lane is a spoke ~50 m away; at 100 m there is none in reach.
    point = at(*network.lat_lng_at("promenade", 50))
    locate(point, network)
    assert point.network_location.edge_id != "promenade"
    assert point.network_location.snap_distance_meters > 10
    with pytest.raises(InvalidArgument, match="no drivable road"):
        locate(at(*network.lat_lng_at("promenade", 100)), network)


def test_locate_without_a_network_changes_nothing() -> None:
    for given_incident in (at(52.0, 5.0), edge("nowhere")):
        before = pb.Incident()
        before.CopyFrom(given_incident)
        locate(given_incident, None)
        assert given_incident == before


# --- partners' reports ---------------------------------------------------------------------------


def _report(state: int, *, verified: bool = False) -> pb.Incident:
    report = pb.PartnerReport(partner="partners/firm-a", description="what we saw")
    if verified:
        report.verify_time.FromDatetime(NOW)
    return incident(
        state=state,
        notes="police notes",
        reporter="firm-a-desk",
        reporting_agency=pb.AGENCY_PARTNER,
        partner_report=report,
    )


FIRM_A = Identity("firm-a-desk", Role.PARTNER, "firm-a")
FIRM_B = Identity("firm-b-desk", Role.PARTNER, "firm-b")


@pytest.mark.parametrize("state", [UNVERIFIED, REJECTED, CANCELLED])  # CANCELLED: withdrawn before verified
def test_a_pending_report_is_public_safetys_and_the_partners_only(state: int) -> None:
    pending = _report(state)
    seeing = {
        r for r in Role if r not in (Role.PARTNER, Role.OPERATOR, Role.SERVICE) and logic.may_see(who(r), pending)
    }
    assert seeing == {Role.POLICE, Role.FIRE, Role.EMS}
    assert logic.may_see(FIRM_A, pending) and not logic.may_see(FIRM_B, pending)


def test_a_partner_sees_its_own_words_never_the_police_notes_nor_other_partners_reports() -> None:
    verified = _report(ACTIVE, verified=True)
    own = logic.visible(FIRM_A, verified)
    assert (own.notes, own.reporter, own.partner_report.description) == ("", "firm-a-desk", "what we saw")
    assert not logic.may_see(FIRM_B, verified)
    assert not logic.may_see(FIRM_A, incident(state=ACTIVE)), "a partner reads its own reports only"
    optimizer = logic.visible(who(Role.OPTIMIZER), verified)
    assert (optimizer.partner_report.partner, optimizer.partner_report.description) == ("partners/firm-a", "")


def test_only_the_police_decide_on_a_pending_report_and_the_partner_only_withdraws() -> None:
    pending = _report(UNVERIFIED)
    logic.authorize_change(who(Role.POLICE), pending)
    logic.authorize_change(FIRM_A, pending)
    for role in (Role.ENGINEER, Role.FIRE, Role.EMS):
        with pytest.raises(PermissionDenied, match="only the police verify or reject it"):
            logic.authorize_change(who(role), pending)
    with pytest.raises(PermissionDenied, match="may only withdraw"):
        logic.check_partner_move(FIRM_A, CONFIRMED)
    logic.check_partner_move(FIRM_A, CANCELLED)
    with pytest.raises(PermissionDenied, match="theirs to change now"):
        logic.authorize_change(FIRM_A, _report(ACTIVE, verified=True))
    logic.authorize_change(who(Role.POLICE), _report(ACTIVE, verified=True))
    with pytest.raises(InvalidArgument, match="reason is required"):
        logic.check_rejection(REJECTED, "  ")
