"""The optimizer's decisions (stream OPTIMIZER, see contract.bus), built as outbox rows."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from almere.optimizer.v1 import decisions_pb2 as dpb

from contract.bus import OPTIMIZER, PARKING_GUIDANCE, ROUTE_ADVICE
from services.common.outbox import outbox_row


def decision_event(decision: dpb.Decision, now: datetime) -> dict[str, Any]:
    kind = ROUTE_ADVICE if decision.WhichOneof("action") == "route_advice" else PARKING_GUIDANCE
    vehicle = decision.route_advice.vehicle_id or decision.parking_guidance.vehicle_id
    return outbox_row(subject=OPTIMIZER.subject(kind, vehicle), event_type=kind, message=decision, now=now)
