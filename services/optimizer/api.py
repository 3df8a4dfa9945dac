"""The gRPC servicer of almere.optimizer.v1.OptimizerService (proto <-> decisions, status codes,
roles), and the SerialCommitter every change to the decisions goes through."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import numpy as np
from almere.optimizer.v1 import optimizer_pb2 as pb
from almere.optimizer.v1 import optimizer_pb2_grpc
from almere.partners.v1 import partners_pb2 as ppb
from grpc import aio

from services.common.access import allow
from services.common.agreements import Governance
from services.common.auth import current_identity
from services.common.clock import to_timestamp, utcnow
from services.common.errors import Unavailable
from services.common.feed import EventFeed
from services.optimizer import admission, logic
from services.optimizer.adaptive_control import AdaptiveControl
from services.optimizer.decision_engine import DecisionEngine
from services.optimizer.levers.incident import cause_of
from services.optimizer.usecases import Loaded, Writes

log = logging.getLogger(__name__)
Context = aio.ServicerContext[Any, Any]


class OptimizerApi(optimizer_pb2_grpc.OptimizerServiceServicer):
    def __init__(
        self,
        decisions: DecisionEngine,
        *,
        serial_committer: SerialCommitter,
        feed: EventFeed,
        signals: AdaptiveControl,
        governance: Governance,
    ) -> None:
        self._decisions = decisions
        self._governance = governance
        self._serial_committer = serial_committer
        self._feed = feed
        self._signals = signals
        self._searches = asyncio.Semaphore(2)

    @allow(admission.READERS)
    async def GetStatus(self, request: pb.GetStatusRequest, context: Context) -> pb.GetStatusResponse:
        d = self._decisions
        return pb.GetStatusResponse(
            consumed=dict(d.consumed),
            decisions=dict(d.per_lever),
            vehicles=len(d.vehicles),
            active_incidents=sum(i.active for i in d.incidents.values()),
            facilities=len(d.facilities),
            promised_spaces=len(d.reservations),
            last_report_time=to_timestamp(d.last_report),
            last_sim_time_seconds=d.sim_s,
        )

    @allow(admission.READERS)
    async def GetNetworkState(self, request: pb.GetNetworkStateRequest, context: Context) -> pb.GetNetworkStateResponse:
        d, graph = self._decisions, self._decisions.graph
        for n, edge in enumerate(request.edge_ids):
            admission.check_edge(graph, edge, f"edge_ids[{n}]")
        cost = d.cost()
        acting: dict[str, list[str]] = {}
        for incident in d.incidents.values():
            if incident.active:
                acting.setdefault(incident.edge_id, []).append(cause_of(incident))
        if request.edge_ids:
            wanted = [graph.index[edge] for edge in request.edge_ids]
        else:
            wanted = [i for i in range(len(graph.edge_ids)) if cost[i] != graph.free_time[i]]
        edges = [
            pb.EdgeState(
                edge_id=graph.edge_ids[i],
                travel_time_seconds=float(cost[i]) if np.isfinite(cost[i]) else 0.0,
                free_flow_seconds=float(graph.free_time[i]),
                closed=not np.isfinite(cost[i]),
                incidents=acting.get(graph.edge_ids[i], []),
            )
            for i in wanted
        ]
        promised = d.promised()
        known = sorted(d.facilities.values(), key=lambda f: f.id)
        accesses = self._governance.read(
            (f.operator_id or "" for f in known), dataset=ppb.DATASET_OCCUPANCY, method="GetNetworkState", now=utcnow()
        )
        facilities = [
            logic.facility_state(
                pb.FacilityState(
                    facility_id=f.id,
                    capacity=f.capacity,
                    occupied=f.occupied if f.counted else 0,
                    promised=promised[f.id],
                    edge_id=f.edge_id,
                    count_unknown=not f.counted,
                ),
                accesses[f.operator_id or ""],
            )
            for f in known
        ]
        return pb.GetNetworkStateResponse(edges=edges, facilities=facilities)

    @allow(admission.READERS)
    async def WatchDecisions(
        self, request: pb.WatchDecisionsRequest, context: Context
    ) -> AsyncIterator[pb.WatchDecisionsResponse]:
        levers = set(request.levers)
        async with self._feed.watch() as watcher:
            while True:
                _, decision = await watcher.next()
                if not levers or decision.lever in levers:
                    yield pb.WatchDecisionsResponse(decision=decision)

    @allow(admission.STRATEGY_READERS)
    async def GetStrategy(self, request: pb.GetStrategyRequest, context: Context) -> pb.GetStrategyResponse:
        return pb.GetStrategyResponse(strategy=self._decisions.strategy)

    @allow(admission.STRATEGISTS)
    async def SetStrategy(self, request: pb.SetStrategyRequest, context: Context) -> pb.SetStrategyResponse:
        paths = list(request.update_mask.paths)
        logic.merge_strategy(self._decisions.strategy, request.strategy, paths)  # refuse bad input before queueing

        def change() -> list[Writes]:  # merged under the serial committer's lock: concurrent changes both stay
            return [Writes(strategy=logic.merge_strategy(self._decisions.strategy, request.strategy, paths))]

        (writes,) = await self._serial_committer.change(change)
        assert writes.strategy is not None
        self._decisions.strategy = writes.strategy
        return pb.SetStrategyResponse(strategy=writes.strategy)

    @allow(admission.REPORTERS)
    async def ReportVehicles(self, request: pb.ReportVehiclesRequest, context: Context) -> pb.ReportVehiclesResponse:
        identity = current_identity.get()
        admission.validate_report(self._decisions.graph, request)
        (writes,) = await self._serial_committer.change(
            lambda: [self._decisions.on_report(request, utcnow(), identity.caller)]
        )
        return pb.ReportVehiclesResponse(decisions=[t.decision for t in writes.decisions])

    @allow(admission.TRAVEL_TIME_ASKERS)
    async def ComputeTravelTimes(
        self, request: pb.ComputeTravelTimesRequest, context: Context
    ) -> pb.ComputeTravelTimesResponse:
        graph = self._decisions.graph
        admission.validate_travel_times(graph, request)
        destinations = list(request.destination_edge_ids)
        cost = self._decisions.cost()
        async with self._searches:  # a few at a time, off the event loop the consumers need
            times = await asyncio.to_thread(graph.time_to, destinations, cost)
        column = times[:, graph.index[request.origin_edge_id]]
        return pb.ComputeTravelTimesResponse(seconds=[float(t) if np.isfinite(t) else -1.0 for t in column])

    @allow(admission.REPORTERS)
    async def ControlSignals(
        self, request_iterator: AsyncIterator[pb.ControlSignalsRequest], context: Context
    ) -> AsyncIterator[pb.ControlSignalsResponse]:
        async for response in self._signals.control(request_iterator):
            yield response


class SerialCommitter:
    """Changes to the decisions and their commit, one at a time: a change is computed, committed, and
    only then the next is computed, so memory never runs ahead of (or behind) the database. When a
    commit fails, the decisions go back to what the database holds."""

    def __init__(
        self, decisions: DecisionEngine, *, submit: Callable[[Writes], Awaitable[None]], reload: Callable[[], Loaded]
    ) -> None:
        self._decisions = decisions
        self._submit = submit
        self._reload = reload
        self._lock = asyncio.Lock()

    async def change(self, compute: Callable[[], list[Writes]]) -> list[Writes]:
        async with self._lock:
            writes = compute()
            # Queued together; the group committer commits them in order (one by one if one fails).
            results = await asyncio.gather(*(self._submit(w) for w in writes if w), return_exceptions=True)
            failed = [r for r in results if isinstance(r, BaseException)]
            if failed:
                log.error("persisting the optimizer's state failed (%r); reloading it from the database", failed[0])
                self._decisions.restore(await asyncio.to_thread(self._reload))
                raise Unavailable("the optimizer could not store its state; nothing was decided") from failed[0]
            return writes
