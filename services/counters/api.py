"""The gRPC servicer of almere.counters.v1.CounterService: proto <-> domain, status codes, roles, and
the partners' agreements on every read of counts."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from almere.counters.v1 import counters_pb2 as pb
from almere.counters.v1 import counters_pb2_grpc
from almere.partners.v1 import partners_pb2 as ppb
from grpc import aio
from sqlalchemy import Engine

from services.common import paging
from services.common.access import allow
from services.common.agreements import Governance
from services.common.auth import Role, current_identity
from services.common.clock import from_timestamp, to_timestamp, utcnow
from services.common.db import GroupCommitter
from services.common.errors import InvalidArgument, NotFound, PermissionDenied
from services.common.names import validate_id
from services.common.strict import strict
from services.common.terms import require, sharing_of
from services.counters import logic, usecases

Context = aio.ServicerContext[Any, Any]
DATASET = ppb.DATASET_SENSOR_COUNTS


class CounterApi(counters_pb2_grpc.CounterServiceServicer):
    def __init__(self, engine: Engine, *, committer: GroupCommitter, governance: Governance) -> None:
        self._engine = engine
        self._committer = committer
        self._governance = governance

    def _owner(self, partner_id: str, method: str) -> None:
        """A partner uses only its own counters; another's trying is in that partner's audit."""
        try:
            logic.check_owner(current_identity.get(), partner_id)
        except PermissionDenied as refused:
            self._governance.refused_write(
                partner_id, dataset=DATASET, method=method, reason=refused.message, now=utcnow()
            )
            raise

    def _registered(self, partner_id: str) -> None:
        if not self._governance.book.known(partner_id):
            raise NotFound(f"partner {partner_id!r} is not registered with the city (partners/{partner_id})")

    async def _counter(self, partner_id: str, counter_id: str) -> pb.Counter:
        return await asyncio.to_thread(usecases.get_counter, self._engine, partner_id, counter_id)

    @allow(logic.KEEPERS, notes=logic.OWN)
    async def CreateCounter(self, request: pb.CreateCounterRequest, context: Context) -> pb.CreateCounterResponse:
        partner_id = logic.parse_parent(request.parent)
        self._owner(partner_id, "CreateCounter")
        counter_id = validate_id(request.counter_id, "counter_id")
        self._registered(partner_id)
        counter = pb.Counter()
        counter.CopyFrom(request.counter)
        logic.validate_counter(counter)
        counter.name = logic.counter_name(partner_id, counter_id)
        counter.create_time.CopyFrom(to_timestamp(utcnow()))
        item = usecases.CreateCounter(partner_id=partner_id, counter_id=counter_id, counter=counter)
        return pb.CreateCounterResponse(counter=await self._committer.submit(usecases.create_counters, item))

    @allow(logic.DESCRIPTION_READERS, notes=logic.OWN)
    async def GetCounter(self, request: pb.GetCounterRequest, context: Context) -> pb.GetCounterResponse:
        partner_id, counter_id = logic.parse_name(request.name)
        logic.check_owner(current_identity.get(), partner_id)
        counter = await self._counter(partner_id, counter_id)
        return pb.GetCounterResponse(counter=counter)

    @allow(logic.DESCRIPTION_READERS, notes=logic.OWN)
    async def ListCounters(self, request: pb.ListCountersRequest, context: Context) -> pb.ListCountersResponse:
        identity = current_identity.get()
        partner_id = logic.parse_list_parent(request.parent)
        if identity.role is Role.PARTNER:
            partner_id = partner_id or identity.subject  # `partners/-`: every partner's it may see
            logic.check_owner(identity, partner_id or "")
        size = paging.page_size(request.page_size)
        query = paging.fingerprint(("counters", partner_id))
        last = paging.decode(request.page_token, query)
        after = tuple(last.split("|", 1)) if last else None
        found = await asyncio.to_thread(
            usecases.list_counters,
            self._engine,
            partner_id=partner_id,
            after=after,  # type: ignore[arg-type]
            limit=size + 1,
        )
        page = found[:size]
        token = ""
        if len(found) > size:
            owner, _, counter_id = page[-1].name.removeprefix("partners/").partition("/counters/")
            token = paging.encode(f"{owner}|{counter_id}", query)
        return pb.ListCountersResponse(counters=page, next_page_token=token)

    @allow({Role.PARTNER}, notes=logic.OWN)
    @strict
    async def ReportCounts(self, request: pb.ReportCountsRequest, context: Context) -> pb.ReportCountsResponse:
        partner_id, counter_id = logic.parse_name(request.counter, "counter")
        self._owner(partner_id, "ReportCounts")
        counter = await self._counter(partner_id, counter_id)
        now = utcnow()
        logic.validate_feed(request, counter=counter, now=now)
        bus = self._governance.book.optimizer_access(partner_id, dataset=DATASET, now=now)
        item = usecases.Report(
            partner_id=partner_id, counter_id=counter_id, counter=counter, counts=list(request.counts), bus=bus, now=now
        )
        accepted, duplicates, corrected = await self._committer.submit(usecases.report_counts, item)
        return pb.ReportCountsResponse(accepted=accepted, duplicates=duplicates, corrected=corrected)

    @allow(logic.COUNT_READERS, notes={Role.PARTNER: "its own, or another's as that partner's agreement says"})
    async def ListCounts(self, request: pb.ListCountsRequest, context: Context) -> pb.ListCountsResponse:
        partner_id, counter_id = logic.parse_name(request.counter, "counter")
        if not request.HasField("start_time"):
            raise InvalidArgument("start_time is required")
        now = utcnow()
        start = from_timestamp(request.start_time, "start_time")
        end = from_timestamp(request.end_time, "end_time") if request.HasField("end_time") else now
        if end <= start:
            raise InvalidArgument("end_time must be after start_time")
        await self._counter(partner_id, counter_id)  # NOT_FOUND before anything is audited
        access = self._governance.read([partner_id], dataset=DATASET, method="ListCounts", now=now)[partner_id]
        require(access)
        size = paging.page_size(request.page_size)
        q = usecases.CountQuery(
            partner_id=partner_id,
            counter_id=counter_id,
            start=start,
            end=end,
            ended_by=now - access.delay if access.delay else None,  # a delayed audience: ended a delay ago
        )
        # Not `q`: its default end and a delayed audience's cut move with the clock between pages.
        asked_end = end.isoformat() if request.HasField("end_time") else ""
        query = paging.fingerprint((partner_id, counter_id, start.isoformat(), asked_end, access.revision))
        last = paging.decode(request.page_token, query)
        after = None
        if last:
            when, _, direction = last.partition("|")
            try:
                after = (datetime.fromisoformat(when), direction)
            except ValueError:
                raise InvalidArgument("page_token is malformed") from None
        counts = await asyncio.to_thread(usecases.list_counts, self._engine, q, after=after, limit=size + 1)
        page = counts[:size]
        token = ""
        if len(counts) > size:
            last_start = from_timestamp(page[-1].interval_start)
            token = paging.encode(f"{last_start.isoformat()}|{page[-1].direction}", query)
        page = logic.shaped(page, access)
        sharing = sharing_of(access) if access.agreement else None
        return pb.ListCountsResponse(counts=page, next_page_token=token, sharing=sharing)
