"""The what-if use cases: group-commit batch handlers (create with its run requests in the outbox,
run results and observations from the bus, adoptions) and the reads behind the servicer."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from almere.whatif.v1 import runs_pb2
from almere.whatif.v1 import whatif_pb2 as pb
from google.protobuf.message import DecodeError
from sqlalchemy import Engine, and_, or_, select
from sqlmodel import Session, col

from contract.bus import OBSERVED, RUN_FINISHED, RUN_REQUESTED, WHATIF_RESULTS, WHATIF_RUNS
from services.common.auth import Identity
from services.common.clock import from_timestamp, to_timestamp
from services.common.errors import NotFound
from services.common.outbox import outbox_row
from services.whatif import logic, report
from services.whatif.models import (
    AdoptionRow,
    ForecastCheckRow,
    PendingObservedRow,
    RunResultRow,
    WhatIfOutbox,
    WhatIfRow,
)

log = logging.getLogger(__name__)


def new_what_if_id() -> str:
    return f"wi-{uuid.uuid4().hex[:16]}"


def what_if_name(what_if_id: str) -> str:
    return f"whatIfs/{what_if_id}"


def _document(row: WhatIfRow) -> pb.WhatIf:
    return pb.WhatIf.FromString(row.document)


def _save(row: WhatIfRow, what_if: pb.WhatIf) -> None:
    row.state = what_if.state
    row.runs_done = what_if.runs_done
    row.finish_time = from_timestamp(what_if.finish_time) if what_if.HasField("finish_time") else None
    row.document = what_if.SerializeToString()


# --- create ---------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Create:
    what_if: pb.WhatIf  # validated, named, RUNNING, with its output fields set
    requests: list[runs_pb2.RunRequest]
    now: datetime


def create_what_ifs(session: Session, items: Sequence[Create]) -> list[Any]:
    """The what-if and its run requests (outbox -> WHATIF_RUNS) in one transaction."""
    outbox = []
    for item in items:
        what_if = item.what_if
        session.add(
            WhatIfRow(
                id=what_if.name.removeprefix("whatIfs/"),
                state=what_if.state,
                creator=what_if.creator,
                runs_total=what_if.runs_total,
                create_time=item.now,
                document=what_if.SerializeToString(),
            )
        )
        for request in item.requests:
            outbox.append(
                outbox_row(
                    subject=WHATIF_RUNS.subject(RUN_REQUESTED, request.run_id),
                    event_type=RUN_REQUESTED,
                    message=request,
                    now=item.now,
                )
            )
    if outbox:
        session.flush()
        session.connection().execute(WhatIfOutbox.__table__.insert(), outbox)  # type: ignore[attr-defined]
    return [item.what_if for item in items]


# --- results from the bus -------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Incoming:
    subject: str
    data: bytes
    now: datetime
    reports_dir: Path | None = field(default=None)


def record_results(session: Session, items: Sequence[Incoming]) -> list[Any]:
    """Stores RunResults and Observed messages; finishes a what-if when its last run is in. A message
    for an unknown what-if, or a run already stored, changes nothing (redeliveries)."""
    out: list[Any] = []
    for item in items:
        event = WHATIF_RESULTS.event_of(item.subject)
        try:
            if event == RUN_FINISHED:
                out.append(_run_finished(session, runs_pb2.RunResult.FromString(item.data), item))
            elif event == OBSERVED:
                out.append(_observed(session, runs_pb2.Observed.FromString(item.data), item.now))
            else:
                out.append(None)
        except DecodeError:  # would come back for ever: dropped
            log.error("dropping an unreadable %s message on %s", event, item.subject)
            out.append(None)
        session.flush()
    return out


def _locked(session: Session, what_if_id: str) -> WhatIfRow | None:
    return session.execute(
        select(WhatIfRow).where(col(WhatIfRow.id) == what_if_id).with_for_update()
    ).scalar_one_or_none()


def _run_finished(session: Session, result: runs_pb2.RunResult, item: Incoming) -> str | None:
    what_if_id = result.what_if.removeprefix("whatIfs/")
    row = _locked(session, what_if_id)
    if row is None:
        return None
    seen = session.execute(
        select(col(RunResultRow.id)).where(
            and_(col(RunResultRow.what_if_id) == what_if_id, col(RunResultRow.run_id) == result.run_id)
        )
    ).first()
    if seen is not None:
        return None
    session.add(
        RunResultRow(
            what_if_id=what_if_id,
            run_id=result.run_id,
            plan_id=result.plan_id,
            seed=result.seed,
            start_source=result.start_source,
            failed=bool(result.error),
            time=item.now,
            result=result.SerializeToString(),
        )
    )
    what_if = _document(row)
    what_if.runs_done += 1
    if result.error and not what_if.error:
        what_if.error = f"run {result.run_id} (plan {result.plan_id}, seed {result.seed}) failed: {result.error}"
    if what_if.runs_done >= what_if.runs_total and what_if.state == pb.WhatIf.STATE_RUNNING:
        session.flush()
        _finish(session, what_if, item)
    _save(row, what_if)
    return what_if_id


def _stored_results(session: Session, what_if_id: str) -> list[runs_pb2.RunResult]:
    rows = session.execute(select(col(RunResultRow.result)).where(col(RunResultRow.what_if_id) == what_if_id)).scalars()
    return [runs_pb2.RunResult.FromString(r) for r in rows]


def _finish(session: Session, what_if: pb.WhatIf, item: Incoming) -> None:
    what_if_id = what_if.name.removeprefix("whatIfs/")
    results = [r for r in _stored_results(session, what_if_id) if not r.error]
    what_if.ClearField("results")
    what_if.results.extend(logic.aggregate(what_if, results))
    what_if.ClearField("start_errors")
    what_if.start_errors.extend(logic.start_errors(what_if.results))
    what_if.state = pb.WhatIf.STATE_FAILED if what_if.error else pb.WhatIf.STATE_SUCCEEDED
    what_if.finish_time.CopyFrom(to_timestamp(item.now))
    pending = session.get(PendingObservedRow, what_if_id)
    if pending is not None:  # the twin passed the horizon before the last run was in
        _check(session, what_if, runs_pb2.Observed.FromString(pending.observed), item.now)
        session.delete(pending)
    if item.reports_dir is not None and what_if.results:
        try:
            what_if.report_path = report.write(what_if, item.reports_dir)
        except Exception:  # the results stand without their report
            log.exception("could not write the report of %s", what_if.name)


def _observed(session: Session, observed: runs_pb2.Observed, now: datetime) -> str | None:
    """The twin's KPIs once it has run past a what-if's horizon: checked against its forecasts, or
    kept until its runs are in (a busy machine may finish them after the twin passed the horizon)."""
    what_if_id = observed.what_if.removeprefix("whatIfs/")
    row = _locked(session, what_if_id)
    if row is None:
        return None
    what_if = _document(row)
    if what_if.state == pb.WhatIf.STATE_RUNNING:
        if session.get(PendingObservedRow, what_if_id) is None:
            session.add(PendingObservedRow(what_if_id=what_if_id, observed=observed.SerializeToString(), time=now))
        return None
    _check(session, what_if, observed, now)
    _save(row, what_if)
    return what_if_id


def _check(session: Session, what_if: pb.WhatIf, observed: runs_pb2.Observed, now: datetime) -> None:
    what_if_id = what_if.name.removeprefix("whatIfs/")
    checks = logic.forecast_checks(what_if.results, observed)
    existing = {
        (r.kpi, r.start_source)
        for r in session.execute(
            select(ForecastCheckRow).where(col(ForecastCheckRow.what_if_id) == what_if_id)
        ).scalars()
    }
    for check in checks:
        if (check.kpi, check.start_source) in existing:
            continue
        session.add(
            ForecastCheckRow(
                what_if_id=what_if_id,
                kpi=check.kpi,
                start_source=check.start_source,
                forecast=check.forecast,
                observed=check.observed,
                relative_error=check.relative_error,
                within_spread=check.within_spread,
                time=now,
            )
        )
    what_if.ClearField("checks")
    what_if.checks.extend(checks)


# --- adoption -------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Adoption:
    what_if_id: str
    plan_id: str
    identity: Identity
    now: datetime
    changes: list[str]
    error: str = ""


def record_adoptions(session: Session, items: Sequence[Adoption]) -> list[Any]:
    """The adoption history row; the what-if's adopted plan when nothing failed."""
    out: list[Any] = []
    for item in items:
        row = _locked(session, item.what_if_id)
        if row is None:
            out.append(NotFound(f"what-if whatIfs/{item.what_if_id} not found"))
            continue
        session.add(
            AdoptionRow(
                what_if_id=item.what_if_id,
                plan_id=item.plan_id,
                actor=item.identity.caller,
                actor_role=item.identity.role_name,
                time=item.now,
                changes=item.changes,
                error=item.error[:2000],
            )
        )
        what_if = _document(row)
        if not item.error:
            what_if.adopted_plan_id = item.plan_id
            what_if.adopted_by = item.identity.caller
            what_if.adopt_time.CopyFrom(to_timestamp(item.now))
            _save(row, what_if)
        out.append(what_if)
    return out


# --- reads ----------------------------------------------------------------------------------------


def get_what_if(engine: Engine, what_if_id: str) -> pb.WhatIf:
    with Session(engine) as session:
        row = session.get(WhatIfRow, what_if_id)
        if row is None:
            raise NotFound(f"what-if whatIfs/{what_if_id} not found")
        return _document(row)


def list_what_ifs(engine: Engine, *, size: int, after: tuple[datetime, str] | None) -> list[pb.WhatIf]:
    """Newest first; `after` is the (create_time, id) of the last one of the previous page."""
    query = select(WhatIfRow)
    if after is not None:
        time, last = after
        query = query.where(
            or_(col(WhatIfRow.create_time) < time, and_(col(WhatIfRow.create_time) == time, col(WhatIfRow.id) < last))
        )
    query = query.order_by(col(WhatIfRow.create_time).desc(), col(WhatIfRow.id).desc()).limit(size + 1)
    with Session(engine) as session:
        rows = session.execute(query).scalars().all()
        return [_document(r) for r in rows]


def forecast_checks(engine: Engine) -> list[pb.ForecastCheck]:
    with Session(engine) as session:
        rows = session.execute(select(ForecastCheckRow)).scalars().all()
        return [
            pb.ForecastCheck(
                kpi=r.kpi,
                start_source=r.start_source,
                forecast=r.forecast,
                observed=r.observed,
                relative_error=r.relative_error,
                within_spread=r.within_spread,
            )
            for r in rows
        ]
