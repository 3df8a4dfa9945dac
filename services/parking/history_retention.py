"""The city's retention of occupancy history (retention_occupancy_history_days), in bounded rounds.
Partners' agreements that keep less go on deleting their operators' history sooner (retention.py,
usecases.expire_history): whichever deletes first wins."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlmodel import Session, col

from services.common.config import Settings
from services.common.housekeeping import Housekeeping, Removed, scheduled
from services.parking.models import Facility, OccupancySample


def housekeeping(settings: Settings) -> Housekeeping:
    keep = timedelta(days=settings.retention_occupancy_history_days)

    return scheduled(
        service="parking",
        settings=settings,
        sweep=lambda session, now, limit: [expire_samples(session, before=now - keep, limit=limit)],
    )


def expire_samples(session: Session, *, before: datetime, limit: int) -> Removed:
    """Delete at most `limit` samples measured before `before`, facility by facility: each one's
    oldest are found on its (facility, time) index, so a round with nothing to do reads nothing."""
    s = OccupancySample
    deleted = 0
    for facility_id in session.execute(select(col(Facility.id)).order_by(col(Facility.id))).scalars().all():
        if deleted >= limit:
            break
        old = (
            select(col(s.id))
            .where(col(s.facility_id) == facility_id, col(s.source_time) < before)
            .order_by(col(s.source_time))
            .limit(limit - deleted)
        )
        result = session.execute(delete(s).where(col(s.id).in_(old)).execution_options(synchronize_session=False))
        deleted += result.rowcount  # type: ignore[attr-defined]
    return Removed(table=s.__tablename__, rows=deleted, before=before)
