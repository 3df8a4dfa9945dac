"""Adopting a plan: its levers applied through the real services with this service's own token,
lever by lever (closures, signal control, the optimizer's strategy, planned events); a failing call
stops the adoption and names what was already applied (no silent partial success)."""

from __future__ import annotations

import uuid
from datetime import timedelta

from almere.incidents.v1 import incidents_pb2 as ipb
from almere.incidents.v1 import incidents_pb2_grpc
from almere.optimizer.v1 import optimizer_pb2 as opb
from almere.optimizer.v1 import optimizer_pb2_grpc
from almere.signals.v1 import signals_pb2 as spb
from almere.signals.v1 import signals_pb2_grpc
from almere.whatif.v1 import whatif_pb2 as pb
from google.protobuf import field_mask_pb2
from grpc import aio

from services.common.clock import from_timestamp, to_timestamp
from services.common.config import Settings
from services.whatif.starts import channel, metadata

Auth = tuple[tuple[str, str], ...]
TIMEOUT_S = 10.0
FIXED_TYPES = (spb.PLAN_TYPE_STATIC, spb.PLAN_TYPE_ACTUATED)


OVER = (ipb.INCIDENT_STATE_CLEARED, ipb.INCIDENT_STATE_CANCELLED)


class AdoptionFailed(Exception):
    def __init__(self, message: str, applied: list[str]) -> None:
        super().__init__(message)
        self.message = message
        self.applied = applied


async def apply(settings: Settings, plan: pb.ResponsePlan, *, what_if: str) -> list[str]:
    """Applies every lever; returns one line per change. Raises AdoptionFailed with the changes
    already made when a call fails."""
    auth = metadata(settings)
    changes: list[str] = []
    try:
        if plan.closures or plan.events:
            async with channel(settings.incidents_address, "incidents") as ch:
                incidents: incidents_pb2_grpc.IncidentServiceAsyncStub = incidents_pb2_grpc.IncidentServiceStub(ch)
                for closure in plan.closures:
                    changes.append(await _closure(incidents, closure, auth=auth, what_if=what_if))
                for event in plan.events:
                    changes.extend(await _event(incidents, event, auth=auth, what_if=what_if))
        if plan.signals:
            await _signals(settings, plan, auth=auth, what_if=what_if, changes=changes)
        if plan.strategy_mask.paths:
            paths = list(plan.strategy_mask.paths)
            async with channel(settings.optimizer_address, "optimizer") as ch:
                optimizer: optimizer_pb2_grpc.OptimizerServiceAsyncStub = optimizer_pb2_grpc.OptimizerServiceStub(ch)
                request = opb.SetStrategyRequest(
                    strategy=plan.strategy, update_mask=field_mask_pb2.FieldMask(paths=paths)
                )
                await optimizer.SetStrategy(request, metadata=auth, timeout=TIMEOUT_S)
                changes.append(f"optimizer strategy: {', '.join(paths)} set")
    except aio.AioRpcError as err:
        raise AdoptionFailed(f"{err.code().name}: {err.details()}", changes) from None
    except AdoptionFailed as failed:  # with what the failing lever itself had already done
        raise AdoptionFailed(failed.message, [*changes, *(c for c in failed.applied if c not in changes)]) from None
    return changes


async def _closure(
    incidents: incidents_pb2_grpc.IncidentServiceAsyncStub, closure: pb.Closure, *, auth: Auth, what_if: str
) -> str:
    impact = ipb.Impact(
        closed_lanes=list(closure.closed_lanes),
        full_closure=closure.full_closure,
        speed_limit_kmh=closure.speed_limit_kmh,
    )
    lanes = ",".join(str(lane) for lane in closure.closed_lanes) or "none"
    what = f"lanes {lanes} closed, full closure {'yes' if closure.full_closure else 'no'}"
    if closure.incident:
        current = await incidents.GetIncident(
            ipb.GetIncidentRequest(name=closure.incident), metadata=auth, timeout=TIMEOUT_S
        )
        if current.incident.state in OVER:  # it cleared while the plans were simulated: nothing to close
            return f"{closure.incident}: over ({ipb.IncidentState.Name(current.incident.state)}), no closure needed"
        incident = ipb.Incident(name=closure.incident, impact=impact)
        mask = field_mask_pb2.FieldMask(paths=["impact"])
        request = ipb.UpdateIncidentRequest(incident=incident, update_mask=mask)
        await incidents.UpdateIncident(request, metadata=auth, timeout=TIMEOUT_S)
        return f"{closure.incident}: impact set ({what})"
    reported = await incidents.ReportIncident(
        ipb.ReportIncidentRequest(
            request_id=f"{what_if}/{closure.edge_id}"[:128],  # adopting again reports it once
            incident=ipb.Incident(
                type=ipb.INCIDENT_TYPE_ROAD_WORKS,
                title=f"Closure of {closure.edge_id} ({what_if})"[:200],
                network_location=ipb.NetworkLocation(edge_id=closure.edge_id),
                impact=impact,
            ),
        ),
        metadata=auth,
        timeout=TIMEOUT_S,
    )
    return f"{reported.incident.name}: new closure of {closure.edge_id} ({what})"


async def _event(
    incidents: incidents_pb2_grpc.IncidentServiceAsyncStub, change: pb.EventChange, *, auth: Auth, what_if: str
) -> list[str]:
    """Cancel: CancelPlannedEvent. A shift: the event created again with its closures moved, then
    the original cancelled."""
    reason = f"adopted from {what_if}"
    if change.cancel:
        request = ipb.CancelPlannedEventRequest(name=change.planned_event, reason=reason)
        await incidents.CancelPlannedEvent(request, metadata=auth, timeout=TIMEOUT_S)
        return [f"{change.planned_event}: cancelled"]
    if not change.shift_minutes:
        return []
    got = await incidents.GetPlannedEvent(
        ipb.GetPlannedEventRequest(name=change.planned_event), metadata=auth, timeout=TIMEOUT_S
    )
    moved = ipb.PlannedEvent(display_name=got.planned_event.display_name, type=got.planned_event.type)
    shift = timedelta(minutes=change.shift_minutes)
    for closure in got.planned_event.closures:
        copy = moved.closures.add()
        copy.CopyFrom(closure)
        for field in ("expected_start_time", "expected_end_time"):
            if closure.impact.HasField(field):
                getattr(copy.impact, field).CopyFrom(
                    to_timestamp(from_timestamp(getattr(closure.impact, field)) + shift)
                )
    old_id = change.planned_event.removeprefix("plannedEvents/")
    new_id = f"{old_id[:54]}-{uuid.uuid4().hex[:8]}"
    created = await incidents.CreatePlannedEvent(
        ipb.CreatePlannedEventRequest(planned_event_id=new_id, planned_event=moved), metadata=auth, timeout=TIMEOUT_S
    )
    lines = [f"{created.planned_event.name}: {change.planned_event} moved by {change.shift_minutes:+g} minutes"]
    try:
        request = ipb.CancelPlannedEventRequest(name=change.planned_event, reason=f"moved to {new_id}, {reason}")
        await incidents.CancelPlannedEvent(request, metadata=auth, timeout=TIMEOUT_S)
    except aio.AioRpcError as err:
        raise AdoptionFailed(f"cancelling {change.planned_event} after moving it: {err.details()}", lines) from None
    lines.append(f"{change.planned_event}: cancelled (moved)")
    return lines


async def _signals(settings: Settings, plan: pb.ResponsePlan, *, auth: Auth, what_if: str, changes: list[str]) -> None:
    """FIXED: lights under an adaptive takeover get their newest fixed plan activated again.
    ADAPTIVE: no call switches lights to adaptive control (the optimizer takes them over by its own
    proposals, per intersection proposal policy); it is recorded as a change left to the optimizer."""
    fixed = [a for a in plan.signals if a.control == pb.SIGNAL_CONTROL_FIXED]
    for area in plan.signals:
        if area.control == pb.SIGNAL_CONTROL_ADAPTIVE:
            lights = ", ".join(area.sumo_tls_ids) or "every light"
            changes.append(
                f"signals {lights}: adaptive control is the optimizer's to take (its takeover follows each "
                "intersection's proposal policy); nothing switched"
            )
    if not fixed:
        return
    async with channel(settings.signals_address, "signals") as ch:
        signals: signals_pb2_grpc.SignalServiceAsyncStub = signals_pb2_grpc.SignalServiceStub(ch)
        intersections: list[spb.Intersection] = []
        token = ""
        while True:
            page = await signals.ListIntersections(
                spb.ListIntersectionsRequest(page_size=1000, page_token=token), metadata=auth, timeout=TIMEOUT_S
            )
            intersections.extend(page.intersections)
            token = page.next_page_token
            if not token:
                break
        wanted = {t for a in fixed for t in a.sumo_tls_ids}
        every = any(not a.sumo_tls_ids for a in fixed)
        unknown = wanted - {i.sumo_tls_id for i in intersections}
        if unknown:
            raise AdoptionFailed(f"signals: no intersection runs light(s) {', '.join(sorted(unknown))}", changes)
        for intersection in intersections:
            if every or intersection.sumo_tls_id in wanted:
                line = await _fixed(signals, intersection, auth=auth, what_if=what_if)
                if line:
                    changes.append(line)


async def _fixed(
    signals: signals_pb2_grpc.SignalServiceAsyncStub, intersection: spb.Intersection, *, auth: Auth, what_if: str
) -> str:
    plans = await signals.ListPlans(
        spb.ListPlansRequest(parent=intersection.name, page_size=100), metadata=auth, timeout=TIMEOUT_S
    )
    active = next((p for p in plans.plans if p.version == intersection.active_plan_version), None)
    if active is None or active.type in FIXED_TYPES:
        return ""  # already on a fixed plan
    fallback = next((p for p in plans.plans if p.type in FIXED_TYPES and p.state == spb.PLAN_STATE_SUPERSEDED), None)
    if fallback is None:
        raise AdoptionFailed(f"{intersection.name}: no fixed plan to return to", [])
    request = spb.ActivatePlanRequest(name=fallback.name, reason=f"fixed control adopted from {what_if}")
    await signals.ActivatePlan(request, metadata=auth, timeout=TIMEOUT_S)
    return f"{intersection.name} ({intersection.sumo_tls_id}): fixed plan {fallback.version} active again"
