"""Demo scene 3: an engineer imports the network's traffic lights, has an unsafe plan refused,
activates a re-timed one and rolls it back; an ambulance gets priority and a bus behind it does not."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta

import grpc
from almere.signals.v1 import signals_pb2 as pb
from almere.signals.v1 import signals_pb2_grpc
from google.protobuf.timestamp_pb2 import Timestamp

from services.common.clock import to_timestamp, utcnow

PLAZA = "intersections/stadhuisplein"
DECISION = {v: n.removeprefix("PRIORITY_DECISION_") for n, v in pb.PriorityDecision.items()}


def _auth(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


def _plan(*phases: tuple[str, float], reason: str) -> pb.Plan:
    return pb.Plan(type=pb.PLAN_TYPE_STATIC, phases=[pb.Phase(state=s, duration=d) for s, d in phases], reason=reason)


def _priority(
    *, priority_class: pb.PriorityClass.ValueType, vehicle_id: str, approach_edge_id: str, eta: Timestamp
) -> pb.RequestPriorityRequest:
    priority = pb.Priority(
        priority_class=priority_class, vehicle_id=vehicle_id, approach_edge_id=approach_edge_id, eta=eta
    )
    return pb.RequestPriorityRequest(parent=PLAZA, priority=priority)


async def _watch(stub: signals_pb2_grpc.SignalServiceAsyncStub, token: str, say: Callable[[str], None]) -> None:
    async for message in stub.WatchSignals(pb.WatchSignalsRequest(intersections=[PLAZA]), metadata=_auth(token)):
        c = message.change
        phases = " ".join(f"{p.state}:{p.duration:g}s" for p in c.plan.phases)
        what = f"plan v{c.plan.version} [{phases}]" if c.plan.version else ""
        if c.priority.name:
            what = f"{c.priority.vehicle_id} {DECISION[c.priority.decision]}: {c.priority.reason}"
        say(f"[signals watch{' snapshot' if message.snapshot else ''}] {c.event} {what}")


async def play(channel: grpc.aio.Channel, tokens: dict[str, str], say: Callable[[str], None]) -> bool:
    engineer, ems, sim = _auth(tokens["engineer"]), _auth(tokens["ems"]), _auth(tokens["sim"])
    async with channel:
        stub = signals_pb2_grpc.SignalServiceStub(channel)
        imported = await stub.ImportNetwork(pb.ImportNetworkRequest(), metadata=engineer)
        for i in imported.created:
            say(f"[engineer] imported {i.name}: {len(i.links)} links, plan v{i.active_plan_version} active")
        watcher = asyncio.create_task(_watch(stub, tokens["optimizer"], say))
        await asyncio.sleep(0.3)
        try:
            await stub.CreatePlan(
                pb.CreatePlanRequest(parent=PLAZA, plan=_plan(("GGGG", 40), ("yyyy", 3), reason="all green")),
                metadata=engineer,
            )
            refused = ""
        except grpc.aio.AioRpcError as err:
            refused = err.details() or ""
            say(f"[engineer] unsafe plan refused: {err.code().name}: {refused}")
        retimed = await stub.CreatePlan(
            pb.CreatePlanRequest(
                parent=PLAZA, plan=_plan(("GGGg", 50), ("yyyy", 3), ("rrrr", 2), reason="festival evening")
            ),
            metadata=engineer,
        )
        await stub.ActivatePlan(pb.ActivatePlanRequest(name=retimed.plan.name, reason="festival"), metadata=engineer)
        eta = to_timestamp(utcnow() + timedelta(seconds=20))
        ambulance = await stub.RequestPriority(
            _priority(
                priority_class=pb.PRIORITY_CLASS_EMERGENCY,
                vehicle_id="ambulance-7",
                approach_edge_id="spoke-w-in",
                eta=eta,
            ),
            metadata=ems,
        )
        p = ambulance.priority
        say(
            f"[ems] ambulance-7: {DECISION[p.decision]}, phase {p.target_phase_index} ({p.target_state}) until hold end"
        )
        bus = await stub.RequestPriority(
            _priority(
                priority_class=pb.PRIORITY_CLASS_PUBLIC_TRANSPORT,
                vehicle_id="bus-24",
                approach_edge_id="spoke-e-in",
                eta=eta,
            ),
            metadata=sim,
        )
        rollback = await stub.RollbackPlan(
            pb.RollbackPlanRequest(parent=PLAZA, reason="festival over"), metadata=engineer
        )
        say(f"[engineer] rolled back to plan v{rollback.plan.version}")
        await asyncio.sleep(0.5)
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
    ok = (
        "conflicting greens" in refused
        and p.decision == pb.PRIORITY_DECISION_GRANTED
        and bus.priority.decision == pb.PRIORITY_DECISION_DENIED
        and rollback.plan.version == 1
    )
    say(
        "[result] lights imported, re-timed, validated, activated and rolled back; the ambulance got green first"
        if ok
        else "[result] UNEXPECTED signal-timing outcome"
    )
    return ok
