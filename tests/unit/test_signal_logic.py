"""Unit tests of the signal-timing rules (services/signals/logic.py) against the real links and foe
lists of the centrum-mini network's traffic lights. No gRPC, no NATS, no database."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from almere.signals.v1 import signals_pb2 as pb
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from services.common.auth import Identity, Role
from services.common.errors import InvalidArgument, PermissionDenied
from services.signals import logic
from services.signals.logic import CycleBounds, decide, green_phase_for, validate_plan
from services.signals.network_import import read_lights

NOW = datetime(2025, 6, 2, 12, 0, tzinfo=UTC)
BOUNDS = CycleBounds()
INTERSECTIONS = ("ring-east", "ring-west", "stadhuisplein")
# Our own reading of the safety rules, independent of the module's constants and helpers.
GREENS, YELLOWS = "Gg", "yY"
MIN_YELLOW, MIN_GREEN = 3.0, 5.0

Links = list[pb.SignalLink]


@dataclass(frozen=True)
class Light:
    links: Links
    plan: pb.Plan


@pytest.fixture(scope="module")
def net_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sim.named_networks import build_network

    return build_network("centrum-mini", tmp_path_factory.mktemp("net"))


@pytest.fixture(scope="module")
def lights(net_file: Path) -> dict[str, Light]:
    imported = read_lights(net_file)
    return {light.intersection_id: Light(list(light.intersection.links), light.plan) for light in imported}


# --- an independent safety checker ---------------------------------------------------------------


def shortest(phase: pb.Phase, plan: pb.Plan) -> float:
    if plan.type == pb.PLAN_TYPE_ACTUATED and phase.min_duration > 0:
        return phase.min_duration
    return phase.duration


def violations(links: Links, plan: pb.Plan, bounds: CycleBounds = BOUNDS) -> list[str]:
    """Every safety or timing rule the plan breaks, in plain words (empty: the plan is safe)."""
    found: list[str] = []
    phases = list(plan.phases)
    m = len(phases)
    foes = {link.index: set(link.foes) for link in links}
    for i, phase in enumerate(phases):
        greens = {k for k, c in enumerate(phase.state) if c == "G"}
        found += [f"phase {i}: foes {a} and {b} both G" for a in greens for b in foes.get(a, ()) if b in greens]
    for k in range(len(links)):
        column = [p.state[k] for p in phases]
        for i in range(m):
            before, now = column[i - 1], column[i]
            if before in GREENS and now not in GREENS:
                if now not in YELLOWS:
                    found.append(f"phase {i}: link {k} goes from {before!r} to {now!r} without yellow")
                    continue
                run = 0.0
                for step in range(m):
                    if column[(i + step) % m] not in YELLOWS:
                        break
                    run += shortest(phases[(i + step) % m], plan)
                if run < MIN_YELLOW:
                    found.append(f"phase {i}: link {k} has {run} s of yellow")
            if now in GREENS and before not in GREENS:
                run = 0.0
                for step in range(m):
                    if column[(i + step) % m] not in GREENS:
                        break
                    run += shortest(phases[(i + step) % m], plan)
                if run < MIN_GREEN:
                    found.append(f"phase {i}: link {k} has {run} s of green")
    cycle = sum(p.duration for p in phases)
    if not bounds.min_s <= cycle <= bounds.max_s:
        found.append(f"cycle {cycle} s outside bounds")
    if not 0 <= plan.offset_seconds < cycle:
        found.append(f"offset {plan.offset_seconds} outside [0, {cycle})")
    return found


def accepts(links: Links, plan: pb.Plan, bounds: CycleBounds = BOUNDS) -> bool:
    try:
        validate_plan(links, plan, bounds)
    except InvalidArgument:
        return False
    return True


def has_priority_green(plan: pb.Plan) -> bool:
    return any("G" in phase.state for phase in plan.phases)


def static(*phases: tuple[str, float], offset: float = 0.0) -> pb.Plan:
    return pb.Plan(
        type=pb.PLAN_TYPE_STATIC,
        offset_seconds=offset,
        phases=[pb.Phase(state=s, duration=d) for s, d in phases],
    )


def actuated(*phases: tuple[str, float, float, float]) -> pb.Plan:
    return pb.Plan(
        type=pb.PLAN_TYPE_ACTUATED,
        phases=[pb.Phase(state=s, duration=d, min_duration=lo, max_duration=hi) for s, d, lo, hi in phases],
    )


# --- strategies ----------------------------------------------------------------------------------

STATE_ALPHABET = "rrrrrGGGgggyyyso"  # mostly r/G/g/y, occasionally s (stop) and o (off)


@st.composite
def random_plans(draw: st.DrawFn, n: int) -> pb.Plan:
    count = draw(st.integers(min_value=2, max_value=6))
    phases = [
        pb.Phase(
            state=draw(st.text(alphabet=STATE_ALPHABET, min_size=n, max_size=n)),
            duration=float(draw(st.integers(min_value=1, max_value=90))),
        )
        for _ in range(count)
    ]
    offset = float(draw(st.integers(min_value=0, max_value=60)))
    return pb.Plan(type=pb.PLAN_TYPE_STATIC, phases=phases, offset_seconds=offset)


@st.composite
def safe_plans(draw: st.DrawFn, links: Links) -> pb.Plan:
    """Valid by construction: non-conflicting green sets, each green >= 5 s, then >= 3 s of yellow
    for every link that turns red, then optionally an all-red phase; the cycle is 30-180 s."""
    n = len(links)
    foes = {link.index: set(link.foes) for link in links}
    stages = []
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        order = draw(st.permutations(range(n)))
        priority: set[int] = set()
        for k in order:
            if not foes[k] & priority and draw(st.booleans()):
                priority.add(k)
        # Permissive greens: 'g' may sit next to a foe's 'G' (it yields), so any other link may join.
        permissive = {k for k in range(n) if k not in priority and draw(st.integers(0, 4)) == 0}
        demoted = {k for k in priority if draw(st.integers(0, 4)) == 0}
        state = "".join("g" if k in permissive or k in demoted else "G" if k in priority else "r" for k in range(n))
        stages.append((state, draw(st.booleans())))
    phases: list[pb.Phase] = []
    for i, (state, all_red) in enumerate(stages):
        following = stages[(i + 1) % len(stages)][0]
        phases.append(pb.Phase(state=state, duration=float(draw(st.integers(5, 30)))))
        # Links green now and green in the next stage keep their green, unless all-red follows.
        cleared = "".join(
            c if c in GREENS and following[k] in GREENS and not all_red else "y" if c in GREENS else "r"
            for k, c in enumerate(state)
        )
        phases.append(pb.Phase(state=cleared, duration=float(draw(st.integers(3, 5)))))
        if all_red:
            phases.append(pb.Phase(state="r" * n, duration=float(draw(st.integers(1, 3)))))
    cycle = sum(p.duration for p in phases)
    if cycle < BOUNDS.min_s:
        phases[0].duration += BOUNDS.min_s - cycle
        cycle = BOUNDS.min_s
    offset = float(draw(st.integers(min_value=0, max_value=int(cycle) - 1)))
    return pb.Plan(type=pb.PLAN_TYPE_STATIC, phases=phases, offset_seconds=offset)


@st.composite
def mutated_plans(draw: st.DrawFn, links: Links) -> pb.Plan:
    """A safe plan with one to three small changes: near the edge of what the validator accepts."""
    plan = draw(safe_plans(links))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        i = draw(st.integers(0, len(plan.phases) - 1))
        what = draw(st.sampled_from(["char", "char", "duration", "drop"]))
        if what == "char":
            k = draw(st.integers(0, len(links) - 1))
            state = plan.phases[i].state
            plan.phases[i].state = state[:k] + draw(st.sampled_from("rGgyso")) + state[k + 1 :]
        elif what == "duration":
            plan.phases[i].duration = float(draw(st.integers(1, 90)))
        elif len(plan.phases) > 2:
            del plan.phases[i]
    return plan


# --- the safety property -------------------------------------------------------------------------


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_accepted_random_plans_are_safe(lights: dict[str, Light], data: st.DataObject) -> None:
    """No plan the validator accepts shows a conflicting green or a green -> red without yellow."""
    name = data.draw(st.sampled_from(INTERSECTIONS), label="intersection")
    links = lights[name].links
    plan = data.draw(
        st.one_of(random_plans(len(links)), mutated_plans(links)),
        label="plan",
    )
    if accepts(links, plan):
        event(f"accepted ({name}, {'with' if has_priority_green(plan) else 'without'} priority green)")
        assert violations(links, plan) == []
    else:
        event("rejected")


def test_random_plan_search_finds_accepted_and_rejected_plans(lights: dict[str, Light]) -> None:
    """Keeps the property above from being vacuous: the same strategies reach both outcomes."""
    outcomes: Counter[tuple[str, bool | str]] = Counter()

    @settings(max_examples=150, deadline=None, database=None)
    @given(data=st.data())
    def sample(data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(INTERSECTIONS))
        links = lights[name].links
        strategy = data.draw(st.sampled_from(["random", "mutated"]))
        plan = data.draw(random_plans(len(links)) if strategy == "random" else mutated_plans(links))
        accepted = accepts(links, plan)
        outcomes[strategy, accepted] += 1
        if accepted and has_priority_green(plan):
            outcomes[strategy, "accepted with priority green"] += 1

    sample()
    assert outcomes["mutated", "accepted with priority green"] > 0
    assert outcomes["mutated", False] > 0
    assert outcomes["random", True] > 0
    assert outcomes["random", False] > 0


@settings(max_examples=250, deadline=None)
@given(data=st.data())
def test_safe_by_construction_plans_are_accepted(lights: dict[str, Light], data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(INTERSECTIONS), label="intersection")
    links = lights[name].links
    plan = data.draw(safe_plans(links), label="plan")
    assert violations(links, plan) == []  # the construction is right by our own reading
    validate_plan(links, plan, BOUNDS)


def test_valid_plans_exist_for_every_intersection(lights: dict[str, Light]) -> None:
    plans = {
        "ring-east": static(("GGGGrrrrrrr", 30), ("yyyyrrrrrrr", 3), ("rrrrGGrrrrr", 30), ("rrrryyrrrrr", 3)),
        "stadhuisplein": static(("GGGr", 40), ("yyyr", 3), ("rrGG", 40), ("rryy", 3)),
    }
    plans["ring-west"] = plans["ring-east"]
    for name, plan in plans.items():
        assert violations(lights[name].links, plan) == []
        validate_plan(lights[name].links, plan, BOUNDS)


def test_the_network_has_the_three_lights(lights: dict[str, Light]) -> None:
    assert sorted(lights) == sorted(INTERSECTIONS)
    assert [len(lights[name].links) for name in INTERSECTIONS] == [11, 11, 4]
    for light in lights.values():
        indices = [link.index for link in light.links]
        assert indices == list(range(len(light.links)))
        for link in light.links:  # foe relations are symmetric
            assert all(link.index in light.links[foe].foes for foe in link.foes)
    assert list(lights["stadhuisplein"].links[3].foes) == [0, 1]
    assert list(lights["stadhuisplein"].links[2].foes) == []


@pytest.mark.parametrize("name", INTERSECTIONS)
def test_each_imported_program_passes_validation(lights: dict[str, Light], name: str) -> None:
    light = lights[name]
    assert violations(light.links, light.plan) == []
    validate_plan(light.links, light.plan, BOUNDS)


# --- validation messages -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stadhuis(lights: dict[str, Light]) -> Links:
    """stadhuisplein: links 0 (E -> promenade, right), 1 (E -> W), 2 (W -> E), 3 (W -> promenade, left);
    3 crosses 0 and 1."""
    return lights["stadhuisplein"].links


def test_valid_baseline(stadhuis: Links) -> None:
    validate_plan(stadhuis, static(("GGGr", 40), ("yyyr", 3), ("rrGG", 40), ("rryy", 3)), BOUNDS)


def test_wrong_state_length_names_phase_and_link_count(stadhuis: Links) -> None:
    plan = static(("GGGr", 40), ("yyyr", 3), ("rrGGr", 40), ("rryy", 3))
    with pytest.raises(InvalidArgument, match=r"^phase 2: state has 5 characters; the intersection has 4 links$"):
        validate_plan(stadhuis, plan, BOUNDS)


def test_conflicting_greens_name_both_links(stadhuis: Links) -> None:
    plan = static(("GGGr", 40), ("yyyr", 3), ("GrGG", 40), ("yryy", 3))
    with pytest.raises(InvalidArgument) as err:
        validate_plan(stadhuis, plan, BOUNDS)
    message = err.value.message
    assert message.startswith("phase 2: conflicting greens: links 0 (spoke-e-in_0 -> promenade_0) and 3 ")
    assert "3 (spoke-w-in_0 -> promenade_0)" in message
    assert "both 'G'" in message


def test_green_to_red_without_yellow_names_phase_and_link(stadhuis: Links) -> None:
    plan = static(("GGGr", 40), ("yyrr", 3), ("rrGG", 40), ("rryy", 3))
    with pytest.raises(InvalidArgument, match=r"^phase 1: link 2: green -> red without yellow"):
        validate_plan(stadhuis, plan, BOUNDS)


def test_green_ending_in_stop_or_off_counts_as_no_yellow(stadhuis: Links) -> None:
    for ending in "so":
        plan = static(("GGGr", 40), (f"yy{ending}r", 3), ("rrGG", 40), ("rryy", 3))
        with pytest.raises(InvalidArgument, match=r"^phase 1: link 2: green -> red without yellow"):
            validate_plan(stadhuis, plan, BOUNDS)


def test_clearance_wraps_around_the_cycle(stadhuis: Links) -> None:
    # Link 3 is green in the last phase and red in phase 0 (link 2 stays green across the wrap).
    plan = static(("GGGr", 40), ("yyyr", 3), ("rrGG", 40))
    with pytest.raises(InvalidArgument, match=r"^phase 0: link 3: green -> red without yellow"):
        validate_plan(stadhuis, plan, BOUNDS)


def test_yellow_of_two_seconds_is_rejected(stadhuis: Links) -> None:
    plan = static(("GGGr", 40), ("yyyr", 2), ("rrGG", 40), ("rryy", 3))
    with pytest.raises(InvalidArgument, match=r"^phase 1: link 0: yellow of 2 s; a green must end in at least 3 s"):
        validate_plan(stadhuis, plan, BOUNDS)


def test_yellow_split_over_phases_is_added_up(stadhuis: Links) -> None:
    validate_plan(stadhuis, static(("GGGr", 40), ("yyyr", 2), ("yyyr", 1), ("rrGG", 40), ("rryy", 3)), BOUNDS)


def test_green_of_four_seconds_is_rejected(stadhuis: Links) -> None:
    plan = static(("GGGr", 40), ("yyyr", 3), ("rrGG", 4), ("rryy", 3))
    with pytest.raises(InvalidArgument, match=r"^phase 2: link 2 gets 4 s of green; minimum 5 s$"):
        validate_plan(stadhuis, plan, BOUNDS)
    validate_plan(stadhuis, static(("GGGr", 40), ("yyyr", 3), ("rrGG", 5), ("rryy", 3)), BOUNDS)


@pytest.mark.parametrize(("green", "ok"), [(11.0, False), (12.0, True), (84.0, True), (85.0, False)])
def test_cycle_bounds(stadhuis: Links, green: float, ok: bool) -> None:
    plan = static(("GGGr", green), ("yyyr", 3), ("rrGG", 5), ("rryy", 3))  # cycle = green + 11
    bounds = CycleBounds(min_s=23, max_s=95)
    if ok:
        validate_plan(stadhuis, plan, bounds)
    else:
        with pytest.raises(InvalidArgument, match=r"^cycle: \d+ s is outside the allowed 23-95 s$"):
            validate_plan(stadhuis, plan, bounds)


def test_default_cycle_bounds_are_30_to_180(stadhuis: Links) -> None:
    with pytest.raises(InvalidArgument, match=r"^cycle: 29 s is outside the allowed 30-180 s$"):
        validate_plan(stadhuis, static(("GGGr", 10), ("yyyr", 3), ("rrGG", 13), ("rryy", 3)), BOUNDS)
    with pytest.raises(InvalidArgument, match=r"^cycle: 181 s is outside the allowed 30-180 s$"):
        validate_plan(stadhuis, static(("GGGr", 90), ("yyyr", 3), ("rrGG", 85), ("rryy", 3)), BOUNDS)


@pytest.mark.parametrize(("offset", "ok"), [(0.0, True), (85.5, True), (86.0, False), (200.0, False), (-1.0, False)])
def test_offset_must_be_within_the_cycle(stadhuis: Links, offset: float, ok: bool) -> None:
    plan = static(("GGGr", 40), ("yyyr", 3), ("rrGG", 40), ("rryy", 3), offset=offset)  # cycle 86 s
    if ok:
        validate_plan(stadhuis, plan, BOUNDS)
    else:
        with pytest.raises(InvalidArgument, match=r"^offset_seconds must be in \[0, cycle\) = \[0, 86\)$"):
            validate_plan(stadhuis, plan, BOUNDS)


@pytest.mark.parametrize("bad", ["x", "1", " ", "-", "Ü"])
def test_bad_state_characters_are_named(stadhuis: Links, bad: str) -> None:
    plan = static(("GGGr", 40), ("yyyr", 3), (f"rrG{bad}", 40), ("rryr", 3))
    with pytest.raises(InvalidArgument, match=rf"^phase 2: state character {bad!r} is not one of "):
        validate_plan(stadhuis, plan, BOUNDS)


@pytest.mark.parametrize("duration", [0.0, -5.0, float("nan"), float("inf")])
def test_durations_must_be_positive_and_finite(stadhuis: Links, duration: float) -> None:
    plan = static(("GGGr", 40), ("yyyr", duration), ("rrGG", 40), ("rryy", 3))
    with pytest.raises(InvalidArgument, match=r"^phase 1: duration must be positive$"):
        validate_plan(stadhuis, plan, BOUNDS)


def test_phase_count_and_type(stadhuis: Links) -> None:
    with pytest.raises(InvalidArgument, match=r"^a plan needs 1 to 64 phases, got 0$"):
        validate_plan(stadhuis, static(), BOUNDS)
    validate_plan(stadhuis, static(("GGGg", 40)), BOUNDS)  # a light that never changes
    plan = static(("GGGr", 40), ("yyyr", 3), ("rrGG", 40), ("rryy", 3))
    plan.type = pb.PLAN_TYPE_UNSPECIFIED
    with pytest.raises(InvalidArgument, match=r"^type must be PLAN_TYPE_STATIC or PLAN_TYPE_ACTUATED$"):
        validate_plan(stadhuis, plan, BOUNDS)


def test_priority_green_next_to_a_permissive_foe_is_accepted(stadhuis: Links) -> None:
    # Link 3 (left turn) yields ('g') to links 0 and 1 ('G'), as in the network's own program.
    validate_plan(stadhuis, static(("GGGg", 40), ("yyyy", 3), ("rrrr", 2)), BOUNDS)
    validate_plan(stadhuis, static(("gggG", 40), ("yyyy", 3), ("rrrr", 2)), BOUNDS)


def test_actuated_plan_within_its_limits_is_accepted(stadhuis: Links) -> None:
    plan = actuated(("GGGr", 30, 10, 60), ("yyyr", 3, 3, 3), ("rrGG", 30, 10, 60), ("rryy", 3, 3, 3))
    validate_plan(stadhuis, plan, BOUNDS)


@pytest.mark.parametrize(
    ("lo", "duration", "hi"),
    [(0.0, 30.0, 60.0), (31.0, 30.0, 60.0), (10.0, 61.0, 60.0), (10.0, 30.0, 0.0), (-1.0, 30.0, 60.0)],
)
def test_actuated_phase_needs_min_le_duration_le_max(stadhuis: Links, lo: float, duration: float, hi: float) -> None:
    plan = actuated(("GGGr", 30, 10, 60), ("yyyr", 3, 3, 3), ("rrGG", duration, lo, hi), ("rryy", 3, 3, 3))
    with pytest.raises(InvalidArgument, match=r"^phase 2: actuated phases need 0 < min_duration <= duration"):
        validate_plan(stadhuis, plan, BOUNDS)


def test_actuated_shortest_yellow_uses_min_duration(stadhuis: Links) -> None:
    # 4 s of yellow by duration, but it may be cut to 2 s.
    plan = actuated(("GGGr", 40, 10, 60), ("yyyr", 4, 2, 5), ("rrGG", 40, 10, 60), ("rryy", 3, 3, 3))
    with pytest.raises(InvalidArgument, match=r"^phase 1: link 0: yellow of 2 s"):
        validate_plan(stadhuis, plan, BOUNDS)


def test_actuated_shortest_green_uses_min_duration(stadhuis: Links) -> None:
    # 30 s of green by duration, but it may be cut to 4 s.
    plan = actuated(("GGGr", 40, 10, 60), ("yyyr", 3, 3, 3), ("rrGG", 30, 4, 60), ("rryy", 3, 3, 3))
    with pytest.raises(InvalidArgument, match=r"^phase 2: link 2 gets 4 s of green; minimum 5 s$"):
        validate_plan(stadhuis, plan, BOUNDS)


def test_static_plans_ignore_min_and_max_duration(stadhuis: Links) -> None:
    plan = static(("GGGr", 40), ("yyyr", 3), ("rrGG", 40), ("rryy", 3))
    plan.phases[1].min_duration = 1  # would be a 1 s yellow if it counted
    plan.phases[1].max_duration = 2  # and below the duration
    validate_plan(stadhuis, plan, BOUNDS)


def test_checker_catches_what_it_should(stadhuis: Links) -> None:
    """Our own checker (used by the property tests) flags each kind of unsafe plan."""
    assert violations(stadhuis, static(("GGGr", 40), ("yyyr", 3), ("rrGG", 40), ("rryy", 3))) == []
    assert violations(stadhuis, static(("GrrG", 40), ("yrry", 3), ("rrGr", 40), ("rryr", 3))) != []
    assert violations(stadhuis, static(("GGGr", 40), ("yyrr", 3), ("rrGG", 40), ("rryy", 3))) != []
    assert violations(stadhuis, static(("GGGr", 40), ("yyyr", 2), ("rrGG", 40), ("rryy", 3))) != []
    assert violations(stadhuis, static(("GGGr", 40), ("yyyr", 3), ("rrGG", 4), ("rryy", 3))) != []
    assert violations(stadhuis, static(("GGGr", 10), ("yyyr", 3), ("rrGG", 10), ("rryy", 3))) != []


# --- roles ---------------------------------------------------------------------------------------


def who(role: Role) -> Identity:
    return Identity(f"test-{role}", role, "x" if role is Role.OPERATOR else None)


@pytest.mark.parametrize("role", list(Role))
def test_only_the_optimizer_proposes_adaptive_steps(role: Role) -> None:
    logic.authorize_propose(who(role), pb.PLAN_TYPE_STATIC)  # which roles propose at all: the RPC's rule
    if role is Role.OPTIMIZER:
        logic.authorize_propose(who(role), pb.PLAN_TYPE_ADAPTIVE)
    else:
        with pytest.raises(PermissionDenied, match=f"^only the optimizer proposes adaptive steps; {role}"):
            logic.authorize_propose(who(role), pb.PLAN_TYPE_ADAPTIVE)


@pytest.mark.parametrize("role", list(Role))
def test_only_public_safety_asks_for_emergency_priority(role: Role) -> None:
    """The twin's buses ask for public-transport priority; an emergency is for police, fire and ems."""
    logic.authorize_priority(who(role), pb.PRIORITY_CLASS_PUBLIC_TRANSPORT)
    if role in (Role.POLICE, Role.FIRE, Role.EMS):
        logic.authorize_priority(who(role), pb.PRIORITY_CLASS_EMERGENCY)
    else:
        with pytest.raises(PermissionDenied, match=f"request emergency priority; {who(role).role_name} may not$"):
            logic.authorize_priority(who(role), pb.PRIORITY_CLASS_EMERGENCY)


# --- priority ------------------------------------------------------------------------------------


def test_green_phase_for_the_real_programs(lights: dict[str, Light]) -> None:
    stadhuisplein, east = lights["stadhuisplein"], lights["ring-east"]
    assert green_phase_for(stadhuisplein.links, stadhuisplein.plan, "spoke-w-in") == 0
    assert green_phase_for(stadhuisplein.links, stadhuisplein.plan, "spoke-e-in") == 0
    # ring-s-e (links 0-3): "GGgg" in phases 0 and 1, "GGGG" in phase 2.
    assert green_phase_for(east.links, east.plan, "ring-s-e") == 2
    assert green_phase_for(east.links, east.plan, "spoke-e-out") == 5
    assert green_phase_for(east.links, east.plan, "ring-n-e") == 0


def test_green_phase_for_prefers_priority_green_then_the_earliest_phase(stadhuis: Links) -> None:
    plan = static(("ggrr", 20), ("yyrr", 3), ("GGrr", 20), ("yyrr", 3), ("rrGG", 20), ("rryy", 3))
    assert green_phase_for(stadhuis, plan, "spoke-e-in") == 2
    assert green_phase_for(stadhuis, plan, "spoke-w-in") == 4
    tie = static(("GGrr", 20), ("yyrr", 3), ("GGrr", 20), ("yyrr", 3))
    assert green_phase_for(stadhuis, tie, "spoke-e-in") == 0


def test_green_phase_for_unknown_approach_is_invalid(lights: dict[str, Light]) -> None:
    light = lights["stadhuisplein"]
    for edge in ("nowhere", "spoke-w-in_0", "promenade", "spoke-w"):
        with pytest.raises(InvalidArgument, match=rf"^edge {edge!r} is not an approach of this intersection$"):
            green_phase_for(light.links, light.plan, edge)


def test_green_phase_for_approach_without_green_is_invalid(stadhuis: Links) -> None:
    plan = static(("GGrr", 40), ("yyrr", 3), ("rrrr", 40))
    with pytest.raises(InvalidArgument, match=r"^no phase of the active plan gives 'spoke-w-in' green$"):
        green_phase_for(stadhuis, plan, "spoke-w-in")


ETA = NOW + timedelta(seconds=45)
EMERGENCY, PUBLIC_TRANSPORT = pb.PRIORITY_CLASS_EMERGENCY, pb.PRIORITY_CLASS_PUBLIC_TRANSPORT


@pytest.mark.parametrize("overlapping", [False, True])
def test_emergency_is_granted_even_while_an_emergency_holds(lights: dict[str, Light], overlapping: bool) -> None:
    light = lights["stadhuisplein"]
    granted, reason, grant = decide(
        priority_class=EMERGENCY,
        eta=ETA,
        overlapping_emergency=overlapping,
        links=light.links,
        plan=light.plan,
        approach_edge="spoke-w-in",
    )
    assert granted
    assert grant is not None
    assert grant.phase_index == 0
    assert grant.state == "GGGg"
    assert grant.hold_until == ETA + logic.PRIORITY_HOLD
    assert grant.hold_until - ETA == timedelta(seconds=20)
    assert reason == "green on spoke-w-in in phase 0 from 12:00:35"  # ETA (12:00:45) minus the lead


def test_public_transport_is_denied_while_an_emergency_holds(lights: dict[str, Light]) -> None:
    light = lights["ring-east"]
    granted, reason, grant = decide(
        priority_class=PUBLIC_TRANSPORT,
        eta=ETA,
        overlapping_emergency=True,
        links=light.links,
        plan=light.plan,
        approach_edge="ring-s-e",
    )
    assert not granted
    assert grant is None
    assert reason == "an emergency vehicle holds priority at this intersection"


def test_public_transport_is_granted_when_no_emergency_holds(lights: dict[str, Light]) -> None:
    light = lights["ring-east"]
    granted, _, grant = decide(
        priority_class=PUBLIC_TRANSPORT,
        eta=ETA,
        overlapping_emergency=False,
        links=light.links,
        plan=light.plan,
        approach_edge="ring-s-e",
    )
    assert granted
    assert grant == logic.Grant(2, "GGGGrrrrrrr", ETA + logic.PRIORITY_HOLD)


def test_decide_rejects_an_unknown_approach(lights: dict[str, Light]) -> None:
    light = lights["ring-east"]
    with pytest.raises(InvalidArgument, match="is not an approach"):
        decide(
            priority_class=EMERGENCY,
            eta=ETA,
            overlapping_emergency=False,
            links=light.links,
            plan=light.plan,
            approach_edge="spoke-w-in",
        )


# --- adaptive steps --------------------------------------------------------------------------------


def step(*phases: tuple[str, float]) -> pb.Plan:
    return pb.Plan(type=pb.PLAN_TYPE_ADAPTIVE, phases=[pb.Phase(state=s, duration=d) for s, d in phases])


def greens_of(plan: pb.Plan) -> list[str]:
    return [
        p.state for p in plan.phases if any(c in GREENS for c in p.state) and not any(c in YELLOWS for c in p.state)
    ]


def clearing(a: str, b: str) -> str:
    """Yellow for the links green in `a` but not in `b`, our own construction."""
    return "".join(
        "y" if x in GREENS and y not in GREENS else (x if x in GREENS else "r") for x, y in zip(a, b, strict=True)
    )


def test_adaptive_steps_follow_each_other_safely(lights: dict[str, Light]) -> None:
    light = lights["ring-east"]
    first, second = greens_of(light.plan)[0], greens_of(light.plan)[-1]
    takeover = step((first, 5.0))
    logic.validate_step(light.links, takeover, light.plan)
    switch = step((clearing(first, second), 3.0), (second, 5.0))
    logic.validate_step(light.links, switch, takeover)

    def refused(candidate: pb.Plan, active: pb.Plan, pattern: str) -> None:
        with pytest.raises(InvalidArgument, match=pattern):
            logic.validate_step(light.links, candidate, active)

    refused(step((second, 5.0)), takeover, r"^phase 0: link \d+: green -> red without yellow; a green must end in")
    refused(step((clearing(first, second), 2.0), (second, 5.0)), takeover, r"^phase 0: link \d+: yellow of 2 s")
    refused(step((clearing(first, second), 3.0)), takeover, r"^phase 0: the held last phase may not show yellow$")
    refused(step((first, 4.0)), takeover, r"^phase 0: a held green lasts at least 5 s$")
    everything = "G" * len(light.links)
    refused(step((everything, 5.0)), takeover, r"^phase 0: conflicting greens: links \d+ .* are both 'G'$")
    refused(step((everything.replace("G", "g"), 5.0)), light.plan, r"^phase 0: a takeover must start from greens")
    offset = step((first, 5.0))
    offset.offset_seconds = 3
    refused(offset, takeover, r"^adaptive steps have no offset")


@pytest.mark.parametrize("network", ["cologne8", "ingolstadt21"])
def test_the_resco_networks_import_with_programs_that_pass_validation(network: str) -> None:
    """Also with link indices no connection uses (ingolstadt21) and a lane drop whose two lanes
    both have green into the one lane left (a zip merge, not a crossing)."""
    from sim.scenarios import resco

    lights = read_lights(resco.locate(network).network)
    assert len(lights) == {"cologne8": 8, "ingolstadt21": 21}[network]
    for light in lights:
        assert [link.index for link in light.intersection.links] == list(range(len(light.plan.phases[0].state)))
        validate_plan(list(light.intersection.links), light.plan, CycleBounds(0, 10_000))
