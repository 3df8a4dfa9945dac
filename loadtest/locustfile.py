"""The real user mix against a running stack, over gRPC (locust's gRPC pattern: gevent-patched gRPC
and an interceptor that reports every call as a request event).

Run through `make loadtest` (loadtest/run_loadtest.py), which starts the stack and points this file at
it with ALMERE_LOADTEST_DIR (the stack's data dir: endpoints.json and credentials.json).
"""

from __future__ import annotations

import itertools
import json
import os
import random
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import grpc.experimental.gevent as grpc_gevent
from almere.incidents.v1 import incidents_pb2 as ipb
from almere.incidents.v1 import incidents_pb2_grpc
from almere.parking.v1 import parking_pb2 as ppb
from almere.parking.v1 import parking_pb2_grpc
from almere.signals.v1 import signals_pb2 as spb
from almere.signals.v1 import signals_pb2_grpc
from almere.type.v1 import geo_pb2
from google.protobuf.timestamp_pb2 import Timestamp
from locust import User, between, events, task
from locust.env import Environment

grpc_gevent.init_gevent()

STACK = Path(os.environ.get("ALMERE_LOADTEST_DIR", "data/loadtest"))
GARAGES = [f"garage-{i:02d}" for i in range(20)]


@dataclass(kw_only=True)
class Target:
    intersection: str
    plan: spb.Plan


# The intersection the control room reads and the optimizer re-times: the default network's plaza, or
# on another network (bench_reroute_under_load.py's) its first one, re-timed from its own plan (_setup).
TARGET = Target(
    intersection="intersections/stadhuisplein",
    plan=spb.Plan(
        type=spb.PLAN_TYPE_STATIC,
        phases=[
            spb.Phase(state="GGGg", duration=50),
            spb.Phase(state="yyyy", duration=3),
            spb.Phase(state="rrrr", duration=2),
        ],
        reason="load test",
    ),
)
_sequences = itertools.count(1)


def now_ts(offset_s: float = 0) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(datetime.now(UTC) + timedelta(seconds=offset_s))
    return ts


class _Reporter(grpc.UnaryUnaryClientInterceptor, grpc.StreamUnaryClientInterceptor):  # type: ignore[misc]
    """Fires a locust request event for every call, failures included."""

    def __init__(self, environment: Environment) -> None:
        self.environment = environment

    def _timed(self, method: str, call: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        exception = None
        response = call()
        try:
            response.result()
        except grpc.RpcError as err:
            exception = err
        self.environment.events.request.fire(
            request_type="grpc",
            name=method.rsplit("/", 1)[-1],
            response_time=(time.perf_counter() - start) * 1000,
            response_length=0,
            exception=exception,
            context={},
        )
        return response

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return self._timed(details.method, lambda: continuation(details, request))

    def intercept_stream_unary(self, continuation: Any, details: Any, request_iterator: Any) -> Any:
        return self._timed(details.method, lambda: continuation(details, request_iterator))


def _stack() -> tuple[dict[str, str], dict[str, str]]:
    endpoints = json.loads((STACK / "endpoints.json").read_text())
    credentials = json.loads((STACK / "credentials.json").read_text())
    return endpoints, {caller: c["token"] for caller, c in credentials.items()}


class GrpcUser(User):  # type: ignore[misc]
    abstract = True
    caller = "engineer"

    def on_start(self) -> None:
        endpoints, tokens = _stack()
        self.metadata = (("authorization", f"Bearer {tokens[self.caller]}"),)
        reporter = _Reporter(self.environment)
        self.channels = {
            name: grpc.intercept_channel(grpc.insecure_channel(endpoints[name]), reporter)
            for name in ("parking", "incidents", "signals")
        }
        self.parking = parking_pb2_grpc.ParkingServiceStub(self.channels["parking"])
        self.incidents = incidents_pb2_grpc.IncidentServiceStub(self.channels["incidents"])
        self.signals = signals_pb2_grpc.SignalServiceStub(self.channels["signals"])

    def on_stop(self) -> None:
        for channel in self.channels.values():
            channel.close()

    def call(self, method: Callable[..., Any], request: Any) -> Any:
        try:
            return method(request, metadata=self.metadata)
        except grpc.RpcError:
            return None  # already reported as a failure by the interceptor


class GarageCounter(GrpcUser):
    """An operator's system: count reports every few seconds and gate-event batches."""

    caller = "operator"
    weight = 6
    wait_time = between(0.5, 1.5)

    @task(3)
    def report_count(self) -> None:
        garage = random.choice(GARAGES)
        self.call(
            self.parking.ReportOccupancy,
            ppb.ReportOccupancyRequest(
                facility=f"facilities/{garage}",
                occupied_spaces=random.randint(0, 400),
                source_time=now_ts(),
                sequence=next(_sequences) + int(time.time() * 1000),
            ),
        )

    @task(1)
    def gate_batch(self) -> None:
        garage = random.choice(GARAGES)

        def batches() -> Iterator[ppb.RecordGateEventsRequest]:
            events_ = [
                ppb.GateEvent(direction=random.choice([1, 2]), event_time=now_ts(), gate_id="g1") for _ in range(50)
            ]
            yield ppb.RecordGateEventsRequest(
                facility=f"facilities/{garage}", batch_id=uuid.uuid4().hex, events=events_
            )

        self.call(self.parking.RecordGateEvents, batches())


class TrafficEngineer(GrpcUser):
    """The control room: reads occupancy, incidents and intersections."""

    caller = "engineer"
    weight = 3
    wait_time = between(0.5, 2)

    @task(3)
    def occupancy(self) -> None:
        self.call(self.parking.GetOccupancy, ppb.GetOccupancyRequest(facility=f"facilities/{random.choice(GARAGES)}"))

    @task(1)
    def facilities(self) -> None:
        self.call(self.parking.ListFacilities, ppb.ListFacilitiesRequest(page_size=20))

    @task(1)
    def guidance(self) -> None:
        destination = geo_pb2.LatLng(latitude=52.3722, longitude=5.2210)
        self.call(self.parking.RecommendFacility, ppb.RecommendFacilityRequest(destination=destination))

    @task(2)
    def open_incidents(self) -> None:
        states = [ipb.INCIDENT_STATE_REPORTED, ipb.INCIDENT_STATE_ACTIVE]
        self.call(self.incidents.ListIncidents, ipb.ListIncidentsRequest(page_size=20, states=states))

    @task(1)
    def intersection(self) -> None:
        self.call(self.signals.GetIntersection, spb.GetIntersectionRequest(name=TARGET.intersection))


class PoliceOfficer(GrpcUser):
    """Reports an incident and moves it along."""

    caller = "police"
    weight = 2
    wait_time = between(1, 3)

    @task
    def collision(self) -> None:
        reply = self.call(
            self.incidents.ReportIncident,
            ipb.ReportIncidentRequest(
                request_id=uuid.uuid4().hex,
                incident=ipb.Incident(
                    type=ipb.INCIDENT_TYPE_COLLISION,
                    location=geo_pb2.LatLng(latitude=52.3742, longitude=5.2117),
                    impact=ipb.Impact(closed_lanes=[0], speed_limit_kmh=30),  # lane 0: every road has one
                ),
            ),
        )
        if reply is not None:
            request = ipb.TransitionIncidentRequest(name=reply.incident.name, state=ipb.INCIDENT_STATE_ACTIVE)
            self.call(self.incidents.TransitionIncident, request)


class Optimizer(GrpcUser):
    """Proposes signal plans (held for approval)."""

    caller = "optimizer"
    weight = 1
    wait_time = between(2, 5)

    @task
    def propose(self) -> None:
        self.call(self.signals.ProposePlan, spb.ProposePlanRequest(parent=TARGET.intersection, plan=TARGET.plan))


@events.test_start.add_listener
def _setup(environment: Environment, **_: Any) -> None:
    """Facilities for the counters and the network's intersections, created once."""
    endpoints, tokens = _stack()
    auth = (("authorization", f"Bearer {tokens['engineer']}"),)
    with grpc.insecure_channel(endpoints["parking"]) as channel:
        parking = parking_pb2_grpc.ParkingServiceStub(channel)
        for i, garage in enumerate(GARAGES):
            facility = ppb.Facility(
                display_name=garage,
                kind=ppb.FACILITY_KIND_GARAGE,
                operator_id="demo-operator",
                capacity=400,
                location=geo_pb2.LatLng(latitude=52.37 + i * 0.001, longitude=5.22),
            )
            try:
                parking.CreateFacility(ppb.CreateFacilityRequest(facility_id=garage, facility=facility), metadata=auth)
            except grpc.RpcError as err:
                if err.code() != grpc.StatusCode.ALREADY_EXISTS:
                    raise
    with grpc.insecure_channel(endpoints["signals"]) as channel:
        signals = signals_pb2_grpc.SignalServiceStub(channel)
        signals.ImportNetwork(spb.ImportNetworkRequest(), metadata=auth)
        try:
            signals.GetIntersection(spb.GetIntersectionRequest(name=TARGET.intersection), metadata=auth)
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.NOT_FOUND:
                raise
            _retime_first(signals, auth)


def _retime_first(signals: signals_pb2_grpc.SignalServiceStub, auth: tuple[tuple[str, str], ...]) -> None:
    """Another network: its first intersection, and its own plan with the first phase 5 s longer."""
    first = signals.ListIntersections(spb.ListIntersectionsRequest(page_size=1), metadata=auth).intersections[0]
    name = f"{first.name}/plans/{first.active_plan_version}"
    active = signals.GetPlan(spb.GetPlanRequest(name=name), metadata=auth).plan
    phases = [spb.Phase(state=p.state, duration=p.duration) for p in active.phases]
    phases[0].duration += 5
    TARGET.intersection = first.name
    TARGET.plan = spb.Plan(type=spb.PLAN_TYPE_STATIC, phases=phases, reason="load test")
