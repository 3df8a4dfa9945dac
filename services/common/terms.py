"""What a caller may see of a partner's dataset under its agreement, and how answers say so. Pure:
no bus, no database (the services' logic modules use it)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from almere.partners.v1 import partners_pb2 as pb
from google.protobuf import duration_pb2

from services.common.errors import PermissionDenied


class Outcome(StrEnum):
    FULL = "full"
    DEGRADED = "degraded"
    WITHHELD = "withheld"
    REFUSED = "refused"
    DELETED = "deleted"  # not a read: the retention's deletion, audited like one


OUTCOMES = {
    Outcome.FULL: pb.ACCESS_OUTCOME_FULL,
    Outcome.DEGRADED: pb.ACCESS_OUTCOME_DEGRADED,
    Outcome.WITHHELD: pb.ACCESS_OUTCOME_WITHHELD,
    Outcome.REFUSED: pb.ACCESS_OUTCOME_REFUSED,
    Outcome.DELETED: pb.ACCESS_OUTCOME_DELETED,
}


@dataclass(frozen=True, kw_only=True)
class Access:
    """What one caller may see of one partner's dataset."""

    partner_id: str
    dataset: int
    outcome: Outcome
    agreement: str = ""  # the agreement's name; "" when there is none
    revision: int = 0
    detail: int = pb.DETAIL_RAW
    round_to: int = 0
    delay: timedelta = timedelta(0)
    reason: str = ""

    @property
    def audited(self) -> bool:
        """Reads under an agreement are audited; the partner's own and unregulated ones are not."""
        return bool(self.agreement)


def rounded(count: int, access: Access) -> int:
    """`count` as the access gives it: to a multiple of its round_to when rounded, else as is."""
    if access.detail != pb.DETAIL_ROUNDED:
        return count
    return round(count / access.round_to) * access.round_to


def describe(terms: pb.AudienceTerms) -> str:
    parts = {
        pb.DETAIL_ROUNDED: [f"counts rounded to {terms.round_to}"],
        pb.DETAIL_STATUS_ONLY: ["status only"],
    }.get(terms.detail, [])
    if terms.delay_minutes:
        parts.append(f"{terms.delay_minutes} minutes late")
    return ", ".join(parts)


def require(access: Access) -> None:
    """A single read: refused unless the caller sees something."""
    if access.outcome in (Outcome.REFUSED, Outcome.WITHHELD):
        raise PermissionDenied(access.reason)


def sharing_of(access: Access) -> pb.Sharing:
    """How an agreement shaped what a caller was given, as the answers tell it (Occupancy.sharing,
    the optimizer's FacilityState.sharing)."""
    delay = duration_pb2.Duration(seconds=int(access.delay.total_seconds())) if access.delay else None
    return pb.Sharing(
        agreement=access.agreement,
        revision=access.revision,
        outcome=OUTCOMES[access.outcome],
        reason=access.reason,
        delay=delay,
    )
