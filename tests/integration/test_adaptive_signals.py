"""Adaptive signal control through the services (real signal service, optimizer, NATS, database):
the optimizer's steps are proposed to the signal service and activated by each intersection's
policy; a takeover held for approval leaves the light alone until an engineer approves it; bad
readings and bad callers change nothing; a rollback hands the light back to its timing plan."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc
import pytest
from almere.optimizer.v1 import optimizer_pb2 as opb
from almere.optimizer.v1 import optimizer_pb2_grpc
from almere.signals.v1 import signals_pb2 as spb
from google.protobuf.field_mask_pb2 import FieldMask

from tests.integration.helpers import Client, Signals, ts

HELD = "j22"  # the one intersection whose takeover waits for an engineer


async def _code(call: Awaitable[object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    return err.value.code(), err.value.details() or ""


@pytest.fixture
async def lights(
    start_service: Callable[..., Awaitable[str]], almere_net: Path, tokens: dict[str, str]
) -> AsyncIterator[tuple[Signals, Client]]:
    from services.optimizer.service import SPEC as OPTIMIZER
    from services.signals.service import SPEC as SIGNALS

    signals_address = await start_service(SIGNALS, network_file=almere_net)
    optimizer_address = await start_service(
        OPTIMIZER, network_file=almere_net, signals_address=signals_address, service_token=tokens["optimizer"]
    )
    async with (
        grpc.aio.insecure_channel(signals_address) as signals_channel,
        grpc.aio.insecure_channel(optimizer_address) as optimizer_channel,
    ):
        signals = Signals(signals_channel, tokens)
        await signals.as_("engineer").ImportNetwork(spb.ImportNetworkRequest())
        listed = await signals.as_("engineer").ListIntersections(spb.ListIntersectionsRequest(page_size=100))
        for doc in listed.intersections:
            if doc.sumo_tls_id != HELD:
                doc.proposal_policy = spb.PROPOSAL_POLICY_AUTO_APPLY
                mask = FieldMask(paths=["proposal_policy"])
                await signals.as_("engineer").UpdateIntersection(
                    spb.UpdateIntersectionRequest(intersection=doc, update_mask=mask)
                )
        yield signals, Client(optimizer_pb2_grpc.OptimizerServiceStub(optimizer_channel), tokens)


def _quiet(reply: opb.ControlSignalsResponse) -> list[opb.LaneReading]:
    """Empty roads: nobody anywhere."""
    return [opb.LaneReading(lane_id=lane) for lane in reply.lanes.lane_ids]


async def _plans(signals: Signals, tls: str) -> list[spb.Plan]:
    reply = await signals.as_("engineer").ListPlans(spb.ListPlansRequest(parent=f"intersections/{tls}", page_size=100))
    return list(reply.plans)


async def test_steps_go_through_the_signal_service_by_policy(lights: tuple[Signals, Client]) -> None:
    signals, optimizer = lights
    first = await optimizer.as_("sim").ControlSignals(opb.ControlSignalsRequest(sim_time_seconds=0))
    names = {step.sumo_tls_id for step in first.steps}
    assert len(names) == 21 and HELD not in names  # almere-centrum has 22 lights
    assert list(first.awaiting_approval) == [f"intersections/{HELD}"]
    assert f"intersections/{HELD}" not in first.controlled and len(first.controlled) == 21
    assert first.lanes.lane_ids and set(first.lanes.near_lane_ids) <= set(first.lanes.lane_ids)
    for step in first.steps:
        assert step.plan.type == spb.PLAN_TYPE_ADAPTIVE and step.plan.state == spb.PLAN_STATE_ACTIVE
        assert step.plan.author == "optimizer" and step.plan.reason == "start"
    # The held takeover is stored, not active: the light keeps its imported plan.
    held = await _plans(signals, HELD)
    assert [(p.version, p.type, p.state) for p in held] == [
        (2, spb.PLAN_TYPE_ADAPTIVE, spb.PLAN_STATE_PROPOSED),
        (1, spb.PLAN_TYPE_STATIC, spb.PLAN_STATE_ACTIVE),
    ]

    # Bad callers and bad readings are refused, and nothing is proposed meanwhile.
    before = len(await _plans(signals, "j12"))
    request = opb.ControlSignalsRequest(sim_time_seconds=1, lanes=_quiet(first))
    code, _ = await _code(optimizer.as_("operator").ControlSignals(request))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    bad = opb.ControlSignalsRequest(sim_time_seconds=1, lanes=[opb.LaneReading(lane_id="x", vehicles=1, halting=2)])
    code, message = await _code(optimizer.as_("sim").ControlSignals(bad))
    assert (code, message) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "lanes[0]: counts must satisfy 0 <= halting <= vehicles",
    )
    code, _ = await _code(optimizer.as_("sim").ControlSignals(opb.ControlSignalsRequest(sim_time_seconds=-1)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert len(await _plans(signals, "j12")) == before

    # Empty roads: nobody needs another green, so no step.
    quiet = await optimizer.as_("sim").ControlSignals(request)
    assert not quiet.steps and not quiet.HasField("lanes")  # the same lanes as before: not repeated

    # An engineer approves the held takeover; the optimizer starts driving that light too.
    await signals.as_("engineer").ApprovePlan(spb.ApprovePlanRequest(name=held[0].name, reason="test bed"))
    resumed = await optimizer.as_("sim").ControlSignals(opb.ControlSignalsRequest(sim_time_seconds=6))
    assert [s.sumo_tls_id for s in resumed.steps] == [HELD]
    assert not resumed.awaiting_approval and len(resumed.controlled) == 22
    assert len(resumed.lanes.lane_ids) > len(first.lanes.lane_ids)  # j22's lanes too, from now on

    # Engineers cannot make steps themselves or re-run old ones; a rollback hands the light back.
    takeover = (await _plans(signals, "j12"))[0]
    code, message = await _code(
        signals.as_("engineer").CreatePlan(spb.CreatePlanRequest(parent="intersections/j12", plan=takeover))
    )
    assert (code, message) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "adaptive steps come from the optimizer (ProposePlan), not CreatePlan",
    )
    await signals.as_("engineer").RollbackPlan(spb.RollbackPlanRequest(parent="intersections/j12", reason="manual"))
    doc = (
        await signals.as_("engineer").GetIntersection(spb.GetIntersectionRequest(name="intersections/j12"))
    ).intersection
    assert doc.active_plan_version == 1
    code, _ = await _code(signals.as_("engineer").ActivatePlan(spb.ActivatePlanRequest(name=takeover.name)))
    assert code == grpc.StatusCode.FAILED_PRECONDITION

    # A new run (time goes back, as when a simulation starts again): the optimizer takes every light
    # over afresh, from the state its last step holds (the service refuses anything abrupt), and j12
    # from its plan again.
    again = await optimizer.as_("sim").ControlSignals(opb.ControlSignalsRequest(sim_time_seconds=0))
    assert len(again.steps) == 22 and not again.awaiting_approval
    assert all(s.plan.state == spb.PLAN_STATE_ACTIVE and s.plan.reason == "start" for s in again.steps)


async def test_a_step_approved_late_must_still_follow_what_the_light_shows(lights: tuple[Signals, Client]) -> None:
    """Two takeovers of the held light wait for approval; once one is active, approving the other
    would cut greens without yellow: refused, nothing changes. Steps come from the optimizer only,
    start at once or not at all, and a rollback never lands on one."""
    signals, _ = lights
    parent = f"intersections/{HELD}"
    (imported,) = await _plans(signals, HELD)
    greens = [p.state for p in imported.phases if {"G", "g"} & set(p.state) and not {"y", "Y"} & set(p.state)]
    first, second = next(
        (a, b) for a in greens for b in greens if any(c in "Gg" and a[k] not in "Gg" for k, c in enumerate(b))
    )

    def step(state: str) -> spb.Plan:
        return spb.Plan(type=spb.PLAN_TYPE_ADAPTIVE, phases=[spb.Phase(state=state, duration=5.0)], reason="test")

    for caller, refusal in (
        ("engineer", "only the optimizer proposes adaptive steps; engineer may not"),
        ("sim", "role sim may not ProposePlan"),  # the twin proposes nothing at all
    ):
        code, message = await _code(
            signals.as_(caller).ProposePlan(spb.ProposePlanRequest(parent=parent, plan=step(first)))
        )
        assert code == grpc.StatusCode.PERMISSION_DENIED and refusal in message
    a = (await signals.as_("optimizer").ProposePlan(spb.ProposePlanRequest(parent=parent, plan=step(first)))).plan
    b = (await signals.as_("optimizer").ProposePlan(spb.ProposePlanRequest(parent=parent, plan=step(second)))).plan
    assert a.state == b.state == spb.PLAN_STATE_PROPOSED
    code, _ = await _code(
        signals.as_("engineer").ActivatePlan(spb.ActivatePlanRequest(name=a.name, activate_time=ts()))
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION  # no scheduled steps
    await signals.as_("engineer").ApprovePlan(spb.ApprovePlanRequest(name=b.name, reason="takeover"))
    code, message = await _code(signals.as_("engineer").ApprovePlan(spb.ApprovePlanRequest(name=a.name)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "green -> red without yellow" in message
    states = {p.version: p.state for p in await _plans(signals, HELD)}
    assert states == {1: spb.PLAN_STATE_SUPERSEDED, 2: spb.PLAN_STATE_PROPOSED, 3: spb.PLAN_STATE_ACTIVE}
    # Handed back, and back again: a second rollback finds no timing plan before, not the old step.
    await signals.as_("engineer").RollbackPlan(spb.RollbackPlanRequest(parent=parent))
    code, _ = await _code(signals.as_("engineer").RollbackPlan(spb.RollbackPlanRequest(parent=parent)))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    got = await signals.as_("engineer").GetIntersection(spb.GetIntersectionRequest(name=parent))
    assert got.intersection.active_plan_version == 1
