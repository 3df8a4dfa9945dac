"""Forecasts on the bus: `forecast_updated` per facility, computed by the schedulers' leader alone (so
N replicas publish one copy), at most once per forecast.REFRESH_S per facility and only after its
occupancy changed (a forecast costs ~20 ms; an unchanged facility costs a version compare). The
events go through the outbox like every other: durable, published once.

A partner's facility is published as the bus's reader (the optimizer) may read its forecasts, as
occupancy events are (shaping.for_bus): rounded counts give rounded forecasts; status only, a delay
or a withheld occupancy give none (the bus carries no past)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Engine

from services.common.clock import utcnow
from services.common.db import GroupCommitter
from services.common.errors import FailedPrecondition
from services.common.worker import Worker
from services.parking import events, forecast, usecases
from services.parking.models import Facility
from services.parking.shaping import BusAccess

log = logging.getLogger(__name__)


class ForecastPublisher:
    def __init__(
        self,
        *,
        engine: Engine,
        forecasts: forecast.Forecasts,
        committer: GroupCommitter,
        bus: BusAccess,
        leads: Callable[[], bool],
        poll_s: float,
    ) -> None:
        self._engine = engine
        self._forecasts = forecasts
        self._committer = committer
        self._bus = bus
        self._leads = leads
        # Per facility: the version last forecast (published or not) and when (monotonic).
        self._done: dict[str, tuple[int, float]] = {}
        self._worker = Worker("parking-forecasts", self.run, poll_s)

    def start(self) -> None:
        self._worker.start()

    async def stop(self) -> None:
        await self._worker.stop()

    async def run(self) -> None:
        """One round: forecast the facilities due, publish them in one commit."""
        if not self._leads():
            self._done.clear()  # a leader again later starts afresh: what another leader sent is unknown
            return
        try:
            rows = await asyncio.to_thread(usecases.all_facilities, self._engine, usecases.FacilityFilter())
            due = self.due(rows)
            published = [e for row in due if (e := await self._event(row)) is not None]
            if published:
                await self._committer.submit(usecases.insert_events, published)
        except Exception:
            log.exception("forecast publication failed; will retry")
            return
        done_at = time.monotonic()  # after the commit: a failed round leaves them due
        self._done.update((row.id, (row.version, done_at)) for row in due)

    def due(self, rows: Sequence[Facility]) -> list[Facility]:
        """Facilities whose occupancy changed since their last forecast, that one REFRESH_S old."""
        now = time.monotonic()
        due = []
        for row in rows:
            version, at = self._done.get(row.id, (0, float("-inf")))
            if row.version != version and now - at >= forecast.REFRESH_S:
                due.append(row)
        return due

    async def _event(self, row: Facility) -> dict[str, Any] | None:
        """The facility's forecast_updated outbox row, or None when the bus may carry none."""
        access = self._bus(row.operator_id)
        if access.agreement and (forecast.refusal(access) is not None or access.delay):
            return None
        now = utcnow()
        try:
            made = await asyncio.to_thread(self._forecasts.make, row.id, now=now)
        except FailedPrecondition:
            return None  # too little history yet: tried again when its occupancy changes
        shown = forecast.facility_forecast(made, facility_id=row.id, version=row.version, round_to=access.round_to)
        return events.forecast_updated(facility_id=row.id, made=shown, now=now)
