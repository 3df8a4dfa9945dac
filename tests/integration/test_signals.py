"""Signal timing over gRPC with the real centrum-mini network (three SUMO traffic lights), NATS and
database: import, re-time, validate, activate, roll back, proposals, schedules and priority."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from almere.signals.v1 import signals_pb2 as pb
from google.protobuf.field_mask_pb2 import FieldMask

from apps.natsd import NatsServer
from tests.integration.helpers import Signals, read_stream, ts

PLAZA = "intersections/stadhuisplein"  # 4 links: 0,1 from spoke-e-in; 2,3 from spoke-w-in; 3 crosses 0,1


@pytest.fixture
async def client(signals: str, tokens: dict[str, str]) -> AsyncIterator[Signals]:
    async with grpc.aio.insecure_channel(signals) as channel:
        client = Signals(channel, tokens)
        await client.as_("engineer").ImportNetwork(pb.ImportNetworkRequest())
        yield client


def plan(*phases: tuple[str, float], offset: float = 0) -> pb.Plan:
    return pb.Plan(
        type=pb.PLAN_TYPE_STATIC, offset_seconds=offset, phases=[pb.Phase(state=s, duration=d) for s, d in phases]
    )


RETIMED = plan(("GGGg", 50), ("yyyy", 3), ("rrrr", 2))


async def test_import_creates_intersections_with_their_program_as_plan_1(client: Signals, network_file: Path) -> None:
    engineer = client.as_("engineer")
    listed = (await engineer.ListIntersections(pb.ListIntersectionsRequest())).intersections
    assert [i.name for i in listed] == ["intersections/ring-east", "intersections/ring-west", PLAZA]
    plaza = (await engineer.GetIntersection(pb.GetIntersectionRequest(name=PLAZA))).intersection
    assert (plaza.sumo_tls_id, len(plaza.links), plaza.active_plan_version) == ("stadhuisplein", 4, 1)
    assert list(plaza.links[3].foes) == [0, 1] and plaza.links[2].from_lane == "spoke-w-in_0"
    assert plaza.location.latitude == pytest.approx(52.3735, abs=1e-3)
    first = (await engineer.GetPlan(pb.GetPlanRequest(name=f"{PLAZA}/plans/1"))).plan
    assert (first.state, first.cycle_seconds, [p.state for p in first.phases]) == (
        pb.PLAN_STATE_ACTIVE,
        90,
        ["GGGg", "yyyy", "rrrr"],
    )
    net_xml = await asyncio.to_thread(network_file.read_bytes)
    again = await engineer.ImportNetwork(pb.ImportNetworkRequest(net_xml=net_xml))
    assert list(again.created) == [] and len(again.skipped) == 3


async def test_retime_activate_and_roll_back(client: Signals, nats_server: NatsServer) -> None:
    engineer = client.as_("engineer")
    created = (await engineer.CreatePlan(pb.CreatePlanRequest(parent=PLAZA, plan=RETIMED))).plan
    assert (created.name, created.state, created.cycle_seconds, created.author) == (
        f"{PLAZA}/plans/2",
        pb.PLAN_STATE_DRAFT,
        55,
        "engineer",
    )
    active = (await engineer.ActivatePlan(pb.ActivatePlanRequest(name=created.name, reason="evening peak"))).plan
    assert active.state == pb.PLAN_STATE_ACTIVE
    old = (await engineer.GetPlan(pb.GetPlanRequest(name=f"{PLAZA}/plans/1"))).plan
    assert old.state == pb.PLAN_STATE_SUPERSEDED
    back = (await engineer.RollbackPlan(pb.RollbackPlanRequest(parent=PLAZA, reason="complaints"))).plan
    assert (back.version, back.state) == (1, pb.PLAN_STATE_ACTIVE)
    plaza = (await engineer.GetIntersection(pb.GetIntersectionRequest(name=PLAZA))).intersection
    assert plaza.active_plan_version == 1
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await engineer.RollbackPlan(pb.RollbackPlanRequest(parent=PLAZA))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    plans = (await engineer.ListPlans(pb.ListPlansRequest(parent=PLAZA))).plans
    assert [(p.version, p.state) for p in plans] == [(2, pb.PLAN_STATE_SUPERSEDED), (1, pb.PLAN_STATE_ACTIVE)]
    history = (await engineer.ListIntersectionHistory(pb.ListIntersectionHistoryRequest(parent=PLAZA))).entries
    assert [(e.action, e.plan_version, e.actor) for e in history][-3:] == [
        ("plan_created", 2, "engineer"),
        ("plan_activated", 2, "engineer"),
        ("plan_activated", 1, "engineer"),
    ]
    assert history[-1].reason == "complaints" and history[-2].reason == "evening peak"
    events = await read_stream(nats_server, "almere.signals.v1.*.stadhuisplein", stream="SIGNALS")
    assert [s.split(".")[3] for s, _ in events] == [
        "intersection_imported",
        "plan_activated",
        "plan_created",
        "plan_activated",
        "plan_activated",
    ]
    versions = [e.change.version for _, e in events]  # type: ignore[attr-defined]
    assert versions == sorted(versions) and len(set(versions)) == len(versions)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (plan(("GGG", 50), ("yyy", 3)), "phase 0: state has 3 characters; the intersection has 4 links"),
        (plan(("GGGG", 50), ("yyyy", 3), ("rrrr", 2)), "phase 0: conflicting greens: links 0"),
        (plan(("GGGg", 50), ("rrrr", 5)), "phase 1: link 0: green -> red without yellow"),
        (plan(("GGGg", 50), ("yyyy", 2), ("rrrr", 3)), "yellow of 2 s"),
        (plan(("GGGg", 4), ("yyyy", 3), ("rrrr", 30)), "gets 4 s of green; minimum 5 s"),
        (plan(("GGGg", 300), ("yyyy", 3)), "cycle: 303 s is outside the allowed 30-180 s"),
        (plan(("GGGg", 50), ("yyyy", 3), offset=60), "offset_seconds"),
        (plan(("GGGx", 50), ("yyyy", 3)), "state character 'x'"),
        (plan(), "1 to 64 phases"),
        (
            pb.Plan(
                type=pb.PLAN_TYPE_ACTUATED,
                phases=[
                    pb.Phase(state="GGGg", duration=30, min_duration=40, max_duration=50),
                    pb.Phase(state="yyyy", duration=3),
                ],
            ),
            "min_duration <= duration",
        ),
    ],
)
async def test_unsafe_or_malformed_plans_are_rejected_and_nothing_is_stored(
    client: Signals, bad: pb.Plan, message: str
) -> None:
    engineer = client.as_("engineer")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await engineer.CreatePlan(pb.CreatePlanRequest(parent=PLAZA, plan=bad))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in err.value.details()
    plans = (await engineer.ListPlans(pb.ListPlansRequest(parent=PLAZA))).plans
    assert [p.version for p in plans] == [1]


async def test_proposals_follow_the_intersection_policy(client: Signals) -> None:
    optimizer, engineer = client.as_("optimizer"), client.as_("engineer")
    held = (await optimizer.ProposePlan(pb.ProposePlanRequest(parent=PLAZA, plan=RETIMED))).plan
    assert (held.state, held.author) == (pb.PLAN_STATE_PROPOSED, "optimizer")
    approved = (await engineer.ApprovePlan(pb.ApprovePlanRequest(name=held.name))).plan
    assert approved.state == pb.PLAN_STATE_ACTIVE
    second = (await optimizer.ProposePlan(pb.ProposePlanRequest(parent=PLAZA, plan=RETIMED))).plan
    rejected = (await engineer.RejectPlan(pb.RejectPlanRequest(name=second.name, reason="too short"))).plan
    assert rejected.state == pb.PLAN_STATE_REJECTED
    for call in (
        engineer.ApprovePlan(pb.ApprovePlanRequest(name=second.name)),
        engineer.ActivatePlan(pb.ActivatePlanRequest(name=second.name)),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    await engineer.UpdateIntersection(
        pb.UpdateIntersectionRequest(
            intersection=pb.Intersection(name=PLAZA, proposal_policy=pb.PROPOSAL_POLICY_AUTO_APPLY),
            update_mask=FieldMask(paths=["proposal_policy"]),
        )
    )
    applied = (await optimizer.ProposePlan(pb.ProposePlanRequest(parent=PLAZA, plan=RETIMED))).plan
    assert (applied.version, applied.state) == (4, pb.PLAN_STATE_ACTIVE)


async def test_roles(client: Signals) -> None:
    for caller, call in (
        ("optimizer", lambda c: c.CreatePlan(pb.CreatePlanRequest(parent=PLAZA, plan=RETIMED))),
        ("optimizer", lambda c: c.ActivatePlan(pb.ActivatePlanRequest(name=f"{PLAZA}/plans/1"))),
        ("police", lambda c: c.ProposePlan(pb.ProposePlanRequest(parent=PLAZA, plan=RETIMED))),
        ("operator", lambda c: c.GetIntersection(pb.GetIntersectionRequest(name=PLAZA))),
        ("operator", lambda c: c.ListIntersections(pb.ListIntersectionsRequest())),
        ("optimizer", lambda c: c.RequestPriority(pb.RequestPriorityRequest(parent=PLAZA))),
        ("police", lambda c: c.ImportNetwork(pb.ImportNetworkRequest())),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call(client.as_(caller))
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, caller


async def test_scheduled_activation(client: Signals) -> None:
    engineer = client.as_("engineer")
    created = (await engineer.CreatePlan(pb.CreatePlanRequest(parent=PLAZA, plan=RETIMED))).plan
    at = datetime.now(UTC) + timedelta(seconds=1)
    scheduled = (await engineer.ActivatePlan(pb.ActivatePlanRequest(name=created.name, activate_time=ts(at)))).plan
    assert scheduled.state == pb.PLAN_STATE_SCHEDULED
    for _ in range(50):
        if (await engineer.GetPlan(pb.GetPlanRequest(name=created.name))).plan.state == pb.PLAN_STATE_ACTIVE:
            break
        await asyncio.sleep(0.1)
    plaza = (await engineer.GetIntersection(pb.GetIntersectionRequest(name=PLAZA))).intersection
    assert plaza.active_plan_version == 2


async def test_emergency_first_priority(client: Signals) -> None:
    eta = ts(datetime.now(UTC) + timedelta(seconds=30))
    bus = (
        await client.as_("sim").RequestPriority(
            pb.RequestPriorityRequest(
                parent=PLAZA,
                priority=pb.Priority(
                    priority_class=pb.PRIORITY_CLASS_PUBLIC_TRANSPORT,
                    vehicle_id="bus-24",
                    approach_edge_id="spoke-e-in",
                    eta=eta,
                ),
            )
        )
    ).priority
    assert (bus.decision, bus.target_phase_index, bus.target_state) == (pb.PRIORITY_DECISION_GRANTED, 0, "GGGg")
    ambulance = (
        await client.as_("ems").RequestPriority(
            pb.RequestPriorityRequest(
                parent=PLAZA,
                priority=pb.Priority(
                    priority_class=pb.PRIORITY_CLASS_EMERGENCY,
                    vehicle_id="ambulance-7",
                    approach_edge_id="spoke-w-in",
                    eta=eta,
                ),
            )
        )
    ).priority
    assert (ambulance.decision, ambulance.requester) == (pb.PRIORITY_DECISION_GRANTED, "ems")
    assert ambulance.hold_until.seconds == eta.seconds + 20
    late_bus = (
        await client.as_("sim").RequestPriority(
            pb.RequestPriorityRequest(
                parent=PLAZA,
                priority=pb.Priority(
                    priority_class=pb.PRIORITY_CLASS_PUBLIC_TRANSPORT,
                    vehicle_id="bus-25",
                    approach_edge_id="spoke-e-in",
                    eta=eta,
                ),
            )
        )
    ).priority
    assert late_bus.decision == pb.PRIORITY_DECISION_DENIED and "emergency" in late_bus.reason
    history = await client.as_("engineer").ListIntersectionHistory(pb.ListIntersectionHistoryRequest(parent=PLAZA))
    ended = [e for e in history.entries if e.action == "priority_ended"]
    assert len(ended) == 1 and "pre-empted by ambulance-7" in ended[0].reason
    done = (await client.as_("ems").CancelPriority(pb.CancelPriorityRequest(name=ambulance.name))).priority
    assert done.decision == pb.PRIORITY_DECISION_ENDED
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.as_("ems").CancelPriority(pb.CancelPriorityRequest(name=ambulance.name))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.as_("ems").RequestPriority(
            pb.RequestPriorityRequest(
                parent=PLAZA,
                priority=pb.Priority(priority_class=pb.PRIORITY_CLASS_EMERGENCY, approach_edge_id="ring-w-n", eta=eta),
            )
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "not an approach" in err.value.details()


async def test_watch_sends_active_plans_then_changes(client: Signals) -> None:
    watch = client.as_("optimizer").WatchSignals(pb.WatchSignalsRequest(intersections=[PLAZA]))
    first = await asyncio.wait_for(watch.read(), 5)
    assert (first.snapshot, first.change.intersection, first.change.plan.version) == (True, PLAZA, 1)
    engineer = client.as_("engineer")
    await engineer.CreatePlan(
        pb.CreatePlanRequest(
            parent="intersections/ring-east",
            plan=plan(
                ("GGggrrrGGGg", 40),
                ("GGggrrryyyy", 3),
                ("GGGGrrrrrrr", 6),
                ("yyyyrrrrrrr", 3),
                ("rrrrGGgGrrr", 37),
                ("rrrryyyGrrr", 3),
            ),
        )
    )
    created = (await engineer.CreatePlan(pb.CreatePlanRequest(parent=PLAZA, plan=RETIMED))).plan
    await engineer.ActivatePlan(pb.ActivatePlanRequest(name=created.name))
    changes = [await asyncio.wait_for(watch.read(), 5) for _ in range(2)]
    assert [(c.snapshot, c.change.event, c.change.plan.version) for c in changes] == [
        (False, "plan_created", 2),
        (False, "plan_activated", 2),
    ]
    watch.cancel()
