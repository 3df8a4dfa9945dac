"""Signal-timing rules: plan validation (safety first), who may do what, and priority decisions.
No gRPC, no NATS, no database."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from almere.signals.v1 import signals_pb2 as pb

from services.common.auth import PUBLIC_SAFETY, Identity, Role
from services.common.errors import InvalidArgument, PermissionDenied

GREEN = frozenset("Gg")
YELLOW = frozenset("yY")
STATE_CHARS = frozenset("rRyYgGsuoO")
MIN_YELLOW_S = 3.0
MIN_GREEN_S = 5.0
MAX_PHASES = 64


@dataclass(frozen=True)
class CycleBounds:
    min_s: float = 30.0
    max_s: float = 180.0


# --- roles ---------------------------------------------------------------------------------------

ENGINEERS = frozenset({Role.ENGINEER})
# The twin reads timing as a light's controller would; it changes none.
READERS = frozenset({*ENGINEERS, Role.SIM, Role.OPTIMIZER, *PUBLIC_SAFETY})
# Who did what is for engineers and public safety (as for incident histories).
HISTORY_READERS = frozenset({*ENGINEERS, *PUBLIC_SAFETY})
PROPOSERS = frozenset({*ENGINEERS, Role.OPTIMIZER})
# Steps after a takeover apply at once: nobody else's token may drive a light second by second.
STEP_APPLIERS = frozenset({Role.OPTIMIZER})
# The twin plays the buses' on-board units: public-transport priority only (authorize_priority).
PRIORITY_REQUESTERS = frozenset({*PUBLIC_SAFETY, Role.SIM})
PRIORITY_NOTES = {Role.SIM: "public transport only"}


def authorize_propose(identity: Identity, plan_type: int) -> None:
    # Steps apply at once after a takeover: nobody else's token may drive a light second by second.
    if plan_type == pb.PLAN_TYPE_ADAPTIVE and identity.role is not Role.OPTIMIZER:
        raise PermissionDenied(f"only the optimizer proposes adaptive steps; {identity.role_name} may not")


def authorize_priority(identity: Identity, priority_class: int) -> None:
    if priority_class == pb.PRIORITY_CLASS_EMERGENCY and identity.role not in PUBLIC_SAFETY:
        raise PermissionDenied(f"only police, fire and ems request emergency priority; {identity.role_name} may not")


# --- plan validation -----------------------------------------------------------------------------


def _duration(phase: pb.Phase, plan_type: int, shortest: bool) -> float:
    """A phase's length; for actuated plans the shortest (or longest) it can run."""
    if plan_type == pb.PLAN_TYPE_ACTUATED and phase.min_duration:
        return phase.min_duration if shortest else max(phase.max_duration, phase.duration)
    return phase.duration


def _check_phases(links: list[pb.SignalLink], plan: pb.Plan) -> None:
    """Every phase well-formed (state length and characters, positive duration) and without
    conflicting greens. One phase is a light that never changes (all its movements compatible), as
    netconvert writes for junctions without conflicts."""
    n = len(links)
    if not 1 <= len(plan.phases) <= MAX_PHASES:
        raise InvalidArgument(f"a plan needs 1 to {MAX_PHASES} phases, got {len(plan.phases)}")
    for i, phase in enumerate(plan.phases):
        where = f"phase {i}"
        if len(phase.state) != n:
            raise InvalidArgument(f"{where}: state has {len(phase.state)} characters; the intersection has {n} links")
        bad = sorted(set(phase.state) - STATE_CHARS)
        if bad:
            raise InvalidArgument(f"{where}: state character {bad[0]!r} is not one of {''.join(sorted(STATE_CHARS))}")
        if not (math.isfinite(phase.duration) and phase.duration > 0):
            raise InvalidArgument(f"{where}: duration must be positive")
        _check_no_conflicting_greens(links, phase.state, where)


def validate_plan(links: list[pb.SignalLink], plan: pb.Plan, bounds: CycleBounds) -> None:
    """Reject, naming the phase and the rule, any plan that is not safe and well-formed."""
    if plan.type not in (pb.PLAN_TYPE_STATIC, pb.PLAN_TYPE_ACTUATED):
        raise InvalidArgument("type must be PLAN_TYPE_STATIC or PLAN_TYPE_ACTUATED")
    _check_phases(links, plan)
    for i, phase in enumerate(plan.phases):
        where = f"phase {i}"
        actuated = plan.type == pb.PLAN_TYPE_ACTUATED and (phase.min_duration or phase.max_duration)
        if actuated and not 0 < phase.min_duration <= phase.duration <= phase.max_duration:
            raise InvalidArgument(f"{where}: actuated phases need 0 < min_duration <= duration <= max_duration")
    _check_clearance(links, plan)
    cycle = sum(p.duration for p in plan.phases)
    if not bounds.min_s <= cycle <= bounds.max_s:
        raise InvalidArgument(f"cycle: {cycle:g} s is outside the allowed {bounds.min_s:g}-{bounds.max_s:g} s")
    if not (math.isfinite(plan.offset_seconds) and 0 <= plan.offset_seconds < cycle):
        raise InvalidArgument(f"offset_seconds must be in [0, cycle) = [0, {cycle:g})")


def validate_step(links: list[pb.SignalLink], step: pb.Plan, active: pb.Plan) -> None:
    """An adaptive step (PLAN_TYPE_ADAPTIVE) after the `active` plan. After another adaptive step,
    whatever its last (held) phase shows green either stays green or clears through at least 3 s of
    yellow; within the step likewise. A takeover from a timing plan starts from a state the plan
    shows, with greens taken away at most (the controller takes over at a green it is showing).
    The held last phase shows no yellow and is held at least the minimum green."""
    if step.offset_seconds:
        raise InvalidArgument("adaptive steps have no offset (they start when activated)")
    _check_phases(links, step)
    phases = list(step.phases)
    if any(c in YELLOW for c in phases[-1].state):
        raise InvalidArgument(f"phase {len(phases) - 1}: the held last phase may not show yellow")
    if any(c in GREEN for c in phases[-1].state) and phases[-1].duration < MIN_GREEN_S:
        raise InvalidArgument(f"phase {len(phases) - 1}: a held green lasts at least {MIN_GREEN_S:g} s")
    if active.type == pb.PLAN_TYPE_ADAPTIVE:
        before = active.phases[-1].state
    else:
        first = phases[0].state
        before = next(
            (p.state for p in active.phases if all(p.state[k] in GREEN for k, c in enumerate(first) if c in GREEN)),
            "",
        )
        if not before:
            raise InvalidArgument("phase 0: a takeover must start from greens the active plan shows")
    for k in range(len(links)):
        previous = before[k]
        for i, phase in enumerate(phases):
            now = phase.state[k]
            if previous in GREEN and now not in GREEN:
                yellow = 0.0
                for later in phases[i:-1]:
                    if later.state[k] not in YELLOW:
                        break
                    yellow += later.duration
                if yellow < MIN_YELLOW_S:
                    rule = "green -> red without yellow" if yellow == 0 else f"yellow of {yellow:g} s"
                    raise InvalidArgument(
                        f"phase {i}: link {k}: {rule}; a green must end in at least {MIN_YELLOW_S:g} s of yellow"
                    )
            previous = now


def encode_phases(phases: Iterable[pb.Phase]) -> str:
    """A step's phases as stored: `state:duration` each, comma-separated (states never hold either)."""
    return ",".join(f"{p.state}:{p.duration:g}" for p in phases)


def decode_phases(text: str) -> list[pb.Phase]:
    return [pb.Phase(state=s, duration=float(d)) for s, _, d in (p.partition(":") for p in text.split(","))]


def _check_no_conflicting_greens(links: list[pb.SignalLink], state: str, where: str) -> None:
    """Two links whose paths cross may not both have priority green ('G'); a yielding green ('g')
    next to a 'G' is how SUMO runs permissive turns."""
    for link in links:
        if state[link.index] != "G":
            continue
        for foe in link.foes:
            if state[foe] == "G":
                raise InvalidArgument(
                    f"{where}: conflicting greens: links {link.index} ({link.from_lane} -> {link.to_lane}) and "
                    f"{foe} ({links[foe].from_lane} -> {links[foe].to_lane}) cross and are both 'G'"
                )


def _check_clearance(links: list[pb.SignalLink], plan: pb.Plan) -> None:
    """Per link, over the cycle: a green ends in yellow lasting at least 3 s before red, and every
    green lasts at least 5 s."""
    phases = list(plan.phases)
    count = len(phases)
    for link in links:
        k = link.index
        for i, phase in enumerate(phases):
            before = phases[i - 1].state[k]
            now = phase.state[k]
            if now in GREEN and before not in GREEN:
                green, j = 0.0, i
                while phases[j % count].state[k] in GREEN and j < i + count:
                    green += _duration(phases[j % count], plan.type, shortest=True)
                    j += 1
                if green < MIN_GREEN_S:
                    raise InvalidArgument(f"phase {i}: link {k} gets {green:g} s of green; minimum {MIN_GREEN_S:g} s")
            if before in GREEN and now not in GREEN:
                yellow, j = 0.0, i
                while phases[j % count].state[k] in YELLOW and j < i + count:
                    yellow += _duration(phases[j % count], plan.type, shortest=True)
                    j += 1
                if yellow < MIN_YELLOW_S:
                    rule = "green -> red without yellow" if yellow == 0 else f"yellow of {yellow:g} s"
                    raise InvalidArgument(
                        f"phase {i}: link {k}: {rule}; a green must end in at least {MIN_YELLOW_S:g} s of yellow"
                    )


# --- priority ------------------------------------------------------------------------------------

PRIORITY_LEAD = timedelta(seconds=10)  # green is held from ETA - lead ...
PRIORITY_HOLD = timedelta(seconds=20)  # ... until ETA + hold
PRIORITY_HORIZON = timedelta(minutes=30)  # requests further ahead are not plannable


@dataclass(frozen=True)
class Grant:
    phase_index: int
    state: str
    hold_until: datetime


def green_phase_for(links: list[pb.SignalLink], plan: pb.Plan, approach_edge: str) -> int:
    """The phase of `plan` giving links coming from `approach_edge` the most priority green."""
    approach = [link.index for link in links if link.from_lane.rsplit("_", 1)[0] == approach_edge]
    if not approach:
        raise InvalidArgument(f"edge {approach_edge!r} is not an approach of this intersection")
    # Priority green ('G') first, then yielding green ('g'); ties go to the earliest phase.
    scores = [
        (sum(p.state[k] == "G" for k in approach), sum(p.state[k] == "g" for k in approach), -i)
        for i, p in enumerate(plan.phases)
    ]
    priority_green, yielding_green, neg_index = max(scores)
    if priority_green + yielding_green == 0:
        raise InvalidArgument(f"no phase of the active plan gives {approach_edge!r} green")
    return -neg_index


def decide(
    *,
    priority_class: int,
    eta: datetime,
    overlapping_emergency: bool,
    links: list[pb.SignalLink],
    plan: pb.Plan,
    approach_edge: str,
) -> tuple[bool, str, Grant | None]:
    """Grant or deny; emergency first: public transport is denied while an emergency holds the junction."""
    phase = green_phase_for(links, plan, approach_edge)
    if priority_class == pb.PRIORITY_CLASS_PUBLIC_TRANSPORT and overlapping_emergency:
        return False, "an emergency vehicle holds priority at this intersection", None
    grant = Grant(phase, plan.phases[phase].state, eta + PRIORITY_HOLD)
    return True, f"green on {approach_edge} in phase {phase} from {eta - PRIORITY_LEAD:%H:%M:%S}", grant
