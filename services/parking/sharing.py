"""A facility's occupancy is its operator's data: when the operator is a partner with an agreement for
its `occupancy` dataset, every read path shapes the occupancy to what the caller's audience may see
and records the read in the partner's audit.

Single reads (a facility, its occupancy, its history) of a refused or withheld occupancy end with
PERMISSION_DENIED and the reason. Reads of many (lists, watches, recommendations) give every facility
and mark the shaped ones in `Occupancy.sharing`: a caller never gets less than it thinks without
being told. (The shaping itself is in services.parking.shaping.)
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
from services.common.clock import utcnow
from services.common.terms import Access, Outcome
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

    def bus_access(self, operator_id: str) -> Access:
        """What the PARKING stream's readers (the optimizer) may see of an operator's occupancy."""
        return self._governance.book.optimizer_access(operator_id, dataset=DATASET, now=utcnow())


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
