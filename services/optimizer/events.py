"""What the optimizer publishes (stream OPTIMIZER: almere.optimizer.v1.<kind>.<vehicle_id>, a Decision
each) and the streams it consumes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from almere.optimizer.v1 import decisions_pb2 as dpb
from nats.js.api import StreamConfig

from services.common.bus import stream_config
from services.common.config import Settings
from services.common.outbox import outbox_row
from services.incidents.events import incidents_stream
from services.parking.events import parking_stream
from services.signals.events import signals_stream

STREAM = "OPTIMIZER"
SUBJECT_PREFIX = "almere.optimizer.v1"
ROUTE_ADVICE = "route_advice"
PARKING_GUIDANCE = "parking_guidance"
EVENTS = (ROUTE_ADVICE, PARKING_GUIDANCE)

# Loop detectors' measurements (the street's detector stations, or the twin).
DETECTOR_STREAM = "DETECTORS"
DETECTOR_PREFIX = "almere.detectors.v1.measurement"


def optimizer_stream(settings: Settings) -> StreamConfig:
    return stream_config(STREAM, [f"{SUBJECT_PREFIX}.>"], settings)


def detectors_stream(settings: Settings) -> StreamConfig:
    return stream_config(DETECTOR_STREAM, [f"{DETECTOR_PREFIX}.>"], settings)


def consumed_streams(settings: Settings) -> list[StreamConfig]:
    """The optimizer may start before the services that own these: it creates them the same way."""
    return [parking_stream(settings), incidents_stream(settings), signals_stream(settings), detectors_stream(settings)]


def decision_event(decision: dpb.Decision, now: datetime) -> dict[str, Any]:
    kind = ROUTE_ADVICE if decision.WhichOneof("action") == "route_advice" else PARKING_GUIDANCE
    vehicle = decision.route_advice.vehicle_id or decision.parking_guidance.vehicle_id
    return outbox_row(f"{SUBJECT_PREFIX}.{kind}.{vehicle}", kind, decision, now)
