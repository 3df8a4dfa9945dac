"""The signal service's events (stream SIGNALS, see contract.bus), built as outbox rows."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from almere.signals.v1 import events_pb2
from almere.signals.v1 import signals_pb2 as pb

from contract.bus import SIGNAL_EVENTS, SIGNALS
from services.common.clock import to_timestamp
from services.common.outbox import outbox_row


def signal_event(
    *,
    event: str,
    intersection: pb.Intersection,
    actor: str,
    now: datetime,
    reason: str = "",
    plan: pb.Plan | None = None,
    priority: pb.Priority | None = None,
    steps: Sequence[pb.Step] = (),
) -> dict[str, Any]:
    assert event in SIGNAL_EVENTS
    intersection_id = intersection.name.removeprefix("intersections/")
    change = pb.SignalChange(
        intersection=intersection.name,
        event=event,
        version=intersection.version,
        occur_time=to_timestamp(now),
        plan=plan,
        priority=priority,
        actor=actor,
        steps=steps,
        reason=reason,
    )
    if steps:  # frequent and not a change of the intersection itself: only who it is, not its links
        intersection = pb.Intersection(
            name=intersection.name, sumo_tls_id=intersection.sumo_tls_id, version=intersection.version
        )
    message = events_pb2.SignalEvent(intersection_id=intersection_id, change=change, intersection=intersection)
    return outbox_row(subject=SIGNALS.subject(event, intersection_id), event_type=event, message=message, now=now)
