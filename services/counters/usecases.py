"""The counter use cases: group-commit batch handlers (register a counter, keep a feed's counts with
their events, delete expired counts) and the reads behind the servicer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from almere.counters.v1 import counters_pb2 as pb
from sqlalchemy import Engine, and_, delete, or_, select, tuple_
from sqlmodel import Session, col

from services.common.batch import each
from services.common.changes import Changes
from services.common.clock import from_timestamp, to_timestamp
from services.common.errors import AlreadyExists, NotFound
from services.common.retention import Expire
from services.common.terms import Access
from services.common.tracing import Traced
from services.counters import events, logic
from services.counters.models import CounterRow, CountersOutbox, CountRow


@dataclass(frozen=True, kw_only=True)
class CreateCounter(Traced):
    partner_id: str
    counter_id: str
    counter: pb.Counter  # validated, named, stamped


def create_counters(session: Session, items: Sequence[CreateCounter]) -> list[Any]:
    keys = {(i.partner_id, i.counter_id) for i in items}
    existing = {
        (partner, counter)
        for partner, counter in session.execute(
            select(col(CounterRow.partner_id), col(CounterRow.counter_id)).where(
                tuple_(col(CounterRow.partner_id), col(CounterRow.counter_id)).in_(keys)
            )
        )
    }
    changes = Changes(CountRow, CountersOutbox)

    def apply(item: CreateCounter) -> pb.Counter:
        key = (item.partner_id, item.counter_id)
        if key in existing:
            raise AlreadyExists(f"{item.counter.name} already exists")
        existing.add(key)
        session.add(
            CounterRow(
                partner_id=item.partner_id,
                counter_id=item.counter_id,
                create_time=from_timestamp(item.counter.create_time),
                document=item.counter.SerializeToString(),
            )
        )
        return item.counter

    return each(session, items, apply, changes)


@dataclass(frozen=True, kw_only=True)
class Report(Traced):
    partner_id: str
    counter_id: str
    counter: pb.Counter
    counts: list[pb.Count]  # validated
    bus: Access  # what the COUNTS stream's reader may see of the partner's counts
    now: datetime


def report_counts(session: Session, items: Sequence[Report]) -> list[Any]:
    """Per item: (accepted, duplicates, corrected). New counts are inserted in one statement; a count
    resent with another value replaces the one kept (a counter's correction)."""
    # What is kept of each interval: its row, or the row this batch inserts (a dict for the insert).
    # Read per counter over the batch's time span: a batch may hold a quarter million counts, too many
    # for one statement's parameters.
    kept: dict[tuple[str, str, str, datetime], CountRow | dict[str, Any]] = {}
    spans: dict[tuple[str, str], list[datetime]] = {}
    for item in items:
        spans.setdefault((item.partner_id, item.counter_id), []).extend(
            from_timestamp(c.interval_start) for c in item.counts
        )
    r = CountRow
    for (partner_id, counter_id), starts in spans.items():
        rows = session.execute(
            select(r).where(
                col(r.partner_id) == partner_id,
                col(r.counter_id) == counter_id,
                col(r.interval_start).between(min(starts), max(starts)),
            )
        ).scalars()
        kept.update(((row.partner_id, row.counter_id, row.direction, row.interval_start), row) for row in rows)
    changes = Changes(CountRow, CountersOutbox)

    def apply(item: Report) -> tuple[int, int, int]:
        accepted = duplicates = corrected = 0
        for count in item.counts:
            start = from_timestamp(count.interval_start)
            key = (item.partner_id, item.counter_id, count.direction, start)
            row = kept.get(key)
            if row is None:
                inserted = {
                    "partner_id": item.partner_id,
                    "counter_id": item.counter_id,
                    "direction": count.direction,
                    "interval_start": start,
                    "interval_end": from_timestamp(count.interval_end),
                    "count": count.count,
                    "report_time": item.now,
                }
                kept[key] = inserted
                changes.history.append(inserted)
                accepted += 1
            elif (row.count if isinstance(row, CountRow) else row["count"]) == count.count:
                duplicates += 1
                continue
            else:
                if isinstance(row, CountRow):
                    row.count, row.report_time = count.count, item.now
                else:
                    row["count"] = count.count
                corrected += 1
            event = events.counted(counter=item.counter, count=count, access=item.bus, now=item.now)
            if event is not None:
                changes.outbox.append(event)
        return accepted, duplicates, corrected

    return each(session, items, apply, changes, savepoints=False)  # apply raises nothing


def expire_counts(session: Session, items: Sequence[Expire]) -> list[Any]:
    """Per item, how many of the partner's counts it deleted."""
    deleted = []
    for item in items:
        result = session.execute(
            delete(CountRow).where(
                col(CountRow.partner_id) == item.partner_id, col(CountRow.interval_start) < item.before
            )
        )
        deleted.append(result.rowcount)  # type: ignore[attr-defined]
    return deleted


# --- reads ---------------------------------------------------------------------------------------


def get_counter(engine: Engine, partner_id: str, counter_id: str) -> pb.Counter:
    with Session(engine) as session:
        document = session.execute(
            select(col(CounterRow.document)).where(
                col(CounterRow.partner_id) == partner_id, col(CounterRow.counter_id) == counter_id
            )
        ).scalar()
    if document is None:
        raise NotFound(f"{logic.counter_name(partner_id, counter_id)} not found")
    return pb.Counter.FromString(document)


def list_counters(
    engine: Engine, *, partner_id: str | None, after: tuple[str, str] | None, limit: int
) -> list[pb.Counter]:
    """By partner and counter id; `after` is the last (partner, counter) of the previous page."""
    c = CounterRow
    query = select(col(c.document))
    if partner_id is not None:
        query = query.where(col(c.partner_id) == partner_id)
    if after:
        query = query.where(
            or_(col(c.partner_id) > after[0], and_(col(c.partner_id) == after[0], col(c.counter_id) > after[1]))
        )
    query = query.order_by(col(c.partner_id), col(c.counter_id)).limit(limit)
    with Session(engine) as session:
        return [pb.Counter.FromString(d) for d in session.execute(query).scalars()]


@dataclass(frozen=True, kw_only=True)
class CountQuery:
    partner_id: str
    counter_id: str
    start: datetime
    end: datetime
    # Only intervals that had ended by then (a delayed audience's view).
    ended_by: datetime | None = None


def list_counts(engine: Engine, q: CountQuery, *, after: tuple[datetime, str] | None, limit: int) -> list[pb.Count]:
    """Intervals starting in [start, end), oldest first; `after` is the last (start, direction) given."""
    r = CountRow
    query = select(r).where(
        col(r.partner_id) == q.partner_id,
        col(r.counter_id) == q.counter_id,
        col(r.interval_start) >= q.start,
        col(r.interval_start) < q.end,
    )
    if q.ended_by is not None:
        query = query.where(col(r.interval_end) <= q.ended_by)
    if after:
        query = query.where(
            or_(
                col(r.interval_start) > after[0],
                and_(col(r.interval_start) == after[0], col(r.direction) > after[1]),
            )
        )
    query = query.order_by(col(r.interval_start), col(r.direction)).limit(limit)
    with Session(engine) as session:
        return [
            pb.Count(
                direction=row.direction,
                interval_start=to_timestamp(row.interval_start),
                interval_end=to_timestamp(row.interval_end),
                count=row.count,
            )
            for row in session.execute(query).scalars()
        ]
