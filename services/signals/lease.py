"""The lease of adaptive control: a light under the optimizer's steps fails safe.

A takeover (an activated PLAN_TYPE_ADAPTIVE plan) starts a lease; every step and every renewal the
controller sends extends it to `lease_s` after it. When none came for `lease_s` (the optimizer died,
the bus or the network is cut, its steps are refused), the scheduled `usecases.expire_leases` hands
the light back to its timing plan by itself, as an engineer's rollback would, with the reason in the
history and on the plan_activated event. Any activation of a timing plan ends the lease.

The signal service's step ledger (steps.py) keeps each light's last sign of life in memory, refuses
steps once that is older than the lease, and writes it here with the step records, a flush interval
(steps.FLUSH_S) later: the schedule hands a light back only when what is recorded is older than the
lease and that interval, so the hand-back comes between the lease and the lease + a flush + a poll
after the last sign of life. Should a commit lag more than that, a renewal may be overtaken by the
hand-back; the flush then tells the ledger, and the next step is refused."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlmodel import Session, col

from services.signals.models import LeaseRow


def expired(renew_time: datetime, now: datetime, lease_s: float) -> bool:
    return now - renew_time >= timedelta(seconds=lease_s)


def reason(renew_time: datetime, now: datetime) -> str:
    """What the history and the event say of a hand-back."""
    return f"adaptive lease expired: no step for {(now - renew_time).total_seconds():.0f} s"


def start(session: Session, intersection_id: str, *, plan_version: int, now: datetime) -> None:
    """A takeover (or a new one replacing it) holds the light from now."""
    row = session.get(LeaseRow, intersection_id)
    if row is None:
        session.add(LeaseRow(intersection_id=intersection_id, plan_version=plan_version, renew_time=now))
    else:
        row.plan_version, row.renew_time = plan_version, now


def end(session: Session, intersection_id: str) -> None:
    session.execute(delete(LeaseRow).where(col(LeaseRow.intersection_id) == intersection_id))


def renew(session: Session, renewals: Mapping[str, tuple[int, datetime]]) -> set[str]:
    """Extend leases (intersection -> (takeover, last sign of life)); returns the intersections no
    longer under that takeover (handed back meanwhile: their renewals came too late)."""
    if not renewals:
        return set()
    rows = {
        r.intersection_id: r
        for r in session.execute(
            select(LeaseRow).where(col(LeaseRow.intersection_id).in_(renewals)).with_for_update()
        ).scalars()
    }
    gone = set()
    for intersection_id, (plan_version, time) in renewals.items():
        row = rows.get(intersection_id)
        if row is None or row.plan_version != plan_version:
            gone.add(intersection_id)
        elif time > row.renew_time:
            row.renew_time = time
    return gone


def due(session: Session, now: datetime, lease_s: float) -> list[LeaseRow]:
    """The leases that ran out, oldest first."""
    query = select(LeaseRow).where(col(LeaseRow.renew_time) <= now - timedelta(seconds=lease_s))
    return list(session.execute(query.order_by(col(LeaseRow.renew_time))).scalars())


def renew_time(session: Session, intersection_id: str) -> datetime | None:
    return session.execute(
        select(col(LeaseRow.renew_time)).where(col(LeaseRow.intersection_id) == intersection_id)
    ).scalar_one_or_none()
