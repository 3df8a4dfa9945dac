"""Retention of the optimizer's decisions (retention_decisions_days, at least state.DECISION_MEMORY:
the table is what a restarted optimizer recalls to answer each cause once), in bounded rounds. The
OPTIMIZER stream keeps its own history (stream_max_age_days)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlmodel import Session, col

from services.common.config import Settings
from services.common.housekeeping import Housekeeping, Removed, scheduled
from services.optimizer.models import DecisionRow


def housekeeping(settings: Settings) -> Housekeeping:
    keep = timedelta(days=settings.retention_decisions_days)  # Settings: >= 2 days, DECISION_MEMORY

    return scheduled(
        service="optimizer",
        settings=settings,
        sweep=lambda session, now, limit: [expire_decisions(session, before=now - keep, limit=limit)],
    )


def expire_decisions(session: Session, *, before: datetime, limit: int) -> Removed:
    """Delete at most `limit` decisions taken before `before`, oldest first (on their time index)."""
    old = select(col(DecisionRow.id)).where(col(DecisionRow.time) < before).order_by(col(DecisionRow.time)).limit(limit)
    result = session.execute(
        delete(DecisionRow).where(col(DecisionRow.id).in_(old)).execution_options(synchronize_session=False)
    )
    return Removed(table=DecisionRow.__tablename__, rows=result.rowcount, before=before)  # type: ignore[attr-defined]
