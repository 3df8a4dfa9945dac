"""The gRPC servicer of almere.optimizer.v1.OptimizerService: proto <-> engine, status codes, roles."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import numpy as np
from almere.optimizer.v1 import optimizer_pb2 as pb
from almere.optimizer.v1 import optimizer_pb2_grpc
from grpc import aio

from services.common.auth import current_identity
from services.common.clock import to_timestamp, utcnow
from services.common.errors import Unavailable
from services.common.feed import EventFeed
from services.optimizer import logic
from services.optimizer.adaptive_control import AdaptiveControl
from services.optimizer.decision_engine import DecisionEngine
from services.optimizer.levers.incident import cause_of
from services.optimizer.store import Writes

log = logging.getLogger(__name__)
Context = aio.ServicerContext[Any, Any]


class OptimizerApi(optimizer_pb2_grpc.OptimizerServiceServicer):
    def __init__(
        self, engine: DecisionEngine, keeper: SerialCommitter, feed: EventFeed, signals: AdaptiveControl
    ) -> None:
        self._engine = engine
        self._keeper = keeper
        self._feed = feed
        self._signals = signals
        self._searches = asyncio.Semaphore(2)

    async def GetStatus(self, request: pb.GetStatusRequest, context: Context) -> pb.GetStatusResponse:
        logic.authorize_read(current_identity.get())
        e = self._engine
        return pb.GetStatusResponse(
            consumed=dict(e.consumed),
            decisions=dict(e.decisions),
            vehicles=len(e.vehicles),
            active_incidents=sum(i.active for i in e.incidents.values()),
            facilities=len(e.facilities),
            promised_spaces=len(e.reservations),
            last_report_time=to_timestamp(e.last_report),
            last_sim_time_seconds=e.sim_s,
        )

    async def GetNetworkState(self, request: pb.GetNetworkStateRequest, context: Context) -> pb.GetNetworkStateResponse:
        logic.authorize_read(current_identity.get())
        e, graph = self._engine, self._engine.graph
        for n, edge in enumerate(request.edge_ids):
            logic.check_edge(graph, edge, f"edge_ids[{n}]")
        cost = e.cost()
        acting: dict[str, list[str]] = {}
        for incident in e.incidents.values():
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
        promised = e.promised()
        facilities = [
            pb.FacilityState(
                facility_id=f.id, capacity=f.capacity, occupied=f.occupied, promised=promised[f.id], edge_id=f.edge_id
            )
            for f in sorted(e.facilities.values(), key=lambda f: f.id)
        ]
        return pb.GetNetworkStateResponse(edges=edges, facilities=facilities)

    async def WatchDecisions(
        self, request: pb.WatchDecisionsRequest, context: Context
    ) -> AsyncIterator[pb.WatchDecisionsResponse]:
        logic.authorize_read(current_identity.get())
        levers = set(request.levers)
        async with self._feed.watch() as watcher:
            while True:
                _, decision = await watcher.next()
                if not levers or decision.lever in levers:
                    yield pb.WatchDecisionsResponse(decision=decision)

    async def GetStrategy(self, request: pb.GetStrategyRequest, context: Context) -> pb.GetStrategyResponse:
        logic.authorize_read(current_identity.get())
        return pb.GetStrategyResponse(strategy=self._engine.strategy)

    async def SetStrategy(self, request: pb.SetStrategyRequest, context: Context) -> pb.SetStrategyResponse:
        logic.authorize_strategy(current_identity.get())
        paths = list(request.update_mask.paths)
        logic.merge_strategy(self._engine.strategy, request.strategy, paths)  # refuse bad input before queueing

        def change() -> list[Writes]:  # merged under the keeper's lock: concurrent changes both stay
            return [Writes(strategy=logic.merge_strategy(self._engine.strategy, request.strategy, paths))]

        (writes,) = await self._keeper.change(change)
        assert writes.strategy is not None
        self._engine.strategy = writes.strategy
        return pb.SetStrategyResponse(strategy=writes.strategy)

    async def ReportVehicles(self, request: pb.ReportVehiclesRequest, context: Context) -> pb.ReportVehiclesResponse:
        identity = current_identity.get()
        logic.authorize_report(identity)
        logic.validate_report(self._engine.graph, request)
        (writes,) = await self._keeper.change(lambda: [self._engine.on_report(request, utcnow(), identity.caller)])
        return pb.ReportVehiclesResponse(decisions=[t.decision for t in writes.decisions])

    async def ComputeTravelTimes(
        self, request: pb.ComputeTravelTimesRequest, context: Context
    ) -> pb.ComputeTravelTimesResponse:
        logic.authorize_travel_times(current_identity.get())
        graph = self._engine.graph
        logic.validate_travel_times(graph, request)
        destinations = list(request.destination_edge_ids)
        cost = self._engine.cost()
        async with self._searches:  # a few at a time, off the event loop the consumers need
            times = await asyncio.to_thread(graph.time_to, destinations, cost)
        column = times[:, graph.index[request.origin_edge_id]]
        return pb.ComputeTravelTimesResponse(seconds=[float(t) if np.isfinite(t) else -1.0 for t in column])

    async def ControlSignals(self, request: pb.ControlSignalsRequest, context: Context) -> pb.ControlSignalsResponse:
        logic.authorize_report(current_identity.get())
        return await self._signals.round(request)


class SerialCommitter:
    """Changes to the engine and their commit, one at a time: a change is computed, committed, and
    only then the next is computed, so memory never runs ahead of (or behind) the database. When a
    commit fails, the engine goes back to what the database holds."""

    def __init__(
        self, engine: DecisionEngine, submit: Callable[[Writes], Awaitable[None]], reload: Callable[[], Any]
    ) -> None:
        self._engine = engine
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
                self._engine.restore(await asyncio.to_thread(self._reload))
                raise Unavailable("the optimizer could not store its state; nothing was decided") from failed[0]
            return writes
