"""A facility's occupancy is its operator's data: when the operator is a partner with an agreement for
its `occupancy` dataset, every read path shapes the occupancy to what the caller's audience may see
and records the read in the partner's audit.

Single reads (a facility, its occupancy, its history) of a refused or withheld occupancy end with
PERMISSION_DENIED and the reason. Reads of many (lists, watches, recommendations) give every facility
and mark the shaped ones in `Occupancy.sharing`: a caller never gets less than it thinks without
being told.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from almere.parking.v1 import parking_pb2 as pb
from almere.partners.v1 import partners_pb2 as ppb
from sqlalchemy import Engine

from services.common.agreements import Governance
from services.common.clock import to_timestamp, utcnow
from services.common.terms import Access, Outcome, sharing_of
from services.parking import logic, usecases

DATASET = ppb.DATASET_OCCUPANCY


@dataclass(frozen=True, kw_only=True)
class View:
    """What the current caller may see of each operator's occupancy, for one read."""

    accesses: dict[str, Access]  # by operator id
    past: dict[str, tuple[int, datetime]]  # delayed facilities: the count in force back then

    def access(self, operator_id: str) -> Access:
        return self.accesses[operator_id]


class Sharing:
    def __init__(self, *, governance: Governance, engine: Engine) -> None:
        self._governance = governance
        self._engine = engine

    async def view(self, facilities: Iterable[tuple[str, str]], *, method: str, now: datetime) -> View:
        """The accesses of the caller to the (facility id, operator id) pairs given, and the past
        counts delayed ones need. Audited, one record per partner."""
        pairs = list(facilities)
        accesses = self._governance.read((operator for _, operator in pairs), dataset=DATASET, method=method, now=now)
        delayed = {
            facility_id: now - accesses[operator].delay
            for facility_id, operator in pairs
            if accesses[operator].outcome is Outcome.DEGRADED and accesses[operator].delay
        }
        past = await asyncio.to_thread(usecases.occupancy_at, self._engine, delayed) if delayed else {}
        return View(accesses=accesses, past=past)

    def refused_write(self, refused: logic.NotItsOwn, *, method: str) -> None:
        self._governance.refused_write(
            refused.owner, dataset=DATASET, method=method, reason=refused.message, now=utcnow()
        )

    def access(self, operator_id: str) -> Access:
        """The current caller's access now, unaudited (a Watch's changes, audited when it began)."""
        return self._governance.access(operator_id, dataset=DATASET, now=utcnow())


def shape(
    occupancy: pb.Occupancy,
    *,
    access: Access,
    thresholds: logic.Thresholds,
    past: tuple[int, datetime] | None = None,
    held: bool = False,
) -> None:
    """Turn `occupancy` (as counted now, or `held` back for the delay already) into what `access`
    allows, in place; a delayed one becomes `past`, the count in force a delay ago."""
    if not access.agreement:
        return
    capacity = occupancy.capacity
    sharing = sharing_of(access)
    if access.outcome in (Outcome.REFUSED, Outcome.WITHHELD):
        sharing.counts_withheld = True
        withheld = pb.Occupancy(
            facility=occupancy.facility, capacity=capacity, status=pb.OCCUPANCY_STATUS_UNKNOWN, sharing=sharing
        )
        occupancy.CopyFrom(withheld)
        return
    if access.delay and not held:
        _as_of(occupancy, past=past, thresholds=thresholds)
    if access.detail == ppb.DETAIL_ROUNDED and occupancy.status != pb.OCCUPANCY_STATUS_UNKNOWN:
        occupied = round(occupancy.occupied_spaces / access.round_to) * access.round_to
        occupancy.occupied_spaces = occupied
        occupancy.free_spaces = max(0, capacity - occupied)
        occupancy.occupancy_ratio = occupied / capacity
    elif access.detail == ppb.DETAIL_STATUS_ONLY:
        for counted in ("occupied_spaces", "free_spaces", "occupancy_ratio", "sequence", "version"):
            occupancy.ClearField(counted)
        sharing.counts_withheld = True
    occupancy.sharing.CopyFrom(sharing)


def _as_of(occupancy: pb.Occupancy, *, past: tuple[int, datetime] | None, thresholds: logic.Thresholds) -> None:
    """The occupancy as it was `delay` ago: the count then in force and its status (UNKNOWN before the
    first count; the hysteresis of the moment is not replayed)."""
    capacity = occupancy.capacity
    keep = (occupancy.facility, occupancy.status == pb.OCCUPANCY_STATUS_CLOSED)
    occupancy.Clear()
    occupancy.facility, occupancy.capacity = keep[0], capacity
    if past is None:
        occupancy.status = pb.OCCUPANCY_STATUS_CLOSED if keep[1] else pb.OCCUPANCY_STATUS_UNKNOWN
        return
    occupied, measured = past
    occupancy.occupied_spaces = occupied
    occupancy.free_spaces = max(0, capacity - occupied)
    occupancy.occupancy_ratio = occupied / capacity
    occupancy.source_time.CopyFrom(to_timestamp(measured))
    occupancy.status = logic.derive_status(  # type: ignore[assignment]
        previous=pb.OCCUPANCY_STATUS_UNKNOWN,
        occupied=occupied,
        capacity=capacity,
        thresholds=thresholds,
        closed=keep[1],
    )


def count_of(occupancy: pb.Occupancy) -> int | None:
    """The count a shaped occupancy still shows; None when withheld, status only or unknown."""
    if occupancy.sharing.counts_withheld or occupancy.status == pb.OCCUPANCY_STATUS_UNKNOWN:
        return None
    return occupancy.occupied_spaces


class Holdback:
    """A Watch's changes of delayed facilities, each released once its delay has passed."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, pb.Occupancy]] = []
        self._count = 0

    def hold(self, occupancy: pb.Occupancy, *, delay_s: float) -> None:
        self._count += 1
        heapq.heappush(self._heap, (time.monotonic() + delay_s, self._count, occupancy))

    def wait_s(self) -> float | None:
        """Seconds until the next release; None when nothing is held."""
        return max(0.0, self._heap[0][0] - time.monotonic()) if self._heap else None

    def released(self) -> list[pb.Occupancy]:
        now, out = time.monotonic(), []
        while self._heap and self._heap[0][0] <= now:
            out.append(heapq.heappop(self._heap)[2])
        return out
