"""The gRPC servicer of almere.whatif.v1.WhatIfService: proto <-> domain, status codes, roles."""

from __future__ import annotations

import asyncio
from typing import Any

from almere.whatif.v1 import whatif_pb2 as pb
from almere.whatif.v1 import whatif_pb2_grpc
from grpc import aio
from sqlalchemy import Engine

from services.common import paging
from services.common.access import allow
from services.common.auth import current_identity
from services.common.bus import Bus
from services.common.clock import from_timestamp, to_timestamp, utcnow
from services.common.config import Settings
from services.common.db import GroupCommitter
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound
from services.common.names import id_from_name
from services.whatif import adopt, logic, starts, usecases

Context = aio.ServicerContext[Any, Any]
OUTPUT_ONLY = (
    "name",
    "state",
    "scenario",
    "start_sim_time_seconds",
    "create_time",
    "finish_time",
    "creator",
    "runs_total",
    "runs_done",
    "results",
    "start_errors",
    "checks",
    "report_path",
    "error",
    "adopted_plan_id",
    "adopted_by",
    "adopt_time",
)


def _what_if_id(name: str) -> str:
    return id_from_name(name, "whatIfs")


class WhatIfApi(whatif_pb2_grpc.WhatIfServiceServicer):
    def __init__(self, engine: Engine, *, committer: GroupCommitter, bus: Bus, settings: Settings) -> None:
        self._engine = engine
        self._committer = committer
        self._bus = bus
        self._settings = settings

    @allow(logic.CREATORS)
    async def CreateWhatIf(self, request: pb.CreateWhatIfRequest, context: Context) -> pb.CreateWhatIfResponse:
        identity = current_identity.get()
        if not request.HasField("what_if"):
            raise InvalidArgument("what_if is required")
        what_if = pb.WhatIf()
        what_if.CopyFrom(request.what_if)
        for output_only in OUTPUT_ONLY:
            what_if.ClearField(output_only)  # type: ignore[arg-type]
        logic.validate(what_if)
        logic.with_do_nothing(what_if)
        if len(what_if.plans) > logic.PLANS[1]:
            raise InvalidArgument(f"plans: with {logic.DO_NOTHING!r} added there would be more than {logic.PLANS[1]}")
        what_if_id = usecases.new_what_if_id()
        what_if.name = usecases.what_if_name(what_if_id)
        saved = None
        if pb.START_SOURCE_TWIN_STATE in what_if.start_sources:
            saved = await starts.twin_state(
                self._bus,
                what_if=what_if.name,
                horizon_seconds=what_if.horizon_minutes * 60.0,
                wait_seconds=self._settings.whatif_twin_timeout_seconds,
            )
        picture = None
        if pb.START_SOURCE_LIVE_PICTURE in what_if.start_sources:
            picture = await starts.live_picture(self._settings, saved=saved)
            detectors_time = await starts.detectors(self._bus, picture)
            if saved is None:  # the twin's clock when it was asked too, else the detectors' latest
                picture.sim_time_seconds = detectors_time
        now = utcnow()
        what_if.state = pb.WhatIf.STATE_RUNNING
        what_if.scenario = saved.scenario if saved is not None else picture.scenario if picture else ""
        what_if.start_sim_time_seconds = (
            saved.sim_time_seconds if saved is not None else picture.sim_time_seconds if picture else 0.0
        )
        what_if.create_time.CopyFrom(to_timestamp(now))
        what_if.creator = identity.caller
        what_if.runs_total = logic.runs_total(what_if)
        strategy = await starts.strategy_in_force(self._settings)
        requests = logic.run_requests(
            what_if, what_if_id, logic.Starts(saved_state=saved, live_picture=picture, strategy=strategy)
        )
        item = usecases.Create(what_if=what_if, requests=requests, now=now)
        stored = await self._committer.submit(usecases.create_what_ifs, item)
        return pb.CreateWhatIfResponse(what_if=stored)

    @allow(logic.READERS)
    async def GetWhatIf(self, request: pb.GetWhatIfRequest, context: Context) -> pb.GetWhatIfResponse:
        what_if = await asyncio.to_thread(usecases.get_what_if, self._engine, _what_if_id(request.name))
        return pb.GetWhatIfResponse(what_if=what_if)

    @allow(logic.READERS)
    async def ListWhatIfs(self, request: pb.ListWhatIfsRequest, context: Context) -> pb.ListWhatIfsResponse:
        size = paging.page_size(request.page_size)
        query = paging.fingerprint("whatIfs")
        after_token = paging.decode(request.page_token, query)
        after = None
        if after_token:
            time, _, last = after_token.partition("|")
            try:
                after = (from_timestamp(_timestamp(time)), last)
            except ValueError:
                raise InvalidArgument("page_token is malformed") from None
        found = await asyncio.to_thread(usecases.list_what_ifs, self._engine, size=size, after=after)
        page, more = found[:size], len(found) > size
        token = ""
        if more:
            end = page[-1]
            token = paging.encode(f"{end.create_time.ToJsonString()}|{end.name.removeprefix('whatIfs/')}", query)
        return pb.ListWhatIfsResponse(what_ifs=page, next_page_token=token)

    @allow(logic.ADOPTERS)
    async def AdoptPlan(self, request: pb.AdoptPlanRequest, context: Context) -> pb.AdoptPlanResponse:
        identity = current_identity.get()
        what_if_id = _what_if_id(request.name)
        if not request.plan_id:
            raise InvalidArgument("plan_id is required")
        what_if = await asyncio.to_thread(usecases.get_what_if, self._engine, what_if_id)
        plan = next((p for p in what_if.plans if p.plan_id == request.plan_id), None)
        if plan is None:
            raise NotFound(f"{request.name} has no plan {request.plan_id!r}")
        if what_if.state == pb.WhatIf.STATE_RUNNING:
            raise FailedPrecondition(f"{request.name} is still running ({what_if.runs_done}/{what_if.runs_total} runs)")
        try:
            changes = await adopt.apply(self._settings, plan, what_if=request.name)
        except adopt.AdoptionFailed as failed:
            applied = "; ".join(failed.applied) or "nothing"
            item = usecases.Adoption(
                what_if_id=what_if_id,
                plan_id=plan.plan_id,
                identity=identity,
                now=utcnow(),
                changes=failed.applied,
                error=failed.message,
            )
            await self._committer.submit(usecases.record_adoptions, item)
            raise FailedPrecondition(
                f"adopting {plan.plan_id!r} failed: {failed.message}; already applied: {applied}"
            ) from None
        item = usecases.Adoption(
            what_if_id=what_if_id, plan_id=plan.plan_id, identity=identity, now=utcnow(), changes=changes
        )
        stored = await self._committer.submit(usecases.record_adoptions, item)
        return pb.AdoptPlanResponse(what_if=stored, changes=changes)

    @allow(logic.READERS)
    async def GetForecastScore(
        self, request: pb.GetForecastScoreRequest, context: Context
    ) -> pb.GetForecastScoreResponse:
        checks = await asyncio.to_thread(usecases.forecast_checks, self._engine)
        return pb.GetForecastScoreResponse(scores=logic.forecast_scores(checks))


def _timestamp(text: str) -> Any:
    from google.protobuf.timestamp_pb2 import Timestamp

    stamp = Timestamp()
    stamp.FromJsonString(text)
    return stamp
