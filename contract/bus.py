"""The bus contract: every stream, its subject hierarchy `almere.<domain>.v1.<event>.<id>`, the event
names on it and how a stream is configured. Every publisher and consumer (services, twin, tools)
spells subjects through this module, so the names live in one place."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

log = logging.getLogger(__name__)

# Stream settings this contract owns and brings existing streams back to.
UPDATABLE_STREAM_FIELDS = ("subjects", "max_bytes", "max_age", "max_msg_size", "duplicate_window", "num_replicas")
# JetStream drops a message whose id it has stored within the duplicate window: relays may retry.
DUPLICATE_WINDOW_S = 600.0


@dataclass(frozen=True, kw_only=True)
class StreamLimits:
    """Bounds that keep a stream from growing without end (configurable per deployment)."""

    max_age_s: float
    max_bytes: int
    max_msg_bytes: int
    replicas: int = 1


DEFAULT_LIMITS = StreamLimits(max_age_s=7 * 86400.0, max_bytes=1024**3, max_msg_bytes=64 * 1024)


@dataclass(frozen=True, kw_only=True)
class Stream:
    """A JetStream stream holding every subject under `prefix`."""

    name: str
    prefix: str
    wildcard: str = ""  # what the stream holds, when narrower than everything under the prefix
    # Each message is taken by one consumer and then deleted (jobs), instead of kept for every reader.
    work_queue: bool = False
    # A state stream: the last message of each subject is kept for ever (no age limit), so a reader
    # replaying it from the start learns the current state however old.
    last_per_subject: bool = False

    @property
    def subjects(self) -> str:
        """The wildcard of every subject of the stream."""
        return self.wildcard or f"{self.prefix}.>"

    def subject(self, event: str, entity_id: str) -> str:
        return f"{self.prefix}.{event}.{entity_id}"

    def every(self, event: str) -> str:
        """The wildcard of one event for every entity."""
        return f"{self.prefix}.{event}.*"

    def event_of(self, subject: str) -> str:
        return subject[len(self.prefix) + 1 :].split(".", 1)[0]

    def config(self, limits: StreamLimits) -> StreamConfig:
        return StreamConfig(
            name=self.name,
            subjects=[self.subjects],
            retention=RetentionPolicy.WORK_QUEUE if self.work_queue else RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            discard=DiscardPolicy.OLD,
            max_age=0 if self.last_per_subject else limits.max_age_s,
            max_msgs_per_subject=1 if self.last_per_subject else -1,
            max_bytes=limits.max_bytes,
            max_msg_size=limits.max_msg_bytes,
            duplicate_window=DUPLICATE_WINDOW_S,
            num_replicas=limits.replicas,
        )


# Each event is a protobuf message from the generated `almere` package; beside each stream: its
# subjects and the message type they carry.

# PARKING: almere.parking.v1.<event>.<facility_id>; FacilityChangedEvent, OccupancyChangedEvent,
# StatusChangedEvent, ForecastUpdatedEvent (almere.parking.v1 events.proto).
PARKING = Stream(name="PARKING", prefix="almere.parking.v1")
FACILITY_CREATED = "facility_created"
FACILITY_UPDATED = "facility_updated"
OCCUPANCY_CHANGED = "occupancy_changed"
STATUS_CHANGED = "status_changed"
FORECAST_UPDATED = "forecast_updated"

# INCIDENTS: almere.incidents.v1.<event>.<incident_id>; IncidentEvent each.
INCIDENTS = Stream(name="INCIDENTS", prefix="almere.incidents.v1")
INCIDENT_REPORTED = "incident_reported"
INCIDENT_UPDATED = "incident_updated"
INCIDENT_STATE_CHANGED = "incident_state_changed"
INCIDENT_EVENTS = (INCIDENT_REPORTED, INCIDENT_UPDATED, INCIDENT_STATE_CHANGED)

# SIGNALS: almere.signals.v1.<event>.<intersection_id>; SignalEvent each.
SIGNALS = Stream(name="SIGNALS", prefix="almere.signals.v1")
PLAN_ACTIVATED = "plan_activated"
PRIORITY_DECIDED = "priority_decided"
PRIORITY_ENDED = "priority_ended"
STEPS_APPLIED = "steps_applied"  # a batch of adaptive steps at one intersection (SignalChange.steps)
SIGNAL_EVENTS = (
    "intersection_imported",
    "intersection_updated",
    "plan_created",
    "plan_proposed",
    "plan_scheduled",
    PLAN_ACTIVATED,
    "plan_rejected",
    STEPS_APPLIED,
    PRIORITY_DECIDED,
    PRIORITY_ENDED,
)

# OPTIMIZER: almere.optimizer.v1.<kind>.<vehicle_id>; a Decision each.
OPTIMIZER = Stream(name="OPTIMIZER", prefix="almere.optimizer.v1")
ROUTE_ADVICE = "route_advice"
PARKING_GUIDANCE = "parking_guidance"
DECISION_EVENTS = (ROUTE_ADVICE, PARKING_GUIDANCE)

# DETECTORS: almere.detectors.v1.measurement.<loop_id>; a Measurement each, from the street's
# detector stations or the twin.
MEASUREMENT = "measurement"
DETECTORS = Stream(name="DETECTORS", prefix="almere.detectors.v1", wildcard=f"almere.detectors.v1.{MEASUREMENT}.>")

# COUNTS: almere.counters.v1.counted.<partner>_<counter>_<direction>; a Measurement each, a partner's
# counter's count as the optimizer audience may see it (the counter service shapes it, or leaves it
# out, before publishing).
COUNTS = Stream(name="COUNTS", prefix="almere.counters.v1")
COUNTED = "counted"


# PARTNERS: almere.partners.v1.<event>.<partner_id>, PartnerChangedEvent, and
# almere.partners.v1.agreement_set.<partner_id>.<dataset>, AgreementChangedEvent (almere.partners.v1
# events.proto). A state stream: the services replay it at start to know every agreement in force.
PARTNERS = Stream(name="PARTNERS", prefix="almere.partners.v1", last_per_subject=True)
PARTNER_EVENTS = ("partner_created", "partner_updated", "partner_suspended", "partner_activated")
AGREEMENT_SET = "agreement_set"
# PARTNER_ACCESS: almere.audit.v1.partner_data_read.<partner_id>; PartnerDataRead, from every service
# serving a partner's data, read by the partner registry (the partner's audit).
PARTNER_ACCESS = Stream(name="PARTNER_ACCESS", prefix="almere.audit.v1")
PARTNER_DATA_READ = "partner_data_read"

# What-if runs (almere.whatif.v1 runs.proto). WHATIF_RUNS: almere.whatif.v1.runs.run_requested.<run_id>,
# a RunRequest each, published by the what-if service and taken by one worker each (work queue).
# WHATIF_RESULTS: almere.whatif.v1.results.run_finished.<run_id> (RunResult, from the workers) and
# almere.whatif.v1.results.observed.<what_if> (Observed, from the twin), read by the what-if service.
WHATIF_RUNS = Stream(name="WHATIF_RUNS", prefix="almere.whatif.v1.runs", work_queue=True)
RUN_REQUESTED = "run_requested"
WHATIF_RESULTS = Stream(name="WHATIF_RESULTS", prefix="almere.whatif.v1.results")
RUN_FINISHED = "run_finished"
OBSERVED = "observed"
# The twin saves its state on request (core request-reply: SaveStateRequest -> SavedState) into the
# object store bucket TWIN_STATES (JetStream stream OBJ_TWIN_STATES), where the workers read it.
TWIN_STATE_REQUEST = "almere.twin.v1.save_state"
TWIN_STATES_BUCKET = "TWIN_STATES"


async def ensure_stream(js: JetStreamContext, config: StreamConfig, *, update: bool = True) -> None:
    """Create the stream (whoever starts first), or bring an existing one to this configuration
    (`update`: only the stream's owner may, see contract.bus_access)."""
    assert config.name
    try:
        info = await js.stream_info(config.name)
    except NotFoundError:
        await js.add_stream(config)
        log.info("created stream", extra={"stream": config.name})
        return
    if update and any(getattr(info.config, f) != getattr(config, f) for f in UPDATABLE_STREAM_FIELDS):
        await js.update_stream(config)


def detector_loop_id(loop: str) -> str:
    """A detector loop's id as a subject token (SUMO ids may hold dots)."""
    return loop.replace(".", "-")
