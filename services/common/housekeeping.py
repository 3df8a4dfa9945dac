"""The city's own retention (what partners' agreements do not cover, see retention.py): a scheduled
batch handler (`Service.schedule`) that removes at most `batch_rows` rows per round, so a round
never holds the shared write transaction long. Rounds run every `every_s` of the clock they are
given, and at the next tick while a round found a full batch (a backlog). Each committed round that
removed anything is logged once and counted (almere_retention_removed)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import event
from sqlmodel import Session

from services.common.config import Settings
from services.common.observability import RETENTION_REMOVED

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Removed:
    """What one round removed from one table: rows older than `before`."""

    table: str
    rows: int
    before: datetime
    note: str = ""  # e.g. "into 3 hourly summaries"


# One bounded round: (session, now, at most this many rows per table) -> what it removed.
Sweep = Callable[[Session, datetime, int], list[Removed]]


class Housekeeping:
    def __init__(self, *, service: str, sweep: Sweep, every_s: float, batch_rows: int) -> None:
        self._service = service
        self._sweep = sweep
        self._every = timedelta(seconds=every_s)
        self._batch_rows = batch_rows
        self._due: datetime | None = None  # None: at the next tick

    @property
    def due(self) -> datetime | None:
        """When the next round runs (None: at the next tick)."""
        return self._due

    def __call__(self, session: Session, times: Sequence[datetime]) -> list[None]:
        """Batch handler: one round at the latest of the queued times, when one is due."""
        now = max(times)
        if self._due is None or now >= self._due:
            removed = self._sweep(session, now, self._batch_rows)
            # Reported (and the next round planned) only once it is committed: a failed round is redone.
            event.listen(session, "after_commit", functools.partial(self._committed, now, removed), once=True)
        return [None] * len(times)

    def _committed(self, now: datetime, removed: list[Removed], _session: Any) -> None:
        backlog = any(r.rows >= self._batch_rows for r in removed)
        self._due = None if backlog else now + self._every
        done = [r for r in removed if r.rows]
        for r in done:
            RETENTION_REMOVED.labels(self._service, r.table).inc(r.rows)
        if done:
            log.info(
                "retention removed %s",
                "; ".join(
                    f"{r.rows} {r.table} rows older than {r.before.isoformat()}{' ' + r.note if r.note else ''}"
                    for r in done
                ),
                extra={"service": self._service, "removed": {r.table: r.rows for r in done}},
            )


def scheduled(*, service: str, settings: Settings, sweep: Sweep) -> Housekeeping:
    """`service`'s housekeeping at the deployment's pace (retention_check_seconds) and batch size."""
    return Housekeeping(
        service=service,
        sweep=sweep,
        every_s=settings.retention_check_seconds,
        batch_rows=settings.retention_batch_rows,
    )
