"""Adaptive steps after a takeover, applied at once and recorded in batches.

A controller changes a light every few seconds: a plan version, two history rows, two events and a
commit (an fsync) per change would make the signal service the slowest part of the control loop.
So a step after a takeover is validated here, in memory, against the step before it (the same
`logic.validate_step` as a takeover's), answered at once, and queued; the queue is committed every
FLUSH_S as compact step rows (one per step) with one history row and one `steps_applied` event per
intersection. Anything that changes an intersection's plan first commits what is queued and then
drops the intersection from memory, so validation always starts from what the database holds plus
the steps this process applied since.

Each step, and each renewal (a light whose controller changes nothing), is a sign of life that
extends the takeover's lease (lease.py): kept here at once, written with the next batch. A light
whose lease ran out refuses steps until a new takeover; the schedule hands it back."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime
from typing import TypeVar

from almere.signals.v1 import signals_pb2 as pb
from sqlalchemy import Engine

from services.common.auth import Identity
from services.common.clock import to_timestamp, utcnow
from services.common.db import GroupCommitter
from services.common.errors import FailedPrecondition, InvalidArgument, ServiceError
from services.common.names import id_from_name
from services.signals import lease, logic, usecases

log = logging.getLogger(__name__)
FLUSH_S = 1.0  # longest time (wall) an applied step waits for its record's commit
MAX_STEPS = 1000  # per request
MAX_REASON = 1000
T = TypeVar("T")


class StepLedger:
    def __init__(self, engine: Engine, committer: GroupCommitter, *, lease_s: float, flush_s: float = FLUSH_S) -> None:
        self._engine = engine
        self._committer = committer
        self._lease_s = lease_s
        self._flush_s = flush_s
        self._lights: dict[str, usecases.Light] = {}
        self._pending: list[tuple[Identity, str, pb.Step]] = []
        self._renewed: dict[str, tuple[Identity, int, datetime]] = {}  # intersection -> (caller, takeover, when)
        self._lock = asyncio.Lock()  # one apply or plan change at a time sees and changes _lights
        self._flusher: asyncio.TimerHandle | None = None
        self._flushing: asyncio.Task[None] | None = None

    async def apply(
        self, identity: Identity, steps: list[pb.Step], renewals: list[str]
    ) -> tuple[list[pb.StepResult], list[str]]:
        """Apply the steps and renew the leases of `renewals` (names); returns each step's result and
        each renewal's refusal ("" when renewed)."""
        if len(steps) + len(renewals) > MAX_STEPS:
            raise InvalidArgument(f"at most {MAX_STEPS} steps and renewals per request")
        ids = [id_from_name(s.intersection, "intersections", f"steps[{n}].intersection") for n, s in enumerate(steps)]
        renewed = [id_from_name(name, "intersections", f"renewals[{n}]") for n, name in enumerate(renewals)]
        if len(set(ids) | set(renewed)) < len(ids) + len(renewed):
            raise InvalidArgument("at most one step or renewal per intersection")
        now = utcnow()
        async with self._lock:
            results = []
            for intersection_id, step in zip(ids, steps, strict=True):
                try:
                    results.append(pb.StepResult(step=await self._apply(identity, intersection_id, step, now)))
                except ServiceError as err:
                    results.append(pb.StepResult(refusal=f"{err.code.name}: {err.message}"))
            refusals = []
            for intersection_id in renewed:
                try:
                    await self._renew(identity, intersection_id, now)
                    refusals.append("")
                except ServiceError as err:
                    refusals.append(f"{err.code.name}: {err.message}")
        if (self._pending or self._renewed) and self._flusher is None:
            self._flusher = asyncio.get_running_loop().call_later(self._flush_s, self._start_flush)
        return results, refusals

    async def _leased(self, intersection_id: str, now: datetime) -> usecases.Light:
        """The light, if under adaptive control with its lease running; else FAILED_PRECONDITION."""
        light = self._lights.get(intersection_id)
        if light is None:
            light = await asyncio.to_thread(usecases.light, self._engine, intersection_id)
            self._lights[intersection_id] = light
        if not light.plan_version or light.renew_time is None:
            raise FailedPrecondition(
                f"intersections/{intersection_id} is not under adaptive control: its takeover (ProposePlan) "
                "is not active"
            )
        if lease.expired(light.renew_time, now, self._lease_s):
            raise FailedPrecondition(
                f"intersections/{intersection_id} is not under adaptive control: "
                f"{lease.reason(light.renew_time, now)}, so it goes back to its timing plan; "
                "a new takeover (ProposePlan) takes it again"
            )
        return light

    async def _renew(self, identity: Identity, intersection_id: str, now: datetime) -> None:
        light = await self._leased(intersection_id, now)
        self._lights[intersection_id] = replace(light, renew_time=now)
        self._renewed[intersection_id] = (identity, light.plan_version, now)

    async def _apply(self, identity: Identity, intersection_id: str, step: pb.Step, now: datetime) -> pb.Step:
        light = await self._leased(intersection_id, now)
        if len(step.reason) > MAX_REASON:
            raise InvalidArgument(f"reason is longer than {MAX_REASON} characters")
        plan = pb.Plan(type=pb.PLAN_TYPE_ADAPTIVE, phases=step.phases)
        if any(not math.isfinite(p.duration) for p in step.phases):
            raise InvalidArgument("phase durations must be finite")
        logic.validate_step(light.links, plan, light.showing)
        applied = pb.Step(
            intersection=f"intersections/{intersection_id}",
            phases=step.phases,
            reason=step.reason,
            sequence=light.sequence + 1,
            plan_version=light.plan_version,
            apply_time=to_timestamp(now),
            actor=identity.caller,
        )
        self._lights[intersection_id] = replace(light, showing=plan, sequence=applied.sequence, renew_time=now)
        self._pending.append((identity, intersection_id, applied))
        self._renewed[intersection_id] = (identity, light.plan_version, now)
        return applied

    def _start_flush(self) -> None:
        self._flusher = None
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.get_running_loop().create_task(self.flush())

    async def flush(self) -> None:
        """Commit the queued steps and renewals (a plan change calls this first, so it follows them),
        and wait for a commit of earlier ones already under way: a reader after this sees every
        applied step."""
        running = self._flushing
        if running is not None and not running.done() and running is not asyncio.current_task():
            await asyncio.shield(running)
        while self._pending or self._renewed:
            items = self._batches()
            while items:
                try:
                    handed_back = await self._committer.submit(usecases.record_steps, items[0])
                except Exception:
                    # The steps were shown: their records wait for the next attempt, never dropped.
                    log.exception("recording adaptive steps failed; retrying")
                    self._pending[:0] = [(item.identity, i, step) for item in items for i, step in item.steps]
                    for item in items:
                        for i, (plan_version, when) in item.leases.items():
                            self._renewed.setdefault(i, (item.identity, plan_version, when))
                    await asyncio.sleep(self._flush_s)
                    break
                items.pop(0)
                for intersection_id in handed_back:  # or renumbered: read afresh before the next step
                    self._lights.pop(intersection_id, None)

    def _batches(self) -> list[usecases.RecordSteps]:
        """What is queued, one item per caller."""
        pending, self._pending = self._pending, []
        renewed, self._renewed = self._renewed, {}
        by_caller: dict[str, usecases.RecordSteps] = {}
        for identity, intersection_id, step in pending:
            new = usecases.RecordSteps(identity=identity, steps=[], leases={})
            by_caller.setdefault(identity.caller, new).steps.append((intersection_id, step))
        for intersection_id, (identity, plan_version, when) in renewed.items():
            new = usecases.RecordSteps(identity=identity, steps=[], leases={})
            by_caller.setdefault(identity.caller, new).leases[intersection_id] = (plan_version, when)
        return list(by_caller.values())

    async def changing(self, intersection_ids: set[str] | None, change: Callable[[], Awaitable[T]]) -> T:
        """Run a change of plans (of these intersections; None: any) after the queued steps are
        committed; the intersections are then read afresh from the database."""
        async with self._lock:
            await self.flush()
            try:
                return await change()
            finally:
                if intersection_ids is None:
                    self._lights.clear()
                else:
                    for intersection_id in intersection_ids:
                        self._lights.pop(intersection_id, None)
