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


class _Stream:
    """One ControlSignals stream (a run), request by request as the twin drives it."""

    def __init__(self, optimizer: Client, caller: str) -> None:
        self.call = optimizer.as_(caller).ControlSignals(None)

    async def round(self, sim_time: float, lanes: list[opb.LaneReading] = ()) -> opb.ControlSignalsResponse:  # type: ignore[assignment]
        await self.call.write(opb.ControlSignalsRequest(sim_time_seconds=sim_time, lanes=lanes))
        reply: opb.ControlSignalsResponse = await self.call.read()
        return reply


async def _refused(stream: _Stream, sim_time: float, lanes: list[opb.LaneReading] = ()) -> tuple[grpc.StatusCode, str]:  # type: ignore[assignment]
    return await _code(stream.round(sim_time, lanes))


async def _plans(signals: Signals, tls: str) -> list[spb.Plan]:
    reply = await signals.as_("engineer").ListPlans(spb.ListPlansRequest(parent=f"intersections/{tls}", page_size=100))
    return list(reply.plans)


async def test_steps_go_through_the_signal_service_by_policy(lights: tuple[Signals, Client]) -> None:
    signals, optimizer = lights
    run = _Stream(optimizer, "sim")
    first = await run.round(0)
    names = {step.sumo_tls_id for step in first.steps}
    assert len(names) == 21 and HELD not in names  # almere-centrum has 22 lights
    assert list(first.status.awaiting_approval) == [f"intersections/{HELD}"]
    assert f"intersections/{HELD}" not in first.status.controlled and len(first.status.controlled) == 21
    assert first.lanes.lane_ids and set(first.lanes.near_lane_ids) <= set(first.lanes.lane_ids)
    assert all(step.reason == "start" and step.plan_version == 2 and not step.sequence for step in first.steps)
    # Each takeover is a plan version; the held one is stored, not active: the light keeps its plan.
    (takeover, _) = await _plans(signals, "j12")
    assert (takeover.type, takeover.state, takeover.author) == (
        spb.PLAN_TYPE_ADAPTIVE,
        spb.PLAN_STATE_ACTIVE,
        "optimizer",
    )
    held = await _plans(signals, HELD)
    assert [(p.version, p.type, p.state) for p in held] == [
        (2, spb.PLAN_TYPE_ADAPTIVE, spb.PLAN_STATE_PROPOSED),
        (1, spb.PLAN_TYPE_STATIC, spb.PLAN_STATE_ACTIVE),
    ]

    # Bad callers and bad readings are refused (each on a stream of its own, which ends), and
    # nothing changes meanwhile: the run above goes on.
    before = len(await _plans(signals, "j12"))
    code, _ = await _refused(_Stream(optimizer, "operator"), 1, _quiet(first))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    code, message = await _refused(_Stream(optimizer, "sim"), 1, [opb.LaneReading(lane_id="x", vehicles=1, halting=2)])
    assert (code, message) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "lanes[0]: counts must satisfy 0 <= halting <= vehicles",
    )
    code, _ = await _refused(_Stream(optimizer, "sim"), -1)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert len(await _plans(signals, "j12")) == before

    # Empty roads: nobody needs another green, so no step; nothing changed, so nothing is repeated.
    quiet = await run.round(1, _quiet(first))
    assert not quiet.steps and not quiet.HasField("lanes") and not quiet.HasField("status")

    # An engineer approves the held takeover; the optimizer starts driving that light too.
    await signals.as_("engineer").ApprovePlan(spb.ApprovePlanRequest(name=held[0].name, reason="test bed"))
    resumed = await run.round(6)
    assert [s.sumo_tls_id for s in resumed.steps] == [HELD]
    assert not resumed.status.awaiting_approval and len(resumed.status.controlled) == 22
    assert len(resumed.lanes.lane_ids) > len(first.lanes.lane_ids)  # j22's lanes too, from now on

    # Engineers cannot make steps themselves or re-run old ones; a rollback hands the light back.
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

    # Time goes on within a run only.
    code, message = await _refused(run, 3)
    assert (code, message) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "sim_time_seconds went back: a new run needs a new stream",
    )

    # A new run (a new stream, as when a simulation starts again): the optimizer takes every light
    # over afresh, from the state its last step holds (the service refuses anything abrupt), and j12
    # from its plan again; the stream before it, still open, is ended.
    before = _Stream(optimizer, "sim")
    await before.round(0)
    again = await _Stream(optimizer, "sim").round(0)
    assert len(again.steps) == 22 and not again.status.awaiting_approval
    assert all(s.reason == "start" for s in again.steps)
    code, _ = await _refused(before, 1)
    assert code == grpc.StatusCode.ABORTED


async def test_steps_after_a_takeover_are_validated_and_recorded_without_plan_versions(
    lights: tuple[Signals, Client],
) -> None:
    signals, optimizer = lights
    first = await _Stream(optimizer, "sim").round(0)
    j12 = next(s for s in first.steps if s.sumo_tls_id == "j12")
    holding = j12.phases[-1].state
    parent = "intersections/j12"

    def step(*phases: tuple[str, float], at: str = parent) -> spb.Step:
        return spb.Step(intersection=at, phases=[spb.Phase(state=s, duration=d) for s, d in phases], reason="test")

    cut = "".join("r" if c in "Gg" else c for c in holding)  # every green to red at once
    applied = await signals.as_("optimizer").ApplySteps(
        spb.ApplyStepsRequest(steps=[step((holding, 5)), step((cut, 5), at=f"intersections/{HELD}")])
    )
    ok, not_adaptive = applied.results
    assert (ok.step.sequence, ok.step.plan_version, ok.step.actor) == (1, j12.plan_version, "optimizer")
    assert not_adaptive.refusal.startswith("FAILED_PRECONDITION: intersections/j22 is not under adaptive control")
    refused = await signals.as_("optimizer").ApplySteps(spb.ApplyStepsRequest(steps=[step((cut, 5))]))
    assert "green -> red without yellow" in refused.results[0].refusal
    code, _ = await _code(signals.as_("engineer").ApplySteps(spb.ApplyStepsRequest(steps=[step((holding, 5))])))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    # Recorded compactly, in order; no plan version each.
    listed = await signals.as_("engineer").ListSteps(spb.ListStepsRequest(parent=parent))
    assert [(s.sequence, s.phases[-1].state, s.reason) for s in listed.steps] == [(1, holding, "test")]
    assert len(await _plans(signals, "j12")) == 2
    history = await signals.as_("engineer").ListIntersectionHistory(
        spb.ListIntersectionHistoryRequest(parent=parent, page_size=100)
    )
    assert [(e.action, e.reason) for e in history.entries if e.action == "steps_applied"] == [
        ("steps_applied", "steps 1-1")
    ]


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
