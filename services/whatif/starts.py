"""Where "now" comes from: the twin's saved state (request-reply on the bus) or the live picture
the services hold (over gRPC, with this service's own token)."""

from __future__ import annotations

import logging

from almere.detectors.v1 import detectors_pb2
from almere.incidents.v1 import incidents_pb2 as ipb
from almere.incidents.v1 import incidents_pb2_grpc
from almere.optimizer.v1 import optimizer_pb2 as opb
from almere.optimizer.v1 import optimizer_pb2_grpc
from almere.parking.v1 import parking_pb2 as ppb
from almere.parking.v1 import parking_pb2_grpc
from almere.signals.v1 import signals_pb2 as spb
from almere.signals.v1 import signals_pb2_grpc
from almere.whatif.v1 import runs_pb2
from almere.whatif.v1 import whatif_pb2 as pb
from grpc import aio
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from contract.bus import DETECTORS, TWIN_STATE_REQUEST
from services.common.auth import PURPOSE_METADATA, TRAFFIC_MANAGEMENT
from services.common.bus import Bus
from services.common.clock import from_timestamp, to_timestamp, utcnow
from services.common.config import Settings
from services.common.errors import FailedPrecondition

log = logging.getLogger(__name__)

IN_FORCE = (ipb.INCIDENT_STATE_CONFIRMED, ipb.INCIDENT_STATE_ACTIVE, ipb.INCIDENT_STATE_CLEARING)


async def twin_state(bus: Bus, *, what_if: str, horizon_seconds: float, wait_seconds: float) -> runs_pb2.SavedState:
    request = runs_pb2.SaveStateRequest(what_if=what_if, horizon_seconds=horizon_seconds)
    try:
        reply = await bus.nc.request(TWIN_STATE_REQUEST, request.SerializeToString(), timeout=wait_seconds)
    except (NatsTimeout, NoRespondersError, TimeoutError):
        raise FailedPrecondition(
            f"no twin answered the save-state request within {wait_seconds:g} s; start from START_SOURCE_LIVE_PICTURE"
        ) from None
    saved = runs_pb2.SavedState.FromString(reply.data)
    if saved.error:
        raise FailedPrecondition(f"the twin could not save its state: {saved.error}")
    return saved


def metadata(settings: Settings) -> tuple[tuple[str, str], ...]:
    """The service's own token, reading for traffic management (what partners' agreements ask)."""
    if not settings.service_token:
        return ()
    return (("authorization", f"Bearer {settings.service_token}"), (PURPOSE_METADATA, TRAFFIC_MANAGEMENT))


def channel(address: str | None, what: str) -> aio.Channel:
    if not address:
        raise FailedPrecondition(f"the {what} service's address is not configured (ALMERE_{what.upper()}_ADDRESS)")
    return aio.insecure_channel(address)


async def live_picture(settings: Settings, *, saved: runs_pb2.SavedState | None) -> runs_pb2.LivePicture:
    """Occupancy (parking), incidents in force as closures (incidents) and the lights under
    adaptive control (signals), from each service whose address is configured; the sim time from
    the twin's saved state when there is one."""
    auth = metadata(settings)
    picture = runs_pb2.LivePicture(scenario=settings.whatif_scenario)
    picture.capture_time.CopyFrom(to_timestamp(utcnow()))
    if saved is not None:
        picture.scenario = saved.scenario
        picture.sim_time_seconds = saved.sim_time_seconds
    now = utcnow()
    try:
        if settings.parking_address:
            async with channel(settings.parking_address, "parking") as ch:
                parking: parking_pb2_grpc.ParkingServiceAsyncStub = parking_pb2_grpc.ParkingServiceStub(ch)
                token = ""
                while True:
                    page = await parking.ListFacilities(
                        ppb.ListFacilitiesRequest(page_size=1000, page_token=token), metadata=auth, timeout=10
                    )
                    for f in page.facilities:
                        picture.facilities.add(
                            facility_id=f.name.removeprefix("facilities/"),
                            occupied=f.occupancy.occupied_spaces,
                            capacity=f.capacity,
                        )
                    token = page.next_page_token
                    if not token:
                        break
        if settings.incidents_address:
            async with channel(settings.incidents_address, "incidents") as ch:
                incidents: incidents_pb2_grpc.IncidentServiceAsyncStub = incidents_pb2_grpc.IncidentServiceStub(ch)
                token = ""
                while True:
                    listed = await incidents.ListIncidents(
                        ipb.ListIncidentsRequest(page_size=1000, page_token=token, states=IN_FORCE),
                        metadata=auth,
                        timeout=10,
                    )
                    for incident in listed.incidents:
                        closure = closure_of(incident, now_seconds=now.timestamp())
                        if closure is not None:
                            picture.closures.append(closure)
                    token = listed.next_page_token
                    if not token:
                        break
        if settings.signals_address:
            async with channel(settings.signals_address, "signals") as ch:
                picture.adaptive_tls_ids.extend(await _adaptive(signals_pb2_grpc.SignalServiceStub(ch), auth))
    except aio.AioRpcError as err:
        raise FailedPrecondition(f"the live picture could not be gathered: {err.code().name} {err.details()}") from None
    return picture


async def strategy_in_force(settings: Settings) -> opb.Strategy | None:
    """The optimizer's strategy now (None when no optimizer is configured or it does not answer: the
    runs then assume its default)."""
    if not settings.optimizer_address:
        return None
    try:
        async with channel(settings.optimizer_address, "optimizer") as ch:
            optimizer: optimizer_pb2_grpc.OptimizerServiceAsyncStub = optimizer_pb2_grpc.OptimizerServiceStub(ch)
            reply = await optimizer.GetStrategy(opb.GetStrategyRequest(), metadata=metadata(settings), timeout=10)
    except aio.AioRpcError as err:
        log.warning("the optimizer's strategy is unknown: %s %s", err.code().name, err.details())
        return None
    return reply.strategy


async def _adaptive(signals: signals_pb2_grpc.SignalServiceAsyncStub, auth: tuple[tuple[str, str], ...]) -> list[str]:
    """The lights whose active plan is an adaptive step (the optimizer's takeover)."""
    adaptive: list[str] = []
    token = ""
    while True:
        page = await signals.ListIntersections(
            spb.ListIntersectionsRequest(page_size=1000, page_token=token), metadata=auth, timeout=10
        )
        for intersection in page.intersections:
            if not intersection.active_plan_version:
                continue
            name = f"{intersection.name}/plans/{intersection.active_plan_version}"
            active = await signals.GetPlan(spb.GetPlanRequest(name=name), metadata=auth, timeout=10)
            if active.plan.type == spb.PLAN_TYPE_ADAPTIVE:
                adaptive.append(intersection.sumo_tls_id)
        token = page.next_page_token
        if not token:
            return adaptive


def closure_of(incident: ipb.Incident, *, now_seconds: float) -> pb.Closure | None:
    edge = incident.network_location.edge_id
    impact = incident.impact
    if not edge or not (impact.closed_lanes or impact.full_closure or impact.speed_limit_kmh):
        return None
    end = 0.0
    if impact.HasField("expected_end_time"):
        end = max(0.0, from_timestamp(impact.expected_end_time).timestamp() - now_seconds)
    return pb.Closure(
        incident=incident.name,
        edge_id=edge,
        closed_lanes=list(impact.closed_lanes),
        full_closure=impact.full_closure,
        speed_limit_kmh=impact.speed_limit_kmh,
        expected_end_seconds=end,
    )


DETECTOR_FETCH = 1000


async def detectors(bus: Bus, picture: runs_pb2.LivePicture) -> float:
    """Adds each loop's last measurement (DETECTORS, last message per subject, an ephemeral
    consumer) to the picture; returns the latest interval end as seconds since midnight UTC (the
    picture's sim time when no twin state was taken), 0 when no loop has reported."""
    config = ConsumerConfig(
        deliver_policy=DeliverPolicy.LAST_PER_SUBJECT, ack_policy=AckPolicy.NONE, inactive_threshold=30.0
    )
    latest = None
    try:
        subscription = await bus.js.pull_subscribe(DETECTORS.subjects, stream=DETECTORS.name, config=config)
    except Exception as exc:  # no stream yet, or not permitted: a picture without detectors
        raise FailedPrecondition(f"the detectors' measurements could not be read: {exc}") from None
    try:
        while True:
            try:
                messages = await subscription.fetch(DETECTOR_FETCH, timeout=0.5)
            except (NatsTimeout, TimeoutError):
                break
            for message in messages:
                m = detectors_pb2.Measurement.FromString(message.data)
                picture.detectors.add(
                    detector_id=m.detector_id,
                    edge_id=m.edge_id,
                    lane_index=m.lane_index,
                    interval_seconds=(m.interval_end.ToNanoseconds() - m.interval_start.ToNanoseconds()) / 1e9,
                    vehicle_count=m.vehicle_count,
                    mean_speed_mps=m.mean_speed_mps,
                    occupancy_percent=m.occupancy_percent,
                )
                end = from_timestamp(m.interval_end)
                latest = end if latest is None or end > latest else latest
            if not messages or messages[-1].metadata.num_pending == 0:
                break
    finally:
        await subscription.unsubscribe()
    if latest is None:
        return 0.0
    midnight = latest.replace(hour=0, minute=0, second=0, microsecond=0)
    return (latest - midnight).total_seconds()
