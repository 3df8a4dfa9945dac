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
from services.optimizer.engine import Engine
from services.optimizer.store import Writes

log = logging.getLogger(__name__)
Context = aio.ServicerContext[Any, Any]
Persist = Callable[[list[Writes]], Awaitable[None]]


class OptimizerApi(optimizer_pb2_grpc.OptimizerServiceServicer):
    def __init__(self, engine: Engine, persist: Persist, feed: EventFeed) -> None:
        self._engine = engine
        self._persist = persist
        self._feed = feed

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
                acting.setdefault(incident.edge_id, []).append(f"incidents/{incident.id}")
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
        strategy = logic.merge_strategy(self._engine.strategy, request.strategy, list(request.update_mask.paths))
        await self._persist([Writes(strategy=strategy)])
        self._engine.strategy = strategy
        return pb.SetStrategyResponse(strategy=strategy)

    async def ReportVehicles(self, request: pb.ReportVehiclesRequest, context: Context) -> pb.ReportVehiclesResponse:
        logic.authorize_report(current_identity.get())
        logic.validate_report(self._engine.graph, request)
        writes = self._engine.on_report(request, utcnow())
        await self._persist([writes])
        return pb.ReportVehiclesResponse(decisions=[t.decision for t in writes.decisions])

    async def ComputeTravelTimes(
        self, request: pb.ComputeTravelTimesRequest, context: Context
    ) -> pb.ComputeTravelTimesResponse:
        # Any authenticated caller: travel times are what a navigation app shows anyone, and the
        # parking service asks on behalf of whoever asked it for a facility.
        graph = self._engine.graph
        logic.validate_travel_times(graph, request)
        times = graph.time_to(list(request.destination_edge_ids), self._engine.cost())[
            :, graph.index[request.origin_edge_id]
        ]
        return pb.ComputeTravelTimesResponse(seconds=[float(t) if np.isfinite(t) else -1.0 for t in times])


def persisting(submit: Callable[[Writes], Awaitable[None]], engine: Engine, reload: Callable[[], Any]) -> Persist:
    """Persist writes in order; when that fails, the engine goes back to what the database holds."""

    async def persist(writes: list[Writes]) -> None:
        try:
            # Queued together, committed in order in one transaction (the group committer).
            await asyncio.gather(*(submit(w) for w in writes))
        except Exception as exc:
            log.exception("persisting the optimizer's state failed; reloading it from the database")
            engine.restore(await asyncio.to_thread(reload))
            raise Unavailable("the optimizer could not store its state; nothing was decided") from exc

    return persist
