"""What the signal service publishes: stream SIGNALS, subjects almere.signals.v1.<event>.<intersection_id>."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from almere.signals.v1 import events_pb2
from almere.signals.v1 import signals_pb2 as pb
from nats.js.api import StreamConfig

from services.common.bus import stream_config
from services.common.clock import to_timestamp
from services.common.config import Settings
from services.common.outbox import outbox_row

STREAM = "SIGNALS"
SUBJECT_PREFIX = "almere.signals.v1"
EVENTS = (
    "intersection_imported",
    "intersection_updated",
    "plan_created",
    "plan_proposed",
    "plan_scheduled",
    "plan_activated",
    "plan_rejected",
    "priority_decided",
    "priority_ended",
)


def signals_stream(settings: Settings) -> StreamConfig:
    return stream_config(STREAM, [f"{SUBJECT_PREFIX}.>"], settings)


def signal_event(
    event: str,
    intersection: pb.Intersection,
    actor: str,
    now: datetime,
    plan: pb.Plan | None = None,
    priority: pb.Priority | None = None,
) -> dict[str, Any]:
    assert event in EVENTS
    intersection_id = intersection.name.removeprefix("intersections/")
    change = pb.SignalChange(
        intersection=intersection.name,
        event=event,
        version=intersection.version,
        occur_time=to_timestamp(now),
        plan=plan,
        priority=priority,
        actor=actor,
    )
    message = events_pb2.SignalEvent(intersection_id=intersection_id, change=change, intersection=intersection)
    return outbox_row(f"{SUBJECT_PREFIX}.{event}.{intersection_id}", event, message, now)
