"""Adaptive control fails safe (real signal service, optimizer, NATS, database): a takeover holds a
lease that steps and renewals extend; without them for longer than the lease the signal service
hands the light back to its timing plan by itself, says why in the history and on the bus, and
refuses later steps until a new takeover."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc
import pytest
from almere.optimizer.v1 import optimizer_pb2 as opb
from almere.optimizer.v1 import optimizer_pb2_grpc
from almere.signals.v1 import signals_pb2 as spb
from google.protobuf.field_mask_pb2 import FieldMask
from sqlalchemy import delete
from sqlmodel import Session

from services.common.clock import utcnow
from services.common.config import Settings
from services.signals.steps import FLUSH_S  # the lease is recorded up to this late, and expires as much later
from tests.integration.helpers import Client, Signals

LEASE_S = 4.0  # renewals every second; a loaded machine (load ~11 in CI) stalled a 2-s lease past expiry
POLL_S = 0.2
SLACK_S = 2.0  # a loaded machine's commit and scheduling delays
LIGHT = "intersections/j12"
EXPIRED = re.compile(r"^adaptive lease expired: no step for \d+ s$")
FAST = {"signal_adaptive_lease_seconds": LEASE_S, "scheduler_poll_seconds": POLL_S}


@pytest.fixture
async def lights(
    start_service: Callable[..., Awaitable[str]], almere_net: Path, tokens: dict[str, str]
) -> AsyncIterator[tuple[Signals, Client]]:
    """The signal service and the optimizer with a short lease; every light applies the optimizer's
    takeovers without approval."""
    from services.optimizer.service import SPEC as OPTIMIZER
    from services.signals.service import SPEC as SIGNALS

    signals_address = await start_service(SIGNALS, network_file=almere_net, **FAST)
    optimizer_address = await start_service(
        OPTIMIZER,
        network_file=almere_net,
        signals_address=signals_address,
        service_token=tokens["optimizer"],
        **FAST,
    )
    async with (
        grpc.aio.insecure_channel(signals_address) as signals_channel,
        grpc.aio.insecure_channel(optimizer_address) as optimizer_channel,
    ):
        signals = Signals(signals_channel, tokens)
        engineer = signals.as_("engineer")
        await engineer.ImportNetwork(spb.ImportNetworkRequest())
        for doc in (await engineer.ListIntersections(spb.ListIntersectionsRequest(page_size=100))).intersections:
            doc.proposal_policy = spb.PROPOSAL_POLICY_AUTO_APPLY
            await engineer.UpdateIntersection(
                spb.UpdateIntersectionRequest(intersection=doc, update_mask=FieldMask(paths=["proposal_policy"]))
            )
        yield signals, Client(optimizer_pb2_grpc.OptimizerServiceStub(optimizer_channel), tokens)


class _Watch:
    """WatchSignals in the background: the changes after its snapshot, as the bus delivered them."""

    def __init__(self, signals: Signals) -> None:
        self.changes: list[spb.SignalChange] = []
        self._call = signals.as_("engineer").WatchSignals(spb.WatchSignalsRequest(intersections=[LIGHT]))
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for reply in self._call:
            if not reply.snapshot:
                self.changes.append(reply.change)

    async def close(self) -> None:
        self._call.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


async def _active(signals: Signals, name: str = LIGHT) -> int:
    doc: spb.Intersection = (
        await signals.as_("engineer").GetIntersection(spb.GetIntersectionRequest(name=name))
    ).intersection
    return doc.active_plan_version


async def _is(signals: Signals, version: int, name: str = LIGHT) -> bool:
    return await _active(signals, name) == version


async def _any(watch: _Watch, version: int) -> bool:
    return any(c.event == "plan_activated" and c.plan.version == version for c in watch.changes)


async def _wait_for(check: Callable[[], Awaitable[bool]], timeout_s: float) -> float:
    """Poll `check` until true; returns when (monotonic), fails the test at the deadline."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, f"not within {timeout_s} s"
        await asyncio.sleep(0.05)
    return time.monotonic()


async def _keep_for(seconds: float, renew: Callable[[], Awaitable[None]], every_s: float = 0.4) -> None:
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        await renew()
        await asyncio.sleep(every_s)


def _step(state: str) -> spb.Step:
    return spb.Step(intersection=LIGHT, phases=[spb.Phase(state=state, duration=5.0)], reason="test")


async def test_steps_and_renewals_keep_the_lease_and_its_end_hands_the_light_back(
    lights: tuple[Signals, Client],
) -> None:
    signals, _ = lights
    optimizer = signals.as_("optimizer")
    (timing,) = (await signals.as_("engineer").ListPlans(spb.ListPlansRequest(parent=LIGHT))).plans
    green = next(p.state for p in timing.phases if "G" in p.state and "y" not in p.state)
    takeover = spb.Plan(type=spb.PLAN_TYPE_ADAPTIVE, phases=[spb.Phase(state=green, duration=5.0)], reason="test")
    watch = _Watch(signals)
    try:
        plan = (await optimizer.ProposePlan(spb.ProposePlanRequest(parent=LIGHT, plan=takeover))).plan
        assert plan.state == spb.PLAN_STATE_ACTIVE

        async def step() -> None:
            (result,) = (await optimizer.ApplySteps(spb.ApplyStepsRequest(steps=[_step(green)]))).results
            assert result.HasField("step"), result.refusal

        async def renew() -> None:
            reply = await optimizer.ApplySteps(spb.ApplyStepsRequest(renewals=[LIGHT]))
            assert list(reply.renewal_refusals) == [""]

        # Steps, then renewals alone (a light whose controller changes nothing), each longer than the lease.
        await _keep_for(LEASE_S * 1.5, step)
        await _keep_for(LEASE_S * 1.5, renew)
        assert await _active(signals) == plan.version
        # Nothing more: the light goes back to its timing plan, not before the lease is over.
        silent = time.monotonic()
        await renew()
        back = await _wait_for(lambda: _is(signals, timing.version), LEASE_S + FLUSH_S + POLL_S + SLACK_S)
        assert back - silent >= LEASE_S
        await _wait_for(lambda: _any(watch, timing.version), SLACK_S)
    finally:
        await watch.close()

    history = await signals.as_("engineer").ListIntersectionHistory(
        spb.ListIntersectionHistoryRequest(parent=LIGHT, page_size=100)
    )
    last = history.entries[-1]
    assert (last.action, last.actor, last.plan_version) == ("plan_activated", "scheduler", timing.version)
    assert EXPIRED.match(last.reason), last.reason
    (event,) = [c for c in watch.changes if c.event == "plan_activated" and c.plan.version == timing.version]
    assert EXPIRED.match(event.reason) and event.plan.type == spb.PLAN_TYPE_STATIC and event.actor == "scheduler"

    # Handed back: steps and renewals are refused, until a new takeover.
    reply = await optimizer.ApplySteps(spb.ApplyStepsRequest(steps=[_step(green)]))
    assert reply.results[0].refusal.startswith(f"FAILED_PRECONDITION: {LIGHT} is not under adaptive control")
    reply = await optimizer.ApplySteps(spb.ApplyStepsRequest(renewals=[LIGHT]))
    assert reply.renewal_refusals[0].startswith(f"FAILED_PRECONDITION: {LIGHT} is not under adaptive control")
    again = (await optimizer.ProposePlan(spb.ProposePlanRequest(parent=LIGHT, plan=takeover))).plan
    assert again.state == spb.PLAN_STATE_ACTIVE and again.version > plan.version
    (result,) = (await optimizer.ApplySteps(spb.ApplyStepsRequest(steps=[_step(green)]))).results
    assert result.step.plan_version == again.version


async def test_the_optimizer_renews_quiet_lights_and_they_fall_back_when_its_rounds_stop(
    lights: tuple[Signals, Client],
) -> None:
    signals, optimizer = lights
    call = optimizer.as_("sim").ControlSignals(None)
    sim_time = 0.0

    async def round_(lanes: list[opb.LaneReading] = ()) -> opb.ControlSignalsResponse:  # type: ignore[assignment]
        nonlocal sim_time
        await call.write(opb.ControlSignalsRequest(sim_time_seconds=sim_time, lanes=lanes))
        sim_time += 1
        reply: opb.ControlSignalsResponse = await call.read()
        return reply

    first = await round_()
    assert len(first.steps) == 22
    takeovers = {f"intersections/{s.sumo_tls_id}": s.plan_version for s in first.steps}
    quiet = [opb.LaneReading(lane_id=lane) for lane in first.lanes.lane_ids]  # nobody anywhere: no steps

    async def quiet_round() -> None:
        assert not (await round_(quiet)).steps

    await _keep_for(LEASE_S * 2, quiet_round, every_s=0.25)
    for name, version in takeovers.items():
        assert await _active(signals, name) == version, f"{name} fell back while the optimizer renewed it"

    # The rounds stop (the twin, or the optimizer's link to the lights, is gone): every light is back
    # on its timing plan within the lease and a poll.
    async def all_back() -> bool:
        return all([await _active(signals, name) != version for name, version in takeovers.items()])

    await _wait_for(all_back, LEASE_S + FLUSH_S + POLL_S + SLACK_S)
    # The optimizer learns it at its next round: its renewals are refused, it drives nothing.
    after = await round_(quiet)
    assert not after.status.controlled and len(after.status.refused) == 22
    call.cancel()
    # A new run takes the lights over again.
    again = optimizer.as_("sim").ControlSignals(None)
    await again.write(opb.ControlSignalsRequest(sim_time_seconds=0))
    assert len((await again.read()).steps) == 22
    again.cancel()


async def test_a_takeover_from_before_leases_gets_one_and_falls_back_without_steps(
    lights: tuple[Signals, Client], settings: Settings
) -> None:
    """A takeover activated by a version without leases has no lease row: it would be neither
    renewed nor handed back. The signal service leases it as it starts (the handler run here)."""
    from services.common.db import make_engine
    from services.signals import usecases
    from services.signals.models import LeaseRow

    signals, _ = lights
    (timing,) = (await signals.as_("engineer").ListPlans(spb.ListPlansRequest(parent=LIGHT))).plans
    green = next(p.state for p in timing.phases if "G" in p.state and "y" not in p.state)
    takeover = spb.Plan(type=spb.PLAN_TYPE_ADAPTIVE, phases=[spb.Phase(state=green, duration=5.0)], reason="test")
    plan = (await signals.as_("optimizer").ProposePlan(spb.ProposePlanRequest(parent=LIGHT, plan=takeover))).plan
    engine = make_engine(settings.database_url_for("signals"))
    try:
        with Session(engine) as session, session.begin():
            session.execute(delete(LeaseRow))
        await asyncio.sleep(LEASE_S + FLUSH_S + POLL_S * 2)
        assert await _active(signals) == plan.version  # unleased: held for ever
        with Session(engine) as session, session.begin():
            usecases.lease_unleased_takeovers(session, [utcnow()])
        await _wait_for(lambda: _is(signals, timing.version), LEASE_S + FLUSH_S + POLL_S + SLACK_S)
    finally:
        engine.dispose()
