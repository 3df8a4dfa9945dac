"""Adopting a plan: its levers applied through the real services with this service's own token,
lever by lever; a failing call stops the adoption and names what was already applied."""

from __future__ import annotations

from almere.incidents.v1 import incidents_pb2 as ipb
from almere.incidents.v1 import incidents_pb2_grpc
from almere.optimizer.v1 import optimizer_pb2 as opb
from almere.optimizer.v1 import optimizer_pb2_grpc
from almere.whatif.v1 import whatif_pb2 as pb
from google.protobuf import field_mask_pb2
from grpc import aio

from services.common.config import Settings
from services.whatif.starts import channel, metadata


class AdoptionFailed(Exception):
    def __init__(self, message: str, applied: list[str]) -> None:
        super().__init__(message)
        self.message = message
        self.applied = applied


async def apply(settings: Settings, plan: pb.ResponsePlan, *, what_if: str) -> list[str]:
    """Applies every lever; returns one line per change. Raises AdoptionFailed with the changes
    already made when a call fails or a lever cannot be applied."""
    auth = metadata(settings)
    changes: list[str] = []
    try:
        if plan.closures:
            async with channel(settings.incidents_address, "incidents") as ch:
                incidents: incidents_pb2_grpc.IncidentServiceAsyncStub = incidents_pb2_grpc.IncidentServiceStub(ch)
                for closure in plan.closures:
                    changes.append(await _closure(incidents, closure, auth=auth, what_if=what_if))
        for area in plan.signals:
            lights = ", ".join(area.sumo_tls_ids) or "every light"
            if area.control == pb.SIGNAL_CONTROL_ADAPTIVE:
                changes.append(f"signals {lights}: left to the optimizer's adaptive control (no switch call exists)")
            elif area.control == pb.SIGNAL_CONTROL_FIXED:
                raise AdoptionFailed(
                    f"signals {lights}: returning to fixed plans is not supported by this service yet", changes
                )
        if plan.strategy_mask.paths:
            async with channel(settings.optimizer_address, "optimizer") as ch:
                optimizer: optimizer_pb2_grpc.OptimizerServiceAsyncStub = optimizer_pb2_grpc.OptimizerServiceStub(ch)
                answer = await optimizer.SetStrategy(
                    opb.SetStrategyRequest(
                        strategy=plan.strategy,
                        update_mask=field_mask_pb2.FieldMask(paths=list(plan.strategy_mask.paths)),
                    ),
                    metadata=auth,
                    timeout=10,
                )
                changes.append(f"optimizer strategy: {', '.join(plan.strategy_mask.paths)} set ({answer.strategy})")
        if plan.events:
            raise AdoptionFailed("planned-event changes are not supported by this service yet", changes)
    except aio.AioRpcError as err:
        raise AdoptionFailed(f"{err.code().name}: {err.details()}", changes) from None
    return changes


async def _closure(
    incidents: incidents_pb2_grpc.IncidentServiceAsyncStub,
    closure: pb.Closure,
    *,
    auth: tuple[tuple[str, str], ...],
    what_if: str,
) -> str:
    impact = ipb.Impact(
        closed_lanes=list(closure.closed_lanes),
        full_closure=closure.full_closure,
        speed_limit_kmh=closure.speed_limit_kmh,
    )
    lanes = ",".join(str(lane) for lane in closure.closed_lanes) or "none"
    if closure.incident:
        incident = ipb.Incident(name=closure.incident, impact=impact)
        await incidents.UpdateIncident(
            ipb.UpdateIncidentRequest(incident=incident, update_mask=field_mask_pb2.FieldMask(paths=["impact"])),
            metadata=auth,
            timeout=10,
        )
        return f"{closure.incident}: impact set (lanes {lanes} closed, full closure {closure.full_closure})"
    reported = await incidents.ReportIncident(
        ipb.ReportIncidentRequest(
            request_id=f"{what_if}-{closure.edge_id}"[:128],
            incident=ipb.Incident(
                type=ipb.INCIDENT_TYPE_ROAD_WORKS,
                network_location=ipb.NetworkLocation(edge_id=closure.edge_id),
                impact=impact,
                notes=f"closure adopted from {what_if}",
            ),
        ),
        metadata=auth,
        timeout=10,
    )
    return f"{reported.incident.name}: new closure on {closure.edge_id} (lanes {lanes})"
