"""The partner registry's use cases: group-commit batch handlers (partners, their state, agreement
revisions, each with its history row and event) and the reads behind the servicer."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from almere.partners.v1 import events_pb2
from almere.partners.v1 import partners_pb2 as pb
from google.protobuf import field_mask_pb2
from google.protobuf.message import DecodeError
from sqlalchemy import Engine, func, select
from sqlmodel import Session, col

from services.common.auth import Identity
from services.common.batch import Locked, each, lock
from services.common.changes import Changes
from services.common.clock import from_timestamp, to_timestamp
from services.common.errors import AlreadyExists, FailedPrecondition, NotFound
from services.common.tracing import Traced
from services.partners import events, logic
from services.partners.models import AccessRecordRow, AgreementRow, PartnerHistory, PartnerRow, PartnersOutbox

log = logging.getLogger(__name__)

STATE_EVENTS: dict[int, str] = {
    pb.Partner.STATE_SUSPENDED: "partner_suspended",
    pb.Partner.STATE_ACTIVE: "partner_activated",
}


def _document(row: PartnerRow) -> pb.Partner:
    return pb.Partner.FromString(row.document)


def _locked(session: Session, ids: set[str]) -> Locked[PartnerRow]:
    return lock(session, noun="partner", query=select(PartnerRow), id_column=col(PartnerRow.id), ids=ids)


class _Changes(Changes):
    def __init__(self) -> None:
        super().__init__(PartnerHistory, PartnersOutbox)

    def record(self, row: PartnerRow, *, change: str, identity: Identity, reason: str, now: datetime) -> None:
        self.history.append(
            {
                "partner_id": row.id,
                "version": row.version,
                "change": change,
                "actor": identity.caller,
                "actor_role": identity.role_name,
                "reason": reason,
                "time": now,
            }
        )


def _save(row: PartnerRow, partner: pb.Partner, now: datetime) -> None:
    row.version += 1
    row.update_time = now
    partner.update_time.CopyFrom(to_timestamp(now))
    row.state = partner.state
    row.document = partner.SerializeToString()


@dataclass(frozen=True, kw_only=True)
class CreatePartner(Traced):
    identity: Identity
    partner_id: str
    partner: pb.Partner  # validated, output fields cleared
    now: datetime


def create_partners(session: Session, items: Sequence[CreatePartner]) -> list[Any]:
    rows = _locked(session, {i.partner_id for i in items}).rows
    changes = _Changes()

    def apply(item: CreatePartner) -> pb.Partner:
        if item.partner_id in rows:
            raise AlreadyExists(f"partner {item.partner_id!r} already exists")
        partner = pb.Partner()
        partner.CopyFrom(item.partner)
        partner.name = f"partners/{item.partner_id}"
        partner.state = pb.Partner.STATE_ACTIVE
        partner.create_time.CopyFrom(to_timestamp(item.now))
        row = PartnerRow(
            id=item.partner_id,
            kind=partner.kind,
            state=0,
            version=0,
            create_time=item.now,
            update_time=item.now,
            document=b"",
        )
        _save(row, partner, item.now)
        session.add(row)
        rows[row.id] = row
        changes.record(row, change="created", identity=item.identity, reason="", now=item.now)
        changes.outbox.append(
            events.partner_changed(
                event="partner_created", partner_id=row.id, version=row.version, partner=partner, now=item.now
            )
        )
        return partner

    return each(session, items, apply, changes)


@dataclass(frozen=True, kw_only=True)
class UpdatePartner(Traced):
    identity: Identity
    partner_id: str
    patch: pb.Partner
    paths: tuple[str, ...]
    now: datetime


def update_partners(session: Session, items: Sequence[UpdatePartner]) -> list[Any]:
    rows = _locked(session, {i.partner_id for i in items})
    changes = _Changes()

    def apply(item: UpdatePartner) -> pb.Partner:
        row = rows.get(item.partner_id)
        logic.check_keeper(item.identity, item.partner_id)
        partner = _document(row)
        field_mask_pb2.FieldMask(paths=item.paths).MergeMessage(item.patch, partner, replace_repeated_field=True)
        logic.validate_partner(partner)
        _save(row, partner, item.now)
        changes.record(row, change=f"updated {', '.join(item.paths)}", identity=item.identity, reason="", now=item.now)
        changes.outbox.append(
            events.partner_changed(
                event="partner_updated", partner_id=row.id, version=row.version, partner=partner, now=item.now
            )
        )
        return partner

    return each(session, items, apply, changes)


@dataclass(frozen=True, kw_only=True)
class ChangeState(Traced):
    identity: Identity
    partner_id: str
    state: int
    reason: str
    now: datetime


def change_states(session: Session, items: Sequence[ChangeState]) -> list[Any]:
    rows = _locked(session, {i.partner_id for i in items})
    changes = _Changes()

    def apply(item: ChangeState) -> pb.Partner:
        row = rows.get(item.partner_id)
        partner = _document(row)
        if partner.state == item.state:
            raise FailedPrecondition(f"partner {item.partner_id!r} is already {STATE_EVENTS[item.state].split('_')[1]}")
        partner.state = item.state  # type: ignore[assignment]
        partner.state_reason = item.reason
        _save(row, partner, item.now)
        event = STATE_EVENTS[item.state]
        changes.record(row, change=event, identity=item.identity, reason=item.reason, now=item.now)
        changes.outbox.append(
            events.partner_changed(event=event, partner_id=row.id, version=row.version, partner=partner, now=item.now)
        )
        return partner

    return each(session, items, apply, changes)


@dataclass(frozen=True, kw_only=True)
class SetAgreement(Traced):
    identity: Identity
    partner_id: str
    dataset: int
    agreement: pb.Agreement  # validated, output fields cleared
    now: datetime


def set_agreements(session: Session, items: Sequence[SetAgreement]) -> list[Any]:
    rows = _locked(session, {i.partner_id for i in items})
    changes = _Changes()

    def apply(item: SetAgreement) -> pb.Agreement:
        row = rows.get(item.partner_id)
        logic.check_keeper(item.identity, item.partner_id)
        latest = session.execute(
            select(func.max(AgreementRow.revision)).where(
                col(AgreementRow.partner_id) == item.partner_id, col(AgreementRow.dataset) == item.dataset
            )
        ).scalar()
        agreement = pb.Agreement()
        agreement.CopyFrom(item.agreement)
        agreement.name = logic.agreement_name(item.partner_id, item.dataset)
        agreement.dataset = item.dataset  # type: ignore[assignment]
        agreement.revision = (latest or 0) + 1
        agreement.updater = item.identity.caller
        agreement.update_time.CopyFrom(to_timestamp(item.now))
        session.add(
            AgreementRow(
                partner_id=item.partner_id,
                dataset=item.dataset,
                revision=agreement.revision,
                updater=item.identity.caller,
                update_time=item.now,
                document=agreement.SerializeToString(),
            )
        )
        row.version += 1
        row.update_time = item.now
        change = f"agreement {logic.SLUGS[item.dataset]} revision {agreement.revision}"
        changes.record(row, change=change, identity=item.identity, reason=agreement.change_note, now=item.now)
        changes.outbox.append(
            events.agreement_set(partner_id=row.id, version=row.version, agreement=agreement, now=item.now)
        )
        return agreement

    return each(session, items, apply, changes)


@dataclass(frozen=True, kw_only=True)
class DataRead:
    sequence: int
    data: bytes


def record_reads(session: Session, items: Sequence[DataRead]) -> list[Any]:
    """Stores access records; one whose stream sequence is stored already (a redelivery) or that
    cannot be read (it would come back for ever) is dropped."""
    known = set(
        session.execute(
            select(col(AccessRecordRow.sequence)).where(col(AccessRecordRow.sequence).in_([i.sequence for i in items]))
        ).scalars()
    )
    for item in items:
        if item.sequence in known:
            continue
        known.add(item.sequence)
        try:
            record = events_pb2.PartnerDataRead.FromString(item.data).record
        except DecodeError:
            log.error("dropping an unreadable access record (stream sequence %d)", item.sequence)
            continue
        session.add(
            AccessRecordRow(
                sequence=item.sequence,
                partner_id=record.partner.removeprefix("partners/"),
                read_time=from_timestamp(record.read_time),
                document=record.SerializeToString(),
            )
        )
    return [None] * len(items)


# --- reads ----------------------------------------------------------------------------------------


def get_partner(engine: Engine, partner_id: str) -> pb.Partner:
    with Session(engine) as session:
        row = session.get(PartnerRow, partner_id)
        if row is None:
            raise NotFound(f"partner {partner_id!r} not found")
        return _document(row)


def list_partners(engine: Engine, *, size: int, after: str, only: str | None) -> list[pb.Partner]:
    """By id; `only` narrows to one partner (a partner listing itself)."""
    query = select(PartnerRow).where(col(PartnerRow.id) > after)
    if only is not None:
        query = query.where(col(PartnerRow.id) == only)
    with Session(engine) as session:
        rows = session.execute(query.order_by(col(PartnerRow.id)).limit(size + 1)).scalars().all()
        return [_document(r) for r in rows]


def agreements(engine: Engine, partner_id: str, *, dataset: int | None = None) -> list[pb.Agreement]:
    """The revisions in force, one per dataset (of `dataset` only when given); NOT_FOUND for an
    unknown partner."""
    newest = (
        select(col(AgreementRow.dataset), func.max(col(AgreementRow.revision)).label("revision"))
        .where(col(AgreementRow.partner_id) == partner_id)
        .group_by(col(AgreementRow.dataset))
        .subquery()
    )
    query = (
        select(AgreementRow)
        .join(
            newest, (col(AgreementRow.dataset) == newest.c.dataset) & (col(AgreementRow.revision) == newest.c.revision)
        )
        .where(col(AgreementRow.partner_id) == partner_id)
        .order_by(col(AgreementRow.dataset))
    )
    if dataset is not None:
        query = query.where(col(AgreementRow.dataset) == dataset)
    with Session(engine) as session:
        if session.get(PartnerRow, partner_id) is None:
            raise NotFound(f"partner {partner_id!r} not found")
        return [pb.Agreement.FromString(r.document) for r in session.execute(query).scalars()]


def revisions(engine: Engine, partner_id: str, dataset: int, *, size: int, before: int | None) -> list[pb.Agreement]:
    """Newest first; `before` is the last revision of the previous page."""
    query = select(AgreementRow).where(col(AgreementRow.partner_id) == partner_id, col(AgreementRow.dataset) == dataset)
    if before is not None:
        query = query.where(col(AgreementRow.revision) < before)
    with Session(engine) as session:
        rows = session.execute(query.order_by(col(AgreementRow.revision).desc()).limit(size + 1)).scalars().all()
        return [pb.Agreement.FromString(r.document) for r in rows]


def access_records(
    engine: Engine, partner_id: str, *, size: int, before: int | None
) -> list[tuple[int, pb.AccessRecord]]:
    """Newest first, with their row ids; `before` is the last row id of the previous page."""
    query = select(AccessRecordRow).where(col(AccessRecordRow.partner_id) == partner_id)
    if before is not None:
        query = query.where(col(AccessRecordRow.id) < before)
    with Session(engine) as session:
        if session.get(PartnerRow, partner_id) is None:
            raise NotFound(f"partner {partner_id!r} not found")
        rows = session.execute(query.order_by(col(AccessRecordRow.id).desc()).limit(size + 1)).scalars().all()
        return [(r.id or 0, pb.AccessRecord.FromString(r.document)) for r in rows]
