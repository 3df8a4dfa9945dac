"""Adaptive signal control through the signal service, in lockstep with whoever reports the lane
counts (the twin, or a detector concentrator in the street): the batch bench's controllers and
control loop (loop.py), each decision proposed as an adaptive step (PLAN_TYPE_ADAPTIVE), validated
there like any plan; only steps the service activated are returned to be shown. A takeover the
intersection's policy holds for approval leaves that light alone until an engineer approves it.

A takeover holds a lease at the signal service (services/signals/lease.py) that only steps and
renewals extend: a light whose controller changes nothing is renewed every quarter of the lease
(wall clock, whatever pace the caller's rounds keep), so it stays taken over while the rounds come,
and falls back to its timing plan by itself when they stop."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import grpc
from almere.optimizer.v1 import optimizer_pb2 as pb
from almere.signals.v1 import events_pb2 as sevents
from almere.signals.v1 import signals_pb2 as spb
from almere.signals.v1 import signals_pb2_grpc

from contract import bus
from libs.signal_control import layout
from libs.signal_control.controller import PressureActuated
from libs.signal_control.loop import Controller, ControlLoop, Shown
from libs.signal_control.model import Intersection, Snapshot
from services.common.errors import Aborted, FailedPrecondition, InvalidArgument, Unavailable

log = logging.getLogger(__name__)

MAX_LANES = 20_000
TAKEOVER_CHECK_S = 5.0  # simulated seconds between looks at takeovers awaiting approval
# A grant is served until the vehicle's unit cancels it, at most this long (simulated s): its wall-
# clock hold_until says nothing in a simulation running faster than real time.
MAX_PRIORITY_S = 90.0
STALE_GRANT = timedelta(minutes=2)  # grants older than the process, replayed from the stream
CALL_TIMEOUT_S = 10.0
# What the signal service says of a step itself (the light is dropped); anything else fails the round.
REFUSALS = frozenset({grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND})


def step_plan(outlook: list[tuple[str, float]], hold_s: float, reason: str) -> spb.Plan:
    """A clock's outlook (state, from) as an adaptive step: each state for as long as it lasts, the
    last one held (at least `hold_s`)."""
    phases = [spb.Phase(state=s, duration=t_next - t) for (s, t), (_, t_next) in pairwise(outlook)]
    phases.append(spb.Phase(state=outlook[-1][0], duration=hold_s))
    return spb.Plan(type=spb.PLAN_TYPE_ADAPTIVE, phases=phases, reason=reason)


class Readings:
    """A stream's lane readings: each request brings the lanes that changed (a lane left out keeps
    its last reading), so the optimizer holds the full picture the controllers read."""

    def __init__(self) -> None:
        self.vehicles: dict[str, int] = {}
        self.halting: dict[str, int] = {}
        self.positions: dict[str, tuple[tuple[float, float], ...]] = {}

    def update(self, request: pb.ControlSignalsRequest) -> Snapshot:
        """Merge the changes (refusing nonsense before anything changes) and return the snapshot."""
        if not (math.isfinite(request.sim_time_seconds) and request.sim_time_seconds >= 0):
            raise InvalidArgument("sim_time_seconds must be a finite number >= 0")
        if len(request.lanes) > MAX_LANES:
            raise InvalidArgument(f"at most {MAX_LANES} lanes per request")
        for n, r in enumerate(request.lanes):
            if r.vehicles < 0 or not 0 <= r.halting <= r.vehicles:
                raise InvalidArgument(f"lanes[{n}]: counts must satisfy 0 <= halting <= vehicles")
            if any(not (math.isfinite(a.distance_m) and math.isfinite(a.speed_mps)) for a in r.approaching):
                raise InvalidArgument(f"lanes[{n}].approaching: distances and speeds must be finite")
        for r in request.lanes:
            lane = r.lane_id
            if not r.vehicles:  # empty lanes are kept unsaid: the controllers count them as 0
                self.vehicles.pop(lane, None)
                self.halting.pop(lane, None)
                self.positions.pop(lane, None)
                continue
            self.vehicles[lane], self.halting[lane] = r.vehicles, r.halting
            if r.approaching:
                self.positions[lane] = tuple((a.distance_m, a.speed_mps) for a in r.approaching)
            else:
                self.positions.pop(lane, None)
        return Snapshot(request.sim_time_seconds, self.vehicles, self.halting, self.positions)


@dataclass(kw_only=True)
class _Run:
    loop: ControlLoop
    names: dict[str, str]  # tls id -> `intersections/{id}`
    last_s: float
    awaiting: dict[str, Controller] = field(default_factory=dict)  # tls -> its controller, takeover held
    next_check_s: float = 0.0
    called: dict[str, tuple[str, float]] = field(default_factory=dict)  # tls -> (grant, since) being served
    refused: set[str] = field(default_factory=set)  # tls
    signs: dict[str, float] = field(default_factory=dict)  # tls -> wall time (monotonic) of its lease's last renewal
    takeovers: dict[str, int] = field(default_factory=dict)  # tls -> the active takeover's plan version
    lanes_sent: int = -1  # the loop's version whose lanes the caller has
    status_sent: int = -1  # the loop's version whose LightStatus the caller has


class AdaptiveControl:
    def __init__(
        self,
        network_file: Path,
        *,
        signals: signals_pb2_grpc.SignalServiceStub | None,
        token: str | None,
        lease_s: float,
        make: Callable[[Intersection], Controller] = PressureActuated,
    ) -> None:
        self._network_file = network_file
        self._renew_s = lease_s / 4  # a round or two late is still well within the lease
        self._signals = signals
        self._auth = (("authorization", f"Bearer {token}"),) if token else ()
        self._make = make
        self._layouts: list[Intersection] | None = None
        self._run: _Run | None = None
        self._lock = asyncio.Lock()  # one round at a time
        self._grants: dict[str, tuple[str, str]] = {}  # tls -> (priority name, target state)
        self._started = datetime.now(UTC)

    def on_priority(self, event: sevents.SignalEvent) -> None:
        """A priority decision or its end, from the SIGNALS stream: the light's controller serves
        granted ones (whoever shows the lights must not hold them itself)."""
        tls, change = event.intersection.sumo_tls_id, event.change
        if change.event == bus.PRIORITY_DECIDED and change.priority.decision == spb.PRIORITY_DECISION_GRANTED:
            if change.occur_time.ToDatetime(UTC) > self._started - STALE_GRANT:
                self._grants[tls] = (change.priority.name, change.priority.target_state)
        elif change.event == bus.PRIORITY_ENDED and self._grants.get(tls, ("",))[0] == change.priority.name:
            del self._grants[tls]

    async def control(
        self, requests: AsyncIterator[pb.ControlSignalsRequest]
    ) -> AsyncIterator[pb.ControlSignalsResponse]:
        """One run per stream, one response per request. A newer stream takes the lights over."""
        if self._signals is None:
            raise FailedPrecondition("no signal service configured (ALMERE_SIGNALS_ADDRESS) to apply steps at")
        readings = Readings()
        run: _Run | None = None
        async for request in requests:
            snap = readings.update(request)
            async with self._lock:
                if run is not None and self._run is not run:
                    raise Aborted("another stream drives the lights now")
                if run is not None and snap.time < run.last_s:
                    raise InvalidArgument("sim_time_seconds went back: a new run needs a new stream")
                response = await self._round(run, snap)
                run = self._run
            yield response

    async def _round(self, run: _Run | None, snap: Snapshot) -> pb.ControlSignalsResponse:
        now = snap.time
        if run is None:
            run, showing = await self._begin(now)
            self._run = run
            takeovers, steps = run.loop.start(now, shown=showing), []
        else:
            self._serve_grants(run, now)
            steps = [s for s in run.loop.step(now, lambda t, lanes, near: snap) if s.step]
            takeovers = await self._resume_approved(run, now)
        run.last_s = now
        applied = await self._propose(run, takeovers, now) + await self._apply(run, steps, now)
        response = pb.ControlSignalsResponse(steps=applied)
        if run.lanes_sent != run.loop.version:
            lanes, near = run.loop.lanes()
            response.lanes.CopyFrom(pb.LaneSelection(lane_ids=sorted(lanes), near_lane_ids=sorted(near)))
            run.lanes_sent = run.loop.version
        # Lights join or leave the loop whenever they are taken over, held, resumed or refused.
        if run.status_sent != run.loop.version:
            response.status.CopyFrom(
                pb.LightStatus(
                    controlled=sorted(run.names[c.tls_id] for c in run.loop.controllers),
                    awaiting_approval=sorted(run.names[tls] for tls in run.awaiting),
                    refused=sorted(run.names[tls] for tls in run.refused),
                )
            )
            run.status_sent = run.loop.version
        return response

    def _serve_grants(self, run: _Run, now: float) -> None:
        for c in run.loop.controllers:
            grant = self._grants.get(c.tls_id)
            name, since = run.called.get(c.tls_id, ("", now))
            if grant is not None and (grant[0] != name or now - since < MAX_PRIORITY_S):
                run.called[c.tls_id] = (grant[0], since if grant[0] == name else now)
                c.call(grant[1])
            elif c.tls_id in run.called:
                run.called.pop(c.tls_id)
                c.call(None)
                if grant is not None:
                    log.warning(
                        "%s: priority %s served %.0f s without being cancelled; ended", c.tls_id, name, now - since
                    )
                    del self._grants[c.tls_id]

    async def _begin(self, now: float) -> tuple[_Run, dict[str, str]]:
        """A new run: every light of the network the signal service knows gets a fresh controller;
        lights still on an adaptive step (an earlier run's, or this optimizer's before a restart)
        are taken over from the state that step holds, through a yellow, never abruptly."""
        if self._layouts is None:
            self._layouts = await asyncio.to_thread(layout.intersections, self._network_file)
        names: dict[str, str] = {}
        showing: dict[str, str] = {}
        token = ""
        while True:
            reply = await self._call(
                "ListIntersections", spb.ListIntersectionsRequest(page_size=1000, page_token=token)
            )
            for doc in reply.intersections:
                names[doc.sumo_tls_id] = doc.name
                active = await self._active_plan(doc)
                if active.type == spb.PLAN_TYPE_ADAPTIVE:
                    showing[doc.sumo_tls_id] = await self._holding(doc, active)
            token = reply.next_page_token
            if not token:
                break
        loop = ControlLoop(self._make(i) for i in self._layouts if i.tls_id in names)
        if self._run is not None:
            self._grants.clear()  # a simulation starting again: grants of its last run are history
        return _Run(loop=loop, names=names, last_s=now, next_check_s=now + TAKEOVER_CHECK_S), showing

    async def _propose(self, run: _Run, shown: list[Shown], now: float) -> list[pb.SignalStep]:
        """Takeovers, each a plan version proposed to the signal service, all at once; those the
        policy holds wait for approval, a refused one drops the light (one still on an earlier
        takeover goes back to its timing plan when that lease runs out)."""

        async def propose(s: Shown) -> spb.Plan | grpc.aio.AioRpcError:
            plan = step_plan(s.controller.clock.outlook(now), s.controller.clock.min_green_s, s.decision.reason)
            request = spb.ProposePlanRequest(parent=run.names[s.controller.tls_id], plan=plan)
            try:
                result: spb.Plan = (await self._call("ProposePlan", request, passed_on=REFUSALS)).plan
            except grpc.aio.AioRpcError as err:
                return err
            return result

        # Every proposal is answered before anything fails the round (the caller sees why).
        results: list[spb.Plan | grpc.aio.AioRpcError] = []
        for answer in await asyncio.gather(*(propose(s) for s in shown), return_exceptions=True):
            if isinstance(answer, BaseException) and not isinstance(answer, grpc.aio.AioRpcError):
                raise answer
            results.append(answer)
        steps = []
        for s, result in zip(shown, results, strict=True):
            tls = s.controller.tls_id
            if isinstance(result, spb.Plan) and result.state == spb.PLAN_STATE_ACTIVE:
                run.takeovers[tls] = result.version
                run.signs[tls] = time.monotonic()
                steps.append(
                    pb.SignalStep(
                        intersection=run.names[tls],
                        sumo_tls_id=tls,
                        phases=result.phases,
                        reason=result.reason,
                        plan_version=result.version,
                    )
                )
                continue
            run.loop.remove(s.controller)
            if isinstance(result, spb.Plan):
                run.awaiting[tls] = s.controller
            else:
                self._refuse(run, s.controller, f"{result.code().name}: {result.details()}")
        return steps

    async def _apply(self, run: _Run, shown: list[Shown], now: float) -> list[pb.SignalStep]:
        """The steps after the takeovers and the renewals of the lights due one, in one call: applied
        at once by the signal service (no plan version each); a refused one drops the light like a
        refused takeover (the signal service hands it back)."""
        wall = time.monotonic()
        stepped = {s.controller.tls_id for s in shown}
        renewals = [
            c
            for c in run.loop.controllers
            if c.tls_id not in stepped and wall - run.signs.get(c.tls_id, -math.inf) >= self._renew_s
        ]
        if not shown and not renewals:
            return []
        requests = [
            spb.Step(
                intersection=run.names[s.controller.tls_id],
                phases=step_plan(s.controller.clock.outlook(now), s.controller.clock.min_green_s, "").phases,
                reason=s.decision.reason,
            )
            for s in shown
        ]
        renewed = [run.names[c.tls_id] for c in renewals]
        reply = await self._call("ApplySteps", spb.ApplyStepsRequest(steps=requests, renewals=renewed))
        for c, refusal in zip(renewals, reply.renewal_refusals, strict=True):
            if refusal:
                run.loop.remove(c)
                self._refuse(run, c, refusal)
            else:
                run.signs[c.tls_id] = wall
        steps = []
        for s, result in zip(shown, reply.results, strict=True):
            tls = s.controller.tls_id
            if result.HasField("step"):
                run.signs[tls] = wall
                steps.append(
                    pb.SignalStep(
                        intersection=run.names[tls],
                        sumo_tls_id=tls,
                        phases=result.step.phases,
                        reason=result.step.reason,
                        plan_version=result.step.plan_version,
                        sequence=result.step.sequence,
                    )
                )
            else:
                run.loop.remove(s.controller)
                self._refuse(run, s.controller, result.refusal)
        return steps

    @staticmethod
    def _refuse(run: _Run, controller: Controller, why: str) -> None:
        run.refused.add(controller.tls_id)
        log.error("%s: step refused (%s); this controller leaves the light", controller.tls_id, why)

    async def _resume_approved(self, run: _Run, now: float) -> list[Shown]:
        """Lights whose takeover an engineer approved since (this one or an earlier run's): their
        controllers start now, from the state the approved step holds."""
        if not run.awaiting or now < run.next_check_s:
            return []
        run.next_check_s = now + TAKEOVER_CHECK_S
        resumed = []
        for tls, controller in list(run.awaiting.items()):
            doc = (await self._call("GetIntersection", spb.GetIntersectionRequest(name=run.names[tls]))).intersection
            active = await self._active_plan(doc)
            if active.type == spb.PLAN_TYPE_ADAPTIVE:
                del run.awaiting[tls]
                run.loop.add(controller)
                resumed.append(Shown(controller, controller.start(now, shown=await self._holding(doc, active)), True))
        return resumed

    async def _active_plan(self, doc: spb.Intersection) -> spb.Plan:
        name = f"{doc.name}/plans/{doc.active_plan_version}"
        plan: spb.Plan = (await self._call("GetPlan", spb.GetPlanRequest(name=name))).plan
        return plan

    async def _holding(self, doc: spb.Intersection, active: spb.Plan) -> str:
        """The state an intersection under adaptive control holds: its last step's, or the takeover's."""
        reply = await self._call("ListSteps", spb.ListStepsRequest(parent=doc.name, page_size=1))
        if reply.steps and reply.steps[0].plan_version == active.version:
            return str(reply.steps[0].phases[-1].state)
        return str(active.phases[-1].state)

    async def _call(self, method: str, request: Any, passed_on: frozenset[grpc.StatusCode] = frozenset()) -> Any:
        """A call to the signal service; its errors as this service's, but those `passed_on`."""
        try:
            return await getattr(self._signals, method)(request, metadata=self._auth, timeout=CALL_TIMEOUT_S)
        except grpc.aio.AioRpcError as err:
            if err.code() in passed_on:
                raise
            if err.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise Unavailable(f"signal service: {err.details()}") from None
            raise FailedPrecondition(f"signal service refused {method}: {err.code().name}: {err.details()}") from None
