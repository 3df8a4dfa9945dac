"""The signal use cases: group-commit batch handlers (plan lifecycle, priority decisions, history rows
and events, one result per item; an intersection's changes are serialised by the single writer) and
the reads behind the servicer."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from almere.signals.v1 import signals_pb2 as pb
from google.protobuf import field_mask_pb2
from sqlalchemy import Engine, and_, func, insert, select, true
from sqlmodel import Session, col

from contract.bus import PLAN_ACTIVATED, PRIORITY_DECIDED, PRIORITY_ENDED, STEPS_APPLIED
from services.common.auth import Identity, Role
from services.common.batch import Locked, each, lock
from services.common.changes import Changes
from services.common.clock import to_timestamp
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound
from services.common.feed import Snapshot
from services.common.history import AuditTrail
from services.common.tracing import Traced
from services.signals import events, lease, logic
from services.signals.models import (
    HistoryRow,
    IntersectionRow,
    LeaseRow,
    PlanRow,
    PriorityRow,
    SignalsOutbox,
    StepRow,
)
from services.signals.network_import import ImportedLight

log = logging.getLogger(__name__)

SCHEDULER = Identity("scheduler", Role.SIM)
ACTIVATABLE = frozenset(
    {pb.PLAN_STATE_DRAFT, pb.PLAN_STATE_PROPOSED, pb.PLAN_STATE_SCHEDULED, pb.PLAN_STATE_SUPERSEDED}
)


def plan_name(intersection_id: str, version: int) -> str:
    return f"intersections/{intersection_id}/plans/{version}"


class _Batch(Changes):
    """One batch's intersections (loaded once, bumped per change), history rows and events."""

    def __init__(self, session: Session) -> None:
        super().__init__(HistoryRow, SignalsOutbox)
        self.session = session
        self.rows: dict[str, IntersectionRow] = {}
        self.docs: dict[str, pb.Intersection] = {}

    def intersection(self, intersection_id: str) -> pb.Intersection:
        if intersection_id not in self.docs:
            self.load([intersection_id])
        return self.docs[intersection_id]

    def load(self, intersection_ids: Sequence[str]) -> None:
        """Lock and read these intersections with one query."""
        locked: Locked[IntersectionRow] = lock(
            self.session,
            noun="intersection",
            query=select(IntersectionRow),
            id_column=col(IntersectionRow.id),
            ids=intersection_ids,
        )
        for intersection_id in intersection_ids:
            row = self.rows[intersection_id] = locked.get(intersection_id)
            self.docs[intersection_id] = pb.Intersection.FromString(row.document)

    def undo(self, mark: tuple[int, int]) -> None:
        super().undo(mark)
        self.docs.clear()  # the savepoint rolled back: re-read what the next item touches
        self.rows.clear()

    def record(
        self,
        intersection_id: str,
        *,
        identity: Identity,
        event: str,
        now: datetime,
        reason: str = "",
        plan: pb.Plan | None = None,
        priority: pb.Priority | None = None,
        steps: Sequence[pb.Step] = (),
    ) -> None:
        doc = self.docs[intersection_id]
        doc.version += 1
        doc.update_time.CopyFrom(to_timestamp(now))
        row = self.rows[intersection_id]
        row.version = doc.version
        row.document = doc.SerializeToString()
        why = reason or (plan.reason if plan else "")
        self.history.append(
            {
                "intersection_id": intersection_id,
                "version": doc.version,
                "time": now,
                "actor": identity.caller,
                "actor_role": identity.role_name,
                "action": event,
                "plan_version": plan.version if plan else (steps[-1].plan_version if steps else 0),
                "reason": why,
            }
        )
        self.outbox.append(
            events.signal_event(
                event=event,
                intersection=doc,
                actor=identity.caller,
                now=now,
                reason=why,
                plan=plan,
                priority=priority,
                steps=steps,
            )
        )

    def plan(self, intersection_id: str, version: int) -> tuple[PlanRow, pb.Plan]:
        row = self.session.get(PlanRow, (intersection_id, version))
        if row is None:
            raise NotFound(f"plan {plan_name(intersection_id, version)} not found")
        return row, pb.Plan.FromString(row.document)

    def save_plan(self, row: PlanRow, plan: pb.Plan) -> None:
        row.state = plan.state
        row.document = plan.SerializeToString()

    def activate(
        self, intersection_id: str, *, version: int, identity: Identity, reason: str, now: datetime
    ) -> pb.Plan:
        """Make a plan the active one; the one it replaces becomes SUPERSEDED."""
        doc = self.intersection(intersection_id)
        row, plan = self.plan(intersection_id, version)
        if plan.state not in ACTIVATABLE:
            raise FailedPrecondition(f"{plan.name} is {pb.PlanState.Name(plan.state)} and cannot be activated")
        replaced = pb.PLAN_TYPE_UNSPECIFIED
        if doc.active_plan_version and doc.active_plan_version != version:
            old_row, old = self.plan(intersection_id, doc.active_plan_version)
            if plan.type == pb.PLAN_TYPE_ADAPTIVE:  # approved later: it must still follow what shows now
                logic.validate_step(list(doc.links), plan, shown(self.session, intersection_id, old))
            old.state = pb.PLAN_STATE_SUPERSEDED
            replaced = old.type
            self.save_plan(old_row, old)
        plan.state = pb.PLAN_STATE_ACTIVE
        plan.ClearField("activate_time")
        row.activate_time = None
        self.save_plan(row, plan)
        # The steps of adaptive control after its takeover are not remembered one by one: a rollback
        # hands the intersection back to the plan that ran before the takeover.
        doc.active_plan_version = version
        if not (plan.type == replaced == pb.PLAN_TYPE_ADAPTIVE):
            self.rows[intersection_id].activations = [*self.rows[intersection_id].activations, version]
        if plan.type == pb.PLAN_TYPE_ADAPTIVE:
            lease.start(self.session, intersection_id, plan_version=version, now=now)
        else:
            lease.end(self.session, intersection_id)
        self.record(intersection_id, identity=identity, event=PLAN_ACTIVATED, now=now, reason=reason, plan=plan)
        return plan

    def hand_back(self, intersection_id: str, *, identity: Identity, reason: str, now: datetime) -> pb.Plan:
        """Re-activate the timing plan before the active one: adaptive takeovers in between are
        skipped (their steps only ever follow the optimizer's own, validated against what shows)."""
        self.intersection(intersection_id)
        row = self.rows[intersection_id]
        earlier = [
            (n, v)
            for n, v in enumerate(row.activations[:-1])
            if self.plan(intersection_id, v)[1].type != pb.PLAN_TYPE_ADAPTIVE
        ]
        if not earlier:
            raise FailedPrecondition(f"intersections/{intersection_id} has no earlier plan to roll back to")
        n, previous = earlier[-1]
        row.activations = row.activations[:n]  # activate() appends `previous` again
        return self.activate(intersection_id, version=previous, identity=identity, reason=reason, now=now)


# --- intersections -------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Import(Traced):
    identity: Identity
    lights: list[ImportedLight]
    now: datetime


def import_lights(session: Session, items: Sequence[Import]) -> list[Any]:
    batch = _Batch(session)

    def apply(item: Import) -> tuple[list[pb.Intersection], list[str]]:
        created, skipped = [], []
        for light in item.lights:
            name = f"intersections/{light.intersection_id}"
            if session.get(IntersectionRow, light.intersection_id) is not None:
                skipped.append(name)
                continue
            doc = pb.Intersection()
            doc.CopyFrom(light.intersection)
            doc.name = name
            doc.version = 0
            session.add(
                IntersectionRow(
                    id=light.intersection_id, sumo_tls_id=doc.sumo_tls_id, version=0, document=doc.SerializeToString()
                )
            )
            session.flush()
            batch.intersection(light.intersection_id)
            batch.record(
                light.intersection_id,
                identity=item.identity,
                event="intersection_imported",
                now=item.now,
                reason="network import",
            )
            _store_plan(
                session,
                light.plan,
                intersection_id=light.intersection_id,
                version=1,
                state=pb.PLAN_STATE_DRAFT,
                identity=item.identity,
                now=item.now,
            )
            batch.activate(
                light.intersection_id, version=1, identity=item.identity, reason="imported program", now=item.now
            )
            created.append(batch.docs[light.intersection_id])
        return created, skipped

    return each(session, items, apply, batch)


@dataclass(frozen=True, kw_only=True)
class UpdateIntersection(Traced):
    identity: Identity
    intersection_id: str
    patch: pb.Intersection
    paths: tuple[str, ...]
    now: datetime


def update_intersections(session: Session, items: Sequence[UpdateIntersection]) -> list[Any]:
    batch = _Batch(session)

    def apply(item: UpdateIntersection) -> pb.Intersection:
        doc = batch.intersection(item.intersection_id)
        field_mask_pb2.FieldMask(paths=item.paths).MergeMessage(item.patch, doc, replace_message_field=True)
        if doc.proposal_policy == pb.PROPOSAL_POLICY_UNSPECIFIED:
            doc.proposal_policy = pb.PROPOSAL_POLICY_REQUIRE_APPROVAL
        if not doc.display_name.strip() or len(doc.display_name) > 200:
            raise InvalidArgument("display_name is required (at most 200 characters)")
        batch.record(
            item.intersection_id,
            identity=item.identity,
            event="intersection_updated",
            now=item.now,
            reason=",".join(item.paths),
        )
        return doc

    return each(session, items, apply, batch)


# --- plans ---------------------------------------------------------------------------------------


def _store_plan(
    session: Session,
    plan: pb.Plan,
    *,
    intersection_id: str,
    version: int,
    state: int,
    identity: Identity,
    now: datetime,
) -> pb.Plan:
    stored = pb.Plan()
    stored.CopyFrom(plan)
    stored.name = plan_name(intersection_id, version)
    stored.version = version
    stored.state = state  # type: ignore[assignment]
    stored.author = identity.caller
    stored.cycle_seconds = sum(p.duration for p in plan.phases)
    stored.create_time.CopyFrom(to_timestamp(now))
    session.add(
        PlanRow(intersection_id=intersection_id, version=version, state=state, document=stored.SerializeToString())
    )
    return stored


@dataclass(frozen=True, kw_only=True)
class CreatePlan(Traced):
    identity: Identity
    intersection_id: str
    plan: pb.Plan
    proposal: bool
    bounds: logic.CycleBounds
    now: datetime


def create_plans(session: Session, items: Sequence[CreatePlan]) -> list[Any]:
    batch = _Batch(session)

    def apply(item: CreatePlan) -> pb.Plan:
        doc = batch.intersection(item.intersection_id)
        adaptive = item.plan.type == pb.PLAN_TYPE_ADAPTIVE
        if adaptive:
            if not item.proposal:
                raise InvalidArgument("adaptive steps come from the optimizer (ProposePlan), not CreatePlan")
            _, active = batch.plan(item.intersection_id, doc.active_plan_version)
            logic.validate_step(list(doc.links), item.plan, shown(session, item.intersection_id, active))
            # Once an engineer let the controller take over, its steps need no approval each.
            auto = doc.proposal_policy == pb.PROPOSAL_POLICY_AUTO_APPLY or active.type == pb.PLAN_TYPE_ADAPTIVE
        else:
            logic.validate_plan(list(doc.links), item.plan, item.bounds)
            auto = doc.proposal_policy == pb.PROPOSAL_POLICY_AUTO_APPLY
        latest = session.execute(
            select(func.max(PlanRow.version)).where(col(PlanRow.intersection_id) == item.intersection_id)
        ).scalar_one()
        state = pb.PLAN_STATE_PROPOSED if item.proposal else pb.PLAN_STATE_DRAFT
        plan = _store_plan(
            session,
            item.plan,
            intersection_id=item.intersection_id,
            version=(latest or 0) + 1,
            state=state,
            identity=item.identity,
            now=item.now,
        )
        session.flush()
        batch.record(
            item.intersection_id,
            identity=item.identity,
            event="plan_proposed" if item.proposal else "plan_created",
            now=item.now,
            plan=plan,
        )
        if item.proposal and auto:
            why = "adaptive step" if adaptive else "auto-applied proposal"
            return batch.activate(
                item.intersection_id, version=plan.version, identity=item.identity, reason=why, now=item.now
            )
        return plan

    return each(session, items, apply, batch)


@dataclass(frozen=True, kw_only=True)
class Activate(Traced):
    identity: Identity
    intersection_id: str
    version: int
    at: datetime | None
    reason: str
    now: datetime
    # Only plans in these states may be activated by this request (approval needs PROPOSED).
    required_state: int = 0


def activate_plans(session: Session, items: Sequence[Activate]) -> list[Any]:
    batch = _Batch(session)

    def apply(item: Activate) -> pb.Plan:
        batch.intersection(item.intersection_id)
        row, plan = batch.plan(item.intersection_id, item.version)
        if item.required_state and plan.state != item.required_state:
            raise FailedPrecondition(f"{plan.name} is {pb.PlanState.Name(plan.state)}, not awaiting approval")
        if plan.type == pb.PLAN_TYPE_ADAPTIVE and (plan.state != pb.PLAN_STATE_PROPOSED or item.at is not None):
            raise FailedPrecondition(f"{plan.name} is an adaptive step: only its approval (at once) starts it")
        if item.at is not None and item.at > item.now:
            if plan.state not in ACTIVATABLE:
                raise FailedPrecondition(f"{plan.name} is {pb.PlanState.Name(plan.state)} and cannot be scheduled")
            plan.state = pb.PLAN_STATE_SCHEDULED
            plan.activate_time.CopyFrom(to_timestamp(item.at))
            row.activate_time = item.at
            batch.save_plan(row, plan)
            batch.record(
                item.intersection_id,
                identity=item.identity,
                event="plan_scheduled",
                now=item.now,
                reason=item.reason,
                plan=plan,
            )
            return plan
        return batch.activate(
            item.intersection_id, version=item.version, identity=item.identity, reason=item.reason, now=item.now
        )

    return each(session, items, apply, batch)


@dataclass(frozen=True, kw_only=True)
class Reject(Traced):
    identity: Identity
    intersection_id: str
    version: int
    reason: str
    now: datetime


def reject_plans(session: Session, items: Sequence[Reject]) -> list[Any]:
    batch = _Batch(session)

    def apply(item: Reject) -> pb.Plan:
        batch.intersection(item.intersection_id)
        row, plan = batch.plan(item.intersection_id, item.version)
        if plan.state != pb.PLAN_STATE_PROPOSED:
            raise FailedPrecondition(f"{plan.name} is {pb.PlanState.Name(plan.state)}, not awaiting approval")
        plan.state = pb.PLAN_STATE_REJECTED
        batch.save_plan(row, plan)
        batch.record(
            item.intersection_id,
            identity=item.identity,
            event="plan_rejected",
            now=item.now,
            reason=item.reason,
            plan=plan,
        )
        return plan

    return each(session, items, apply, batch)


@dataclass(frozen=True, kw_only=True)
class Rollback(Traced):
    identity: Identity
    intersection_id: str
    reason: str
    now: datetime


def rollback_plans(session: Session, items: Sequence[Rollback]) -> list[Any]:
    batch = _Batch(session)

    def apply(item: Rollback) -> pb.Plan:
        return batch.hand_back(
            item.intersection_id, identity=item.identity, reason=item.reason or "rollback", now=item.now
        )

    return each(session, items, apply, batch)


def activate_due(session: Session, items: Sequence[datetime]) -> list[Any]:
    """Activate SCHEDULED plans whose time has come (the schedule's tick)."""
    now = max(items)
    due = session.execute(
        select(col(PlanRow.intersection_id), col(PlanRow.version))
        .where(col(PlanRow.state) == pb.PLAN_STATE_SCHEDULED, col(PlanRow.activate_time) <= now)
        .order_by(col(PlanRow.activate_time))
    ).all()
    batch = _Batch(session)
    each(
        session,
        due,
        lambda plan: batch.activate(plan[0], version=plan[1], identity=SCHEDULER, reason="scheduled", now=now),
        batch,
    )
    return [None] * len(items)


def expire_leases(session: Session, items: Sequence[datetime], *, lease_s: float) -> list[Any]:
    """Hand lights whose adaptive lease ran out back to their timing plan (the schedule's tick;
    lease.py)."""
    now = max(items)
    batch = _Batch(session)

    def hand_back(row: LeaseRow) -> pb.Plan:
        why = lease.reason(row.renew_time, now)
        return batch.hand_back(row.intersection_id, identity=SCHEDULER, reason=why, now=now)

    each(session, lease.due(session, now, lease_s), hand_back, batch)
    return [None] * len(items)


def lease_unleased_takeovers(session: Session, items: Sequence[datetime]) -> list[Any]:
    """Give a lease from now to every takeover without one (activated before leases existed), so it
    too is handed back unless its controller renews it; run once as the service starts."""
    now = max(items)
    leased = set(session.execute(select(col(LeaseRow.intersection_id))).scalars())
    for row in session.execute(select(IntersectionRow)).scalars():
        if row.id in leased or not row.activations:
            continue
        active = session.get(PlanRow, (row.id, row.activations[-1]))
        if active is not None and pb.Plan.FromString(active.document).type == pb.PLAN_TYPE_ADAPTIVE:
            lease.start(session, row.id, plan_version=active.version, now=now)
    return [None] * len(items)


# --- priority ------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RequestPriority(Traced):
    identity: Identity
    intersection_id: str
    priority: pb.Priority
    eta: datetime
    now: datetime


def request_priorities(session: Session, items: Sequence[RequestPriority]) -> list[Any]:
    batch = _Batch(session)

    def apply(item: RequestPriority) -> pb.Priority:
        doc = batch.intersection(item.intersection_id)
        _, plan = batch.plan(item.intersection_id, doc.active_plan_version)
        activations = batch.rows[item.intersection_id].activations
        if plan.type == pb.PLAN_TYPE_ADAPTIVE and len(activations) >= 2:  # the greens of the plan it took over
            _, plan = batch.plan(item.intersection_id, activations[-2])
        window_start = item.eta - logic.PRIORITY_LEAD
        granted = [
            (row, pb.Priority.FromString(row.document))
            for row in session.execute(
                select(PriorityRow).where(
                    col(PriorityRow.intersection_id) == item.intersection_id,
                    col(PriorityRow.decision) == pb.PRIORITY_DECISION_GRANTED,
                    col(PriorityRow.hold_until) > window_start,
                )
            ).scalars()
        ]
        emergency_holds = any(p.priority_class == pb.PRIORITY_CLASS_EMERGENCY for _, p in granted)
        ok, reason, grant = logic.decide(
            priority_class=item.priority.priority_class,
            eta=item.eta,
            overlapping_emergency=emergency_holds,
            links=list(doc.links),
            plan=plan,
            approach_edge=item.priority.approach_edge_id,
        )
        priority = pb.Priority()
        priority.CopyFrom(item.priority)
        priority.name = f"intersections/{item.intersection_id}/priorities/pri-{uuid.uuid4().hex[:16]}"
        priority.requester = item.identity.caller
        priority.decision = pb.PRIORITY_DECISION_GRANTED if ok else pb.PRIORITY_DECISION_DENIED
        priority.reason = reason
        hold_until = item.eta
        if grant is not None:
            priority.target_phase_index = grant.phase_index
            priority.target_state = grant.state
            priority.hold_until.CopyFrom(to_timestamp(grant.hold_until))
            hold_until = grant.hold_until
            if item.priority.priority_class == pb.PRIORITY_CLASS_EMERGENCY:
                for row, pre_empted in granted:
                    if pre_empted.priority_class == pb.PRIORITY_CLASS_PUBLIC_TRANSPORT:
                        _end(
                            batch,
                            row,
                            pre_empted,
                            identity=item.identity,
                            reason=f"pre-empted by {priority.vehicle_id}",
                            now=item.now,
                        )
        session.add(
            PriorityRow(
                id=priority.name.rsplit("/", 1)[1],
                intersection_id=item.intersection_id,
                decision=priority.decision,
                priority_class=priority.priority_class,
                hold_until=hold_until,
                document=priority.SerializeToString(),
            )
        )
        batch.record(
            item.intersection_id,
            identity=item.identity,
            event=PRIORITY_DECIDED,
            now=item.now,
            reason=reason,
            priority=priority,
        )
        return priority

    return each(session, items, apply, batch)


def _end(
    batch: _Batch, row: PriorityRow, priority: pb.Priority, *, identity: Identity, reason: str, now: datetime
) -> None:
    priority.decision = pb.PRIORITY_DECISION_ENDED
    priority.reason = reason
    row.decision = priority.decision
    row.document = priority.SerializeToString()
    batch.record(
        row.intersection_id, identity=identity, event=PRIORITY_ENDED, now=now, reason=reason, priority=priority
    )


@dataclass(frozen=True, kw_only=True)
class CancelPriority(Traced):
    identity: Identity
    intersection_id: str
    priority_id: str
    now: datetime


def cancel_priorities(session: Session, items: Sequence[CancelPriority]) -> list[Any]:
    batch = _Batch(session)

    def apply(item: CancelPriority) -> pb.Priority:
        batch.intersection(item.intersection_id)
        row = session.get(PriorityRow, item.priority_id)
        if row is None or row.intersection_id != item.intersection_id:
            raise NotFound(f"priority {item.priority_id!r} not found at intersections/{item.intersection_id}")
        priority = pb.Priority.FromString(row.document)
        if priority.decision != pb.PRIORITY_DECISION_GRANTED:
            raise FailedPrecondition(f"{priority.name} is {pb.PriorityDecision.Name(priority.decision)}, not granted")
        _end(batch, row, priority, identity=item.identity, reason=f"cancelled by {item.identity.caller}", now=item.now)
        return priority

    return each(session, items, apply, batch)


# --- adaptive steps ------------------------------------------------------------------------------


def shown(session: Session, intersection_id: str, active: pb.Plan) -> pb.Plan:
    """What the intersection shows under its `active` plan: the plan itself, or, after an adaptive
    takeover, its last step (recorded; see steps.py for the ones not yet), as an adaptive plan."""
    if active.type != pb.PLAN_TYPE_ADAPTIVE:
        return active
    last = session.execute(
        select(col(StepRow.phases))
        .where(col(StepRow.intersection_id) == intersection_id, col(StepRow.plan_version) == active.version)
        .order_by(col(StepRow.sequence).desc())
        .limit(1)
    ).scalar_one_or_none()
    if last is None:
        return active
    return pb.Plan(type=pb.PLAN_TYPE_ADAPTIVE, version=active.version, phases=logic.decode_phases(last))


@dataclass(frozen=True, kw_only=True)
class Light:
    """An intersection as step validation needs it: its links, the takeover in force (0: none) and
    what it shows, the last step's number and the takeover's last sign of life (lease.py)."""

    links: list[pb.SignalLink]
    plan_version: int
    showing: pb.Plan
    sequence: int
    renew_time: datetime | None


def light(engine: Engine, intersection_id: str) -> Light:
    with Session(engine) as session:
        row = session.get(IntersectionRow, intersection_id)
        if row is None:
            raise NotFound(f"intersection {intersection_id!r} not found")
        doc = pb.Intersection.FromString(row.document)
        plan_row = session.get(PlanRow, (intersection_id, doc.active_plan_version))
        active = pb.Plan.FromString(plan_row.document) if plan_row else pb.Plan()
        sequence = session.execute(
            select(func.max(StepRow.sequence)).where(col(StepRow.intersection_id) == intersection_id)
        ).scalar_one()
        return Light(
            links=list(doc.links),
            plan_version=active.version if active.type == pb.PLAN_TYPE_ADAPTIVE else 0,
            showing=shown(session, intersection_id, active),
            sequence=sequence or 0,
            renew_time=lease.renew_time(session, intersection_id),
        )


@dataclass(frozen=True, kw_only=True)
class RecordSteps(Traced):
    """Steps applied since the last batch (validated and shown already), oldest first, and the
    leases the caller renewed since (intersection -> (takeover, last sign of life))."""

    identity: Identity
    steps: list[tuple[str, pb.Step]]  # (intersection id, step)
    leases: dict[str, tuple[int, datetime]]


def record_steps(session: Session, items: Sequence[RecordSteps]) -> list[Any]:
    """Batch handler: one compact row per step; per intersection one history row and one
    steps_applied event for all its steps in the batch; the leases extended. Each item's result: the
    intersections to read afresh before their next step: those whose takeover is no longer in force
    (handed back meanwhile), and those whose steps were renumbered because another replica recorded
    steps of the light first (the controller's calls moved to this replica while that one still held
    some: the steps are kept, numbered after what is recorded)."""
    batch = _Batch(session)
    rows: list[dict[str, Any]] = []
    grouped: dict[tuple[str, str], list[pb.Step]] = {}
    identities: dict[str, Identity] = {}
    recorded = _last_sequences(session, {intersection_id for item in items for intersection_id, _ in item.steps})
    renumbered: set[str] = set()
    for item in items:
        identities[item.identity.caller] = item.identity
        for intersection_id, step in item.steps:
            last = recorded.get(intersection_id, 0)
            if step.sequence <= last:
                step.sequence = last + 1
                renumbered.add(intersection_id)
            recorded[intersection_id] = step.sequence
            rows.append(
                {
                    "intersection_id": intersection_id,
                    "sequence": step.sequence,
                    "plan_version": step.plan_version,
                    "time": step.apply_time.ToDatetime(UTC),
                    "actor": step.actor,
                    "phases": logic.encode_phases(step.phases),
                    "reason": step.reason,
                }
            )
            grouped.setdefault((intersection_id, item.identity.caller), []).append(step)
    if rows:
        session.execute(insert(StepRow), rows)
    batch.load(sorted({intersection_id for intersection_id, _ in grouped}))
    handed_back = lease.renew(session, {i: renewed for item in items for i, renewed in item.leases.items()})
    for (intersection_id, caller), steps in grouped.items():
        if batch.intersection(intersection_id).active_plan_version != steps[-1].plan_version:
            handed_back.add(intersection_id)
        batch.record(
            intersection_id,
            identity=identities[caller],
            event=STEPS_APPLIED,
            now=steps[-1].apply_time.ToDatetime(UTC),
            reason=f"steps {steps[0].sequence}-{steps[-1].sequence}",
            steps=steps,
        )
    batch.flush(session)
    if renumbered:
        log.warning("steps of %s renumbered after those another replica recorded", sorted(renumbered))
    return [sorted(handed_back | renumbered)] * len(items)


def _last_sequences(session: Session, intersection_ids: set[str]) -> dict[str, int]:
    if not intersection_ids:
        return {}
    query = (
        select(col(StepRow.intersection_id), func.max(StepRow.sequence))
        .where(col(StepRow.intersection_id).in_(intersection_ids))
        .group_by(col(StepRow.intersection_id))
    )
    return {intersection_id: last for intersection_id, last in session.execute(query).all()}


def list_steps(engine: Engine, *, intersection_id: str, before_sequence: int | None, limit: int) -> list[pb.Step]:
    with Session(engine) as session:
        if session.get(IntersectionRow, intersection_id) is None:
            raise NotFound(f"intersection {intersection_id!r} not found")
        query = select(StepRow).where(col(StepRow.intersection_id) == intersection_id)
        if before_sequence is not None:
            query = query.where(col(StepRow.sequence) < before_sequence)
        rows = session.execute(query.order_by(col(StepRow.sequence).desc()).limit(limit)).scalars()
        return [
            pb.Step(
                intersection=f"intersections/{r.intersection_id}",
                phases=logic.decode_phases(r.phases),
                reason=r.reason,
                sequence=r.sequence,
                plan_version=r.plan_version,
                apply_time=to_timestamp(r.time),
                actor=r.actor,
            )
            for r in rows
        ]


# --- reads ---------------------------------------------------------------------------------------


def get_intersection(engine: Engine, intersection_id: str) -> pb.Intersection:
    with Session(engine) as session:
        row = session.get(IntersectionRow, intersection_id)
        if row is None:
            raise NotFound(f"intersection {intersection_id!r} not found")
        return pb.Intersection.FromString(row.document)


def list_intersections(
    engine: Engine, *, after_id: str, limit: int, ids: set[str] | None = None
) -> list[pb.Intersection]:
    query = select(col(IntersectionRow.document)).where(col(IntersectionRow.id) > after_id)
    if ids is not None:
        query = query.where(col(IntersectionRow.id).in_(ids))
    with Session(engine) as session:
        rows = session.execute(query.order_by(col(IntersectionRow.id)).limit(limit)).scalars()
        return [pb.Intersection.FromString(d) for d in rows]


def get_plan(engine: Engine, intersection_id: str, version: int) -> pb.Plan:
    with Session(engine) as session:
        row = session.get(PlanRow, (intersection_id, version))
        if row is None:
            raise NotFound(f"plan {plan_name(intersection_id, version)} not found")
        return pb.Plan.FromString(row.document)


def list_plans(engine: Engine, *, intersection_id: str, before_version: int | None, limit: int) -> list[pb.Plan]:
    with Session(engine) as session:
        if session.get(IntersectionRow, intersection_id) is None:
            raise NotFound(f"intersection {intersection_id!r} not found")
        query = select(col(PlanRow.document)).where(col(PlanRow.intersection_id) == intersection_id)
        if before_version is not None:
            query = query.where(col(PlanRow.version) < before_version)
        rows = session.execute(query.order_by(col(PlanRow.version).desc()).limit(limit)).scalars()
        return [pb.Plan.FromString(d) for d in rows]


def active_plans(engine: Engine, ids: set[str] | None) -> Snapshot[tuple[pb.Intersection, pb.Plan]]:
    """The selected intersections with their active plan, and every intersection's version, in one
    statement."""
    i, p = IntersectionRow, PlanRow
    shown = col(i.id).in_(ids) if ids is not None else true()
    query = (
        select(col(i.id), col(i.version), col(i.document), col(p.document), shown)
        .outerjoin(p, and_(col(p.intersection_id) == col(i.id), col(p.state) == pb.PLAN_STATE_ACTIVE))
        .order_by(col(i.id))
    )
    with Session(engine) as session:
        rows = session.execute(query).all()
    return Snapshot(
        items=[
            (pb.Intersection.FromString(doc), pb.Plan.FromString(plan))
            for _, _, doc, plan, selected in rows
            if selected and plan is not None
        ],
        versions={iid: version for iid, version, _, _, _ in rows},
    )


HISTORY = AuditTrail(noun="intersection", entities=IntersectionRow, rows=HistoryRow, entity_column="intersection_id")
