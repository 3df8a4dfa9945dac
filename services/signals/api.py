"""The gRPC servicer of almere.signals.v1.SignalService: proto <-> domain, status codes, roles."""

from __future__ import annotations

import asyncio
import functools
import tempfile
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

from almere.signals.v1 import signals_pb2 as pb
from almere.signals.v1 import signals_pb2_grpc
from grpc import aio
from sqlalchemy import Engine

from services.common import paging
from services.common.access import allow
from services.common.auth import PUBLIC_SAFETY, Role, current_identity
from services.common.clock import from_timestamp, to_timestamp, utcnow
from services.common.db import GroupCommitter
from services.common.errors import FailedPrecondition, InvalidArgument
from services.common.feed import Change, EventFeed
from services.common.names import id_from_name, validate_id
from services.signals import compaction, logic, usecases
from services.signals.network_import import read_lights
from services.signals.steps import StepLedger

Context = aio.ServicerContext[Any, Any]
UPDATABLE_FIELDS = frozenset({"display_name", "proposal_policy"})
MAX_REASON = 1000


def _intersection_id(name: str, field: str = "name") -> str:
    return id_from_name(name, "intersections", field)


def _plan_ref(name: str) -> tuple[str, int]:
    """`intersections/x/plans/3` -> ("x", 3)."""
    parent, sep, version = name.rpartition("/plans/")
    if not sep or not version.isdigit() or int(version) < 1:
        raise InvalidArgument(f"name {name!r} must look like intersections/{{id}}/plans/{{version}}")
    return _intersection_id(parent), int(version)


def _reason(text: str) -> str:
    if len(text) > MAX_REASON:
        raise InvalidArgument(f"reason is longer than {MAX_REASON} characters")
    return text


def _version_of(change: Change) -> tuple[str, int]:
    return change[1].intersection_id, change[1].change.version


class SignalApi(signals_pb2_grpc.SignalServiceServicer):
    def __init__(
        self,
        engine: Engine,
        *,
        committer: GroupCommitter,
        feed: EventFeed,
        network: Path | None,
        bounds: logic.CycleBounds,
        lease_s: float,
    ) -> None:
        self._engine = engine
        self._committer = committer
        self._feed = feed
        self._network = network
        self._bounds = bounds
        self._steps = StepLedger(engine, committer, lease_s=lease_s)

    async def drain(self) -> None:
        """Commit the adaptive steps still queued (at stop)."""
        await self._steps.flush()

    # --- intersections ---------------------------------------------------------------------------

    @allow(logic.ENGINEERS)
    async def ImportNetwork(self, request: pb.ImportNetworkRequest, context: Context) -> pb.ImportNetworkResponse:
        identity = current_identity.get()
        if request.net_xml:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "upload.net.xml"
                path.write_bytes(request.net_xml)
                lights = await asyncio.to_thread(read_lights, path)
        elif self._network is not None:
            lights = await asyncio.to_thread(read_lights, self._network)
        else:
            raise FailedPrecondition("no network configured (ALMERE_NETWORK_FILE); send net_xml instead")
        if not lights:
            raise InvalidArgument("the network has no traffic lights")
        for light in lights:
            logic.validate_plan(list(light.intersection.links), light.plan, logic.CycleBounds(0, 10_000))
        item = usecases.Import(identity=identity, lights=lights, now=utcnow())
        created, skipped = await self._committer.submit(usecases.import_lights, item)
        return pb.ImportNetworkResponse(created=created, skipped=skipped)

    @allow(logic.READERS)
    async def GetIntersection(self, request: pb.GetIntersectionRequest, context: Context) -> pb.GetIntersectionResponse:
        doc = await asyncio.to_thread(usecases.get_intersection, self._engine, _intersection_id(request.name))
        return pb.GetIntersectionResponse(intersection=doc)

    @allow(logic.READERS)
    async def ListIntersections(
        self, request: pb.ListIntersectionsRequest, context: Context
    ) -> pb.ListIntersectionsResponse:
        size = paging.page_size(request.page_size)
        after = paging.decode(request.page_token, "intersections")
        docs = await asyncio.to_thread(usecases.list_intersections, self._engine, after_id=after, limit=size + 1)
        token = (
            paging.encode(docs[size - 1].name.removeprefix("intersections/"), "intersections")
            if len(docs) > size
            else ""
        )
        return pb.ListIntersectionsResponse(intersections=docs[:size], next_page_token=token)

    @allow(logic.ENGINEERS)
    async def UpdateIntersection(
        self, request: pb.UpdateIntersectionRequest, context: Context
    ) -> pb.UpdateIntersectionResponse:
        identity = current_identity.get()
        intersection_id = _intersection_id(request.intersection.name, "intersection.name")
        paths = tuple(dict.fromkeys(request.update_mask.paths))
        if not paths or set(paths) - UPDATABLE_FIELDS:
            raise InvalidArgument(f"update_mask must name some of: {', '.join(sorted(UPDATABLE_FIELDS))}")
        if request.intersection.proposal_policy not in pb.ProposalPolicy.values():
            raise InvalidArgument("proposal_policy is not a ProposalPolicy")
        item = usecases.UpdateIntersection(
            identity=identity, intersection_id=intersection_id, patch=request.intersection, paths=paths, now=utcnow()
        )
        return pb.UpdateIntersectionResponse(
            intersection=await self._committer.submit(usecases.update_intersections, item)
        )

    # --- plans -----------------------------------------------------------------------------------

    async def _create(self, parent: str, plan: pb.Plan, proposal: bool) -> pb.Plan:
        identity = current_identity.get()
        intersection_id = _intersection_id(parent, "parent")
        if len(plan.reason) > MAX_REASON:
            raise InvalidArgument(f"reason is longer than {MAX_REASON} characters")
        clean = pb.Plan(type=plan.type, phases=plan.phases, offset_seconds=plan.offset_seconds, reason=plan.reason)
        item = usecases.CreatePlan(
            identity=identity,
            intersection_id=intersection_id,
            plan=clean,
            proposal=proposal,
            bounds=self._bounds,
            now=utcnow(),
        )
        created: pb.Plan = await self._steps.changing(
            {intersection_id}, lambda: self._committer.submit(usecases.create_plans, item)
        )
        return created

    @allow(logic.ENGINEERS)
    async def CreatePlan(self, request: pb.CreatePlanRequest, context: Context) -> pb.CreatePlanResponse:
        return pb.CreatePlanResponse(plan=await self._create(request.parent, request.plan, proposal=False))

    @allow(logic.PROPOSERS, notes={Role.ENGINEER: "no adaptive steps"})
    async def ProposePlan(self, request: pb.ProposePlanRequest, context: Context) -> pb.ProposePlanResponse:
        logic.authorize_propose(current_identity.get(), request.plan.type)
        return pb.ProposePlanResponse(plan=await self._create(request.parent, request.plan, proposal=True))

    @allow(logic.READERS)
    async def GetPlan(self, request: pb.GetPlanRequest, context: Context) -> pb.GetPlanResponse:
        intersection_id, version = _plan_ref(request.name)
        return pb.GetPlanResponse(
            plan=await asyncio.to_thread(usecases.get_plan, self._engine, intersection_id, version)
        )

    @allow(logic.READERS)
    async def ListPlans(self, request: pb.ListPlansRequest, context: Context) -> pb.ListPlansResponse:
        intersection_id = _intersection_id(request.parent, "parent")
        size = paging.page_size(request.page_size)
        before = paging.decode_int(request.page_token, intersection_id)
        plans = await asyncio.to_thread(
            usecases.list_plans, self._engine, intersection_id=intersection_id, before_version=before, limit=size + 1
        )
        token = paging.encode(str(plans[size - 1].version), intersection_id) if len(plans) > size else ""
        return pb.ListPlansResponse(plans=plans[:size], next_page_token=token)

    async def _activate(
        self, name: str, *, reason: str, at: datetime | None = None, required_state: int = 0
    ) -> pb.Plan:
        intersection_id, version = _plan_ref(name)
        item = usecases.Activate(
            identity=current_identity.get(),
            intersection_id=intersection_id,
            version=version,
            at=at,
            reason=_reason(reason),
            now=utcnow(),
            required_state=required_state,
        )
        plan: pb.Plan = await self._steps.changing(
            {intersection_id}, lambda: self._committer.submit(usecases.activate_plans, item)
        )
        return plan

    @allow(logic.ENGINEERS)
    async def ActivatePlan(self, request: pb.ActivatePlanRequest, context: Context) -> pb.ActivatePlanResponse:
        at = from_timestamp(request.activate_time, "activate_time") if request.HasField("activate_time") else None
        return pb.ActivatePlanResponse(plan=await self._activate(request.name, reason=request.reason, at=at))

    @allow(logic.ENGINEERS)
    async def ApprovePlan(self, request: pb.ApprovePlanRequest, context: Context) -> pb.ApprovePlanResponse:
        plan = await self._activate(
            request.name, reason=request.reason or "approved", required_state=pb.PLAN_STATE_PROPOSED
        )
        return pb.ApprovePlanResponse(plan=plan)

    @allow(logic.ENGINEERS)
    async def RejectPlan(self, request: pb.RejectPlanRequest, context: Context) -> pb.RejectPlanResponse:
        identity = current_identity.get()
        intersection_id, version = _plan_ref(request.name)
        item = usecases.Reject(
            identity=identity,
            intersection_id=intersection_id,
            version=version,
            reason=_reason(request.reason),
            now=utcnow(),
        )
        return pb.RejectPlanResponse(plan=await self._committer.submit(usecases.reject_plans, item))

    @allow(logic.ENGINEERS)
    async def RollbackPlan(self, request: pb.RollbackPlanRequest, context: Context) -> pb.RollbackPlanResponse:
        identity = current_identity.get()
        intersection_id = _intersection_id(request.parent, "parent")
        item = usecases.Rollback(
            identity=identity, intersection_id=intersection_id, reason=_reason(request.reason), now=utcnow()
        )
        plan = await self._steps.changing(
            {intersection_id}, lambda: self._committer.submit(usecases.rollback_plans, item)
        )
        return pb.RollbackPlanResponse(plan=plan)

    @allow(logic.STEP_APPLIERS)
    async def ApplySteps(self, request: pb.ApplyStepsRequest, context: Context) -> pb.ApplyStepsResponse:
        results, refusals = await self._steps.apply(current_identity.get(), list(request.steps), list(request.renewals))
        return pb.ApplyStepsResponse(results=results, renewal_refusals=refusals)

    @allow(logic.READERS)
    async def ListSteps(self, request: pb.ListStepsRequest, context: Context) -> pb.ListStepsResponse:
        intersection_id = _intersection_id(request.parent, "parent")
        size = paging.page_size(request.page_size)
        before = paging.decode_int(request.page_token, f"steps/{intersection_id}")
        await self._steps.flush()  # what was applied is listed
        steps = await asyncio.to_thread(
            usecases.list_steps, self._engine, intersection_id=intersection_id, before_sequence=before, limit=size + 1
        )
        token = paging.encode(str(steps[size - 1].sequence), f"steps/{intersection_id}") if len(steps) > size else ""
        return pb.ListStepsResponse(steps=steps[:size], next_page_token=token)

    @allow(logic.READERS)
    async def ListStepSummaries(
        self, request: pb.ListStepSummariesRequest, context: Context
    ) -> pb.ListStepSummariesResponse:
        intersection_id = _intersection_id(request.parent, "parent")
        size = paging.page_size(request.page_size)
        scope = f"step-summaries/{intersection_id}"
        after = compaction.SummaryPosition.decode(paging.decode(request.page_token, scope))
        summaries = await asyncio.to_thread(
            compaction.list_summaries, self._engine, intersection_id=intersection_id, after=after, limit=size + 1
        )
        token = paging.encode(summaries[size - 1][1].encode(), scope) if len(summaries) > size else ""
        return pb.ListStepSummariesResponse(step_summaries=[s for s, _ in summaries[:size]], next_page_token=token)

    # --- priority --------------------------------------------------------------------------------

    @allow(logic.PRIORITY_REQUESTERS, notes=logic.PRIORITY_NOTES)
    async def RequestPriority(self, request: pb.RequestPriorityRequest, context: Context) -> pb.RequestPriorityResponse:
        identity = current_identity.get()
        intersection_id = _intersection_id(request.parent, "parent")
        p = request.priority
        if p.priority_class not in (pb.PRIORITY_CLASS_EMERGENCY, pb.PRIORITY_CLASS_PUBLIC_TRANSPORT):
            raise InvalidArgument("priority_class must be EMERGENCY or PUBLIC_TRANSPORT")
        logic.authorize_priority(identity, p.priority_class)
        if not p.approach_edge_id or not p.HasField("eta"):
            raise InvalidArgument("approach_edge_id and eta are required")
        if len(p.vehicle_id) > 128:
            raise InvalidArgument("vehicle_id is longer than 128 characters")
        now = utcnow()
        eta = from_timestamp(p.eta, "eta")
        if not now - logic.PRIORITY_HOLD <= eta <= now + logic.PRIORITY_HORIZON:
            raise InvalidArgument(f"eta must be between now and {logic.PRIORITY_HORIZON.seconds // 60} minutes ahead")
        clean = pb.Priority(
            priority_class=p.priority_class, vehicle_id=p.vehicle_id, approach_edge_id=p.approach_edge_id, eta=p.eta
        )
        item = usecases.RequestPriority(
            identity=identity, intersection_id=intersection_id, priority=clean, eta=eta, now=now
        )
        return pb.RequestPriorityResponse(priority=await self._committer.submit(usecases.request_priorities, item))

    @allow(PUBLIC_SAFETY)
    async def CancelPriority(self, request: pb.CancelPriorityRequest, context: Context) -> pb.CancelPriorityResponse:
        identity = current_identity.get()
        parent, sep, priority_id = request.name.rpartition("/priorities/")
        if not sep or not priority_id:
            raise InvalidArgument("name must look like intersections/{id}/priorities/{priority}")
        item = usecases.CancelPriority(
            identity=identity,
            intersection_id=_intersection_id(parent),
            priority_id=validate_id(priority_id, "priority id"),
            now=utcnow(),
        )
        return pb.CancelPriorityResponse(priority=await self._committer.submit(usecases.cancel_priorities, item))

    # --- watch and audit -------------------------------------------------------------------------

    @allow(logic.READERS)
    async def WatchSignals(
        self, request: pb.WatchSignalsRequest, context: Context
    ) -> AsyncIterator[pb.WatchSignalsResponse]:
        ids = {_intersection_id(n, f"intersections[{i}]") for i, n in enumerate(request.intersections)} or None
        async with self._feed.watch_from(functools.partial(usecases.active_plans, self._engine, ids), _version_of) as (
            snapshot,
            changes,
        ):
            for doc, plan in snapshot.items:
                change = pb.SignalChange(intersection=doc.name, event="plan_active", version=doc.version, plan=plan)
                yield pb.WatchSignalsResponse(change=change, snapshot=True)
            async for _, event in changes:
                if ids is None or event.intersection_id in ids:
                    yield pb.WatchSignalsResponse(change=event.change, snapshot=False)

    @allow(logic.HISTORY_READERS)
    async def ListIntersectionHistory(
        self, request: pb.ListIntersectionHistoryRequest, context: Context
    ) -> pb.ListIntersectionHistoryResponse:
        await self._steps.flush()  # the applied steps' batches are listed
        rows, token = await usecases.HISTORY.page(
            self._engine,
            entity_id=_intersection_id(request.parent, "parent"),
            page_size=request.page_size,
            page_token=request.page_token,
        )
        entries = [
            pb.HistoryEntry(
                version=r.version,
                time=to_timestamp(r.time),
                actor=r.actor,
                actor_role=r.actor_role,
                action=r.action,
                plan_version=r.plan_version,
                reason=r.reason,
            )
            for r in rows
        ]
        return pb.ListIntersectionHistoryResponse(entries=entries, next_page_token=token)
