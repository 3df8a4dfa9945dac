"""Partners' data-sharing agreements as a service holding partners' data applies them.

`AgreementBook` follows the PARTNERS stream (an ordered consumer from the first message: the
stream holds every partner's changes) and answers, for a caller and one partner's dataset, what the
caller may see (`Access`). `AccessAudit` records one access record per call and partner, through
the service's outbox to PARTNER_ACCESS, where the partner registry keeps the partner's audit.

The rules, in order: the partner's own callers see everything; a dataset without an agreement is
shared as before if it is occupancy, else kept from others (see _unagreed); outside the agreement's
validity nobody else sees it (REFUSED); an audience the agreement does not list is WITHHELD (the rest
of the answer is given, with the partner's items marked); a caller (other than the public feed) must
declare a purpose the agreement names, in `x-almere-purpose` metadata (REFUSED otherwise); then the
audience's detail and delay apply.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from almere.partners.v1 import events_pb2
from almere.partners.v1 import partners_pb2 as pb
from nats.js.api import ConsumerConfig, DeliverPolicy
from sqlalchemy import insert
from sqlmodel import Session

from contract.bus import AGREEMENT_SET, PARTNER_ACCESS, PARTNER_DATA_READ, PARTNERS
from services.common.auth import (
    PUBLIC_SAFETY,
    PURPOSE_METADATA,
    TRAFFIC_MANAGEMENT,
    Identity,
    Role,
    current_identity,
    current_purpose,
)
from services.common.bus import Bus
from services.common.clock import from_timestamp, to_timestamp
from services.common.db import GroupCommitter
from services.common.outbox import OutboxBase, outbox_row
from services.common.terms import OUTCOMES, Access, Outcome, describe

log = logging.getLogger(__name__)

AUDIENCES = {
    Role.ENGINEER: pb.AUDIENCE_ENGINEER,
    Role.OPTIMIZER: pb.AUDIENCE_OPTIMIZER,
    Role.SIM: pb.AUDIENCE_OPTIMIZER,
    **dict.fromkeys(PUBLIC_SAFETY, pb.AUDIENCE_PUBLIC_SAFETY),
    Role.OPERATOR: pb.AUDIENCE_PARTNERS,
    Role.PARTNER: pb.AUDIENCE_PARTNERS,
    Role.PUBLIC: pb.AUDIENCE_PUBLIC,
}
AUDIT_QUEUE = 10_000
# Who reads partners' data off the bus: the optimizer, for traffic management. Publishers shape what
# they publish to its access (AgreementBook.optimizer_access).
BUS_READER = Identity("bus", Role.OPTIMIZER)


class AgreementBook:
    def __init__(self) -> None:
        self._agreements: dict[tuple[str, int], pb.Agreement] = {}
        self._suspended: set[str] = set()
        self._trust: dict[str, int] = {}
        self._versions: dict[str, int] = {}
        self._suspensions: dict[str, asyncio.Event] = {}
        self._sub: object | None = None
        self.ready = asyncio.Event()

    def apply(self, subject: str, data: bytes) -> None:
        """One PARTNERS event; an older version than one applied (a redelivery) changes nothing."""
        if PARTNERS.event_of(subject) == AGREEMENT_SET:
            changed = events_pb2.AgreementChangedEvent.FromString(data)
            if self._newer(changed.partner_id, changed.version):
                self._agreements[(changed.partner_id, changed.agreement.dataset)] = changed.agreement
            return
        partner = events_pb2.PartnerChangedEvent.FromString(data)
        if not self._newer(partner.partner_id, partner.version):
            return
        self._trust[partner.partner_id] = partner.partner.trust_level or pb.TRUST_LEVEL_BASIC
        if partner.partner.state == pb.Partner.STATE_SUSPENDED:
            self._suspended.add(partner.partner_id)
            self.suspension(partner.partner_id).set()
        else:
            self._suspended.discard(partner.partner_id)
            self._suspensions.pop(partner.partner_id, None)

    def _newer(self, partner_id: str, version: int) -> bool:
        """Whether `version` is newer than what was applied of the partner (and remember it)."""
        if version <= self._versions.get(partner_id, 0):
            return False
        self._versions[partner_id] = version
        return True

    async def follow(self, bus: Bus) -> None:
        """Replay PARTNERS from the start, then keep up; `ready` is set once the replay is done."""
        info = await bus.js.stream_info(PARTNERS.name)
        last = info.state.last_seq

        async def on_message(msg: object) -> None:
            self.apply(msg.subject, msg.data)  # type: ignore[attr-defined]
            if msg.metadata.sequence.stream >= last:  # type: ignore[attr-defined]
                self.ready.set()

        if last == 0:
            self.ready.set()
        self._sub = await bus.js.subscribe(
            PARTNERS.subjects,
            stream=PARTNERS.name,
            cb=on_message,
            ordered_consumer=True,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
        )

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()  # type: ignore[attr-defined]

    def retention(self, dataset: int) -> dict[str, tuple[int, Access]]:
        """Per partner with an agreement for `dataset`: the days of history to keep, and the Access
        under which its deletions are audited."""
        out = {}
        for (partner_id, of), agreement in self._agreements.items():
            if of != dataset:
                continue
            deleted = Access(
                partner_id=partner_id,
                dataset=dataset,
                outcome=Outcome.DELETED,
                agreement=agreement.name,
                revision=agreement.revision,
                reason=f"history older than {agreement.retention_days} days deleted",
            )
            out[partner_id] = (agreement.retention_days, deleted)
        return out

    def suspended(self, partner_id: str) -> bool:
        return partner_id in self._suspended

    def agreement(self, partner_id: str, dataset: int) -> pb.Agreement | None:
        return self._agreements.get((partner_id, dataset))

    def trust(self, partner_id: str) -> int:
        """The city's trust in the partner's incident reports (UNSPECIFIED: not a registered partner)."""
        return self._trust.get(partner_id, pb.TRUST_LEVEL_UNSPECIFIED)

    def known(self, partner_id: str) -> bool:
        """Whether the registry has the partner (any event of it was seen)."""
        return partner_id in self._versions

    def suspension(self, partner_id: str) -> asyncio.Event:
        """Set when the partner is suspended: its open streams end."""
        return self._suspensions.setdefault(partner_id, asyncio.Event())

    def optimizer_access(self, partner_id: str, *, dataset: int, now: datetime) -> Access:
        """What the optimizer, reading for traffic management, may see: what the bus may carry."""
        return self.access(
            identity=BUS_READER, purpose=TRAFFIC_MANAGEMENT, partner_id=partner_id, dataset=dataset, now=now
        )

    def access(self, *, identity: Identity, purpose: str, partner_id: str, dataset: int, now: datetime) -> Access:
        if identity.subject == partner_id and identity.role in (Role.PARTNER, Role.OPERATOR):
            return Access(partner_id=partner_id, dataset=dataset, outcome=Outcome.FULL)
        agreement = self._agreements.get((partner_id, dataset))
        if agreement is None:
            return _unagreed(identity, partner_id=partner_id, dataset=dataset)
        base = Access(
            partner_id=partner_id,
            dataset=dataset,
            outcome=Outcome.FULL,
            agreement=agreement.name,
            revision=agreement.revision,
        )
        if (agreement.HasField("valid_from") and now < from_timestamp(agreement.valid_from)) or (
            agreement.HasField("valid_until") and now >= from_timestamp(agreement.valid_until)
        ):
            return replace(base, outcome=Outcome.REFUSED, reason=f"{agreement.name} does not apply now")
        audience = AUDIENCES.get(identity.role)
        terms = next((t for t in agreement.audiences if t.audience == audience), None)
        if terms is None:
            reason = f"{agreement.name} does not share it with role {identity.role}"
            return replace(base, outcome=Outcome.WITHHELD, reason=reason)
        if audience != pb.AUDIENCE_PUBLIC and purpose not in agreement.purposes:
            declared = f"purpose {purpose!r}" if purpose else "no purpose"
            reason = (
                f"{declared} declared; {agreement.name} is for {', '.join(agreement.purposes)} "
                f"(declare one in '{PURPOSE_METADATA}' metadata)"
            )
            return replace(base, outcome=Outcome.REFUSED, reason=reason)
        if terms.detail == pb.DETAIL_RAW and terms.delay_minutes == 0:
            return base
        return replace(
            base,
            outcome=Outcome.DEGRADED,
            detail=terms.detail,
            round_to=terms.round_to,
            delay=timedelta(minutes=terms.delay_minutes),
            reason=describe(terms),
        )


def _unagreed(identity: Identity, *, partner_id: str, dataset: int) -> Access:
    """A dataset the partner has set no agreement for. Garages' occupancy was shared before partners
    set terms and stays so; counters' counts and the partner's words in its incident reports are new
    and stay with the partner (and, for a report, the police it is made to) until it agrees more."""
    if dataset == pb.DATASET_OCCUPANCY or (dataset == pb.DATASET_INCIDENT_REPORTS and identity.role in PUBLIC_SAFETY):
        return Access(partner_id=partner_id, dataset=dataset, outcome=Outcome.FULL)
    slug = "sensor-counts" if dataset == pb.DATASET_SENSOR_COUNTS else "incident-reports"
    reason = f"partners/{partner_id} has set no {slug} agreement: it shares them with nobody yet"
    return Access(partner_id=partner_id, dataset=dataset, outcome=Outcome.WITHHELD, reason=reason)


@dataclass(frozen=True, kw_only=True)
class Read:
    """One call's read of one partner's dataset, for the audit."""

    access: Access
    identity: Identity
    purpose: str
    method: str
    items: int
    now: datetime


class AccessAudit:
    """Writes access records to the service's outbox, whose relay publishes them to PARTNER_ACCESS like
    any event: a record survives the bus being away and a restart. A read does not wait for it; the
    records of a moment share one group commit. Beyond AUDIT_QUEUE records not yet committed, a
    record is dropped with an error logged (the database away for long)."""

    def __init__(self, *, committer: GroupCommitter, outbox: type[OutboxBase], service: str) -> None:
        self._committer = committer
        self._service = service
        self._writing: set[asyncio.Task[None]] = set()
        table = outbox.__table__  # type: ignore[attr-defined]

        def write(session: Session, rows: Sequence[dict[str, Any]]) -> list[None]:
            session.connection().execute(insert(table), list(rows))
            return [None] * len(rows)

        self._write = write  # one handler: the group committer batches its items together

    def record(self, read: Read) -> None:
        """A read under an agreement (others are not the partner's to audit)."""
        if read.access.audited:
            self.record_always(read)

    def record_always(self, read: Read) -> None:
        access = read.access
        message = events_pb2.PartnerDataRead(
            record=pb.AccessRecord(
                partner=f"partners/{access.partner_id}",
                dataset=access.dataset,  # type: ignore[arg-type]
                agreement=access.agreement,
                revision=access.revision,
                caller=read.identity.caller,
                role=read.identity.role_name,
                purpose=read.purpose,
                service=self._service,
                method=read.method,
                outcome=OUTCOMES[access.outcome],
                reason=access.reason,
                items=read.items,
                read_time=to_timestamp(read.now),
            )
        )
        subject = PARTNER_ACCESS.subject(PARTNER_DATA_READ, access.partner_id)
        row = outbox_row(subject=subject, event_type=PARTNER_DATA_READ, message=message, now=read.now)
        if len(self._writing) >= AUDIT_QUEUE:
            log.error("access audit backlog full: a read of partner %s went unrecorded", access.partner_id)
            return
        task = asyncio.get_running_loop().create_task(self._commit(row, access.partner_id))
        self._writing.add(task)
        task.add_done_callback(self._writing.discard)

    async def _commit(self, row: dict[str, Any], partner_id: str) -> None:
        try:
            await self._committer.submit(self._write, row)
        except Exception:
            log.exception("access audit: a read of partner %s went unrecorded", partner_id)

    async def stop(self) -> None:
        """Commits what is pending (before the committer stops)."""
        if self._writing:
            await asyncio.gather(*self._writing, return_exceptions=True)


class Governance:
    """A service's view of partners' agreements for the caller of the RPC being served."""

    def __init__(self, *, book: AgreementBook, audit: AccessAudit) -> None:
        self.book = book
        self._audit = audit

    def access(self, partner_id: str, *, dataset: int, now: datetime) -> Access:
        """The current caller's access, unaudited (a Watch's changes, audited when it began)."""
        return self.book.access(
            identity=current_identity.get(),
            purpose=current_purpose.get(),
            partner_id=partner_id,
            dataset=dataset,
            now=now,
        )

    def refused_write(self, owner: str, *, dataset: int, method: str, reason: str, now: datetime) -> None:
        """A caller refused writing a partner's data: in the partner's audit (another partner trying
        to write it is the partner's business), when the owner is a registered partner."""
        if not self.book.known(owner):
            return
        agreement = self.book.agreement(owner, dataset)
        refused = Access(
            partner_id=owner,
            dataset=dataset,
            outcome=Outcome.REFUSED,
            agreement=agreement.name if agreement else "",
            revision=agreement.revision if agreement else 0,
            reason=reason,
        )
        identity, purpose = current_identity.get(), current_purpose.get()
        self._audit.record_always(
            Read(access=refused, identity=identity, purpose=purpose, method=method, items=1, now=now)
        )

    def read(self, owners: Iterable[str], *, dataset: int, method: str, now: datetime) -> dict[str, Access]:
        """The current caller's access to the data of each owner of the items read (one owner per
        item), audited once per partner with the number of its items."""
        items = Counter(owners)
        accesses = {owner: self.access(owner, dataset=dataset, now=now) for owner in items}
        identity, purpose = current_identity.get(), current_purpose.get()
        for owner, access in accesses.items():
            self._audit.record(
                Read(access=access, identity=identity, purpose=purpose, method=method, items=items[owner], now=now)
            )
        return accesses
