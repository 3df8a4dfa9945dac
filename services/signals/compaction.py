"""Retention of adaptive steps: raw step rows older than retention_steps_days become one summary row
per intersection, hour, takeover and caller (count, first/last sequence and time, min/mean/max
cycle), and summaries older than retention_steps_summary_days are deleted, in bounded rounds.

Each intersection's newest step is always kept: it is what the light shows (usecases.shown) and
where its sequence numbers continue (usecases.light). The history's `steps_applied` rows (one per
recorded batch, so about one per step) go with the raw steps: the summaries say the same, per hour
and caller. Plans and every other history row (who took over, activated, handed back what, when) are
never touched: the audit keeps its meaning."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from itertools import takewhile

from almere.signals.v1 import signals_pb2 as pb
from sqlalchemy import Engine, and_, delete, func, or_, select
from sqlalchemy.orm import aliased
from sqlmodel import Session, col

from contract.bus import STEPS_APPLIED
from services.common.clock import to_timestamp
from services.common.config import Settings
from services.common.errors import InvalidArgument, NotFound
from services.common.housekeeping import Housekeeping, Removed, scheduled
from services.signals import logic
from services.signals.models import HistoryRow, IntersectionRow, StepRow, StepSummaryRow


@dataclass(frozen=True, kw_only=True)
class _Key:
    """What one summary row covers."""

    intersection_id: str
    hour: datetime  # its start
    plan_version: int
    actor: str


def housekeeping(settings: Settings) -> Housekeeping:
    raw = timedelta(days=settings.retention_steps_days)
    summaries = timedelta(days=settings.retention_steps_summary_days)

    def sweep(session: Session, now: datetime, limit: int) -> list[Removed]:
        return [
            compact_steps(session, before=now - raw, limit=limit),
            expire_step_history(session, before=now - raw, limit=limit),
            expire_summaries(session, before=now - summaries, limit=limit),
        ]

    return scheduled(service="signals", settings=settings, sweep=sweep)


@dataclass(kw_only=True)
class _Hour:
    """Compacted steps of one summary key, as they are merged into its row."""

    steps: int
    first_sequence: int
    last_sequence: int
    first_time: datetime
    last_time: datetime
    cycle_min_s: float
    cycle_max_s: float
    cycle_sum_s: float

    @classmethod
    def of(cls, sequence: int, time: datetime, cycle: float) -> _Hour:
        return cls(
            steps=1,
            first_sequence=sequence,
            last_sequence=sequence,
            first_time=time,
            last_time=time,
            cycle_min_s=cycle,
            cycle_max_s=cycle,
            cycle_sum_s=cycle,
        )

    def merge(self, other: _Hour | StepSummaryRow) -> None:
        self.steps += other.steps
        self.first_sequence = min(self.first_sequence, other.first_sequence)
        self.last_sequence = max(self.last_sequence, other.last_sequence)
        self.first_time = min(self.first_time, other.first_time)
        self.last_time = max(self.last_time, other.last_time)
        self.cycle_min_s = min(self.cycle_min_s, other.cycle_min_s)
        self.cycle_max_s = max(self.cycle_max_s, other.cycle_max_s)
        self.cycle_sum_s += other.cycle_sum_s


def compact_steps(session: Session, *, before: datetime, limit: int) -> Removed:
    """Summarise and delete at most `limit` step rows older than `before`, oldest first."""
    newer = aliased(StepRow)
    newest = select(func.max(newer.sequence)).where(col(newer.intersection_id) == col(StepRow.intersection_id))
    candidates = session.execute(
        select(col(StepRow.id), col(StepRow.time))
        .where(col(StepRow.sequence) < newest.scalar_subquery())
        .order_by(col(StepRow.id))
        .limit(limit)
    ).all()
    # Ids follow the order steps were recorded in, so the old ones come first; one recorded a moment
    # out of order waits for the next round.
    ids = [row.id for row in takewhile(lambda row: row.time < before, candidates)]
    if not ids:
        return Removed(table=StepRow.__tablename__, rows=0, before=before)
    # What this transaction deleted (a concurrent round's rows are not counted twice).
    deleted = session.execute(
        delete(StepRow)
        .where(col(StepRow.id).in_(ids))
        .returning(
            col(StepRow.intersection_id),
            col(StepRow.plan_version),
            col(StepRow.actor),
            col(StepRow.sequence),
            col(StepRow.time),
            col(StepRow.phases),
        )
        .execution_options(synchronize_session=False)
    ).all()
    hours: dict[_Key, _Hour] = {}
    for intersection_id, plan_version, actor, sequence, time, phases in deleted:
        hour_start = time.replace(minute=0, second=0, microsecond=0)
        key = _Key(intersection_id=intersection_id, hour=hour_start, plan_version=plan_version, actor=actor)
        step = _Hour.of(sequence, time, sum(p.duration for p in logic.decode_phases(phases)))
        if key in hours:
            hours[key].merge(step)
        else:
            hours[key] = step
    _merge_into_summaries(session, hours)
    return Removed(
        table=StepRow.__tablename__, rows=len(deleted), before=before, note=f"into {len(hours)} hourly summaries"
    )


def _merge_into_summaries(session: Session, hours: dict[_Key, _Hour]) -> None:
    """An hour compacted over several rounds (or partly kept as an intersection's newest step) adds up.
    A round's hours are a few consecutive ones: their summaries are read with one query."""
    s = StepSummaryRow
    found = session.execute(
        select(s)
        .where(
            col(s.intersection_id).in_({key.intersection_id for key in hours}),
            col(s.hour).between(min(key.hour for key in hours), max(key.hour for key in hours)),
        )
        .with_for_update()
    ).scalars()
    rows = {
        _Key(intersection_id=r.intersection_id, hour=r.hour, plan_version=r.plan_version, actor=r.actor): r
        for r in found
    }
    for key, hour in hours.items():
        row = rows.get(key)
        if row is None:
            session.add(StepSummaryRow.model_validate({**asdict(key), **asdict(hour)}))
            continue
        hour.merge(row)
        for name, value in asdict(hour).items():
            setattr(row, name, value)


def expire_step_history(session: Session, *, before: datetime, limit: int) -> Removed:
    """Delete at most `limit` `steps_applied` history rows older than `before`, oldest first."""
    old = (
        select(col(HistoryRow.id))
        .where(col(HistoryRow.action) == STEPS_APPLIED, col(HistoryRow.time) < before)
        .order_by(col(HistoryRow.id))
        .limit(limit)
    )
    result = session.execute(
        delete(HistoryRow).where(col(HistoryRow.id).in_(old)).execution_options(synchronize_session=False)
    )
    return Removed(table=HistoryRow.__tablename__, rows=result.rowcount, before=before, note="(steps applied)")  # type: ignore[attr-defined]


def expire_summaries(session: Session, *, before: datetime, limit: int) -> Removed:
    """Delete at most `limit` summaries of hours before `before`, oldest first."""
    old = (
        select(col(StepSummaryRow.id))
        .where(col(StepSummaryRow.hour) < before)
        .order_by(col(StepSummaryRow.hour))
        .limit(limit)
    )
    result = session.execute(
        delete(StepSummaryRow).where(col(StepSummaryRow.id).in_(old)).execution_options(synchronize_session=False)
    )
    return Removed(table=StepSummaryRow.__tablename__, rows=result.rowcount, before=before)  # type: ignore[attr-defined]


@dataclass(frozen=True, kw_only=True)
class SummaryPosition:
    """Where a page of summaries (newest hour first; within an hour, newest row first) ended."""

    hour: datetime
    id: int

    def encode(self) -> str:
        return f"{self.hour.timestamp():.0f}:{self.id}"

    @classmethod
    def decode(cls, text: str) -> SummaryPosition | None:
        if not text:
            return None
        hour, _, row = text.partition(":")
        if not (hour.isdigit() and row.isdigit()):
            raise InvalidArgument("page_token is malformed")
        return cls(hour=datetime.fromtimestamp(int(hour), UTC), id=int(row))


def list_summaries(
    engine: Engine, *, intersection_id: str, after: SummaryPosition | None, limit: int
) -> list[tuple[pb.StepSummary, SummaryPosition]]:
    s = StepSummaryRow
    with Session(engine) as session:
        if session.get(IntersectionRow, intersection_id) is None:
            raise NotFound(f"intersection {intersection_id!r} not found")
        query = select(s).where(col(s.intersection_id) == intersection_id)
        if after is not None:
            query = query.where(or_(col(s.hour) < after.hour, and_(col(s.hour) == after.hour, col(s.id) < after.id)))
        rows = session.execute(query.order_by(col(s.hour).desc(), col(s.id).desc()).limit(limit)).scalars()
        return [
            (
                pb.StepSummary(
                    intersection=f"intersections/{r.intersection_id}",
                    hour_start_time=to_timestamp(r.hour),
                    plan_version=r.plan_version,
                    actor=r.actor,
                    step_count=r.steps,
                    first_sequence=r.first_sequence,
                    last_sequence=r.last_sequence,
                    first_apply_time=to_timestamp(r.first_time),
                    last_apply_time=to_timestamp(r.last_time),
                    min_cycle_seconds=r.cycle_min_s,
                    mean_cycle_seconds=r.cycle_sum_s / r.steps,
                    max_cycle_seconds=r.cycle_max_s,
                ),
                SummaryPosition(hour=r.hour, id=r.id or 0),
            )
            for r in rows
        ]
