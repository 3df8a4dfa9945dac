"""The optimizer's strategy rules: what it starts with and what a valid strategy is. No gRPC, no NATS,
no database. What each lever decides is in levers/."""

from __future__ import annotations

from almere.optimizer.v1 import optimizer_pb2 as pb
from almere.partners.v1 import partners_pb2 as ppb

from services.common.errors import InvalidArgument
from services.common.terms import Access, Outcome, rounded, sharing_of

STRATEGY_FIELDS = frozenset(pb.Strategy.DESCRIPTOR.fields_by_name)


def default_strategy() -> pb.Strategy:
    return pb.Strategy(
        incident_rerouting=True,
        congestion_rerouting=True,
        parking_guidance=True,
        equipped_share=0.5,
        decision_interval_seconds=30,
        min_gain_seconds=20,
        min_relative_gain=0.10,
        reroute_hold_seconds=180,
        reserve_spaces=3,
    )


def merge_strategy(current: pb.Strategy, change: pb.Strategy, paths: list[str]) -> pb.Strategy:
    """`current` with the fields named in `paths` (all when empty) taken from `change`, validated."""
    unknown = sorted(set(paths) - STRATEGY_FIELDS)
    if unknown:
        raise InvalidArgument(f"update_mask names unknown fields: {', '.join(unknown)}")
    merged = pb.Strategy()
    merged.CopyFrom(current)
    for name in paths or sorted(STRATEGY_FIELDS):
        setattr(merged, name, getattr(change, name))
    validate_strategy(merged)
    return merged


def validate_strategy(s: pb.Strategy) -> None:
    checks = [
        (0 <= s.equipped_share <= 1, "equipped_share must be between 0 and 1"),
        (5 <= s.decision_interval_seconds <= 600, "decision_interval_seconds must be between 5 and 600"),
        (0 <= s.min_gain_seconds <= 3600, "min_gain_seconds must be between 0 and 3600"),
        (0 <= s.min_relative_gain <= 1, "min_relative_gain must be between 0 and 1"),
        (0 <= s.reroute_hold_seconds <= 7200, "reroute_hold_seconds must be between 0 and 7200"),
        (0 <= s.reserve_spaces <= 1000, "reserve_spaces must be between 0 and 1000"),
    ]
    for ok, message in checks:
        if not ok:
            raise InvalidArgument(message)


def facility_state(state: pb.FacilityState, access: Access) -> pb.FacilityState:
    """A facility of the live model as the caller may see it under its operator's agreement: counts
    rounded as agreed; withheld, status only or delayed (the model is live) without its count."""
    if not access.agreement:
        return state
    if access.outcome is Outcome.DEGRADED and access.detail == ppb.DETAIL_ROUNDED and not access.delay:
        state.occupied = rounded(state.occupied, access)
    elif access.outcome is not Outcome.FULL:
        state.occupied = 0
    state.sharing.CopyFrom(sharing_of(access))
    return state
