"""A small fuzz of every unary RPC the four services offer, found by server reflection: each caller
role, a forged token and no token send seeded, well-formed random requests. Whatever a request
holds, the answer is a considered status (never INTERNAL, UNKNOWN or a hang), callers without a
valid token are turned away, and every service still answers its health check afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import random
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from almere.incidents.v1 import incidents_pb2 as ipb
from almere.parking.v1 import parking_pb2 as ppb
from almere.partners.v1 import partners_pb2 as prt
from almere.signals.v1 import signals_pb2 as spb
from google.protobuf import descriptor_pool, text_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from apps.role_table import rules
from services.common.auth import Role
from services.common.runtime import ServiceSpec
from services.incidents.service import SPEC as INCIDENTS_SPEC
from services.optimizer.service import SPEC as OPTIMIZER_SPEC
from services.parking.service import SPEC as PARKING_SPEC
from services.partners.service import SPEC as PARTNERS_SPEC
from services.signals.service import SPEC as SIGNALS_SPEC
from tests.conftest import ROLES
from tests.integration.helpers import facility, ts

FUZZ_CALLS = 8  # random requests per method and caller: bounds the whole run (~40 methods x 10 callers)
SEED = 2212
CALL_TIMEOUT_S = 5.0
MAX_DEPTH = 3  # nested messages deeper than this stay unset
SEEN_PER_KIND = 50  # values kept per field (and messages per type) to borrow from
BROKEN = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED}
STANDARD = {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"}
PLAZA = "intersections/stadhuisplein"
PARKING, INCIDENTS, SIGNALS, PARTNERS = (
    spec.full_names[0] for spec in (PARKING_SPEC, INCIDENTS_SPEC, SIGNALS_SPEC, PARTNERS_SPEC)
)

T = FieldDescriptor
STRINGS = [
    "",
    " ",
    "x",
    "abc",
    "op-a",
    "op-b",
    "facilities/xyz",
    "facilities/",
    "incidents/abc",
    "plannedEvents/abc",
    "intersections/nope",
    f"{PLAZA}/plans/99",
    f"{PLAZA}/priorities/abc",
    "a/b/c/d",
    "/",
    "..",
    "has.dots",
    "UPPER_case-id",
    "Ünïcødé straße ✓",
    "🚦🚗",
    "日本語",
    "\x00",
    "' OR 1=1 --",
    "%s%n{0}",
    "-1",
    "1e309",
    "Europe/Amsterdam",
    "Mars/Olympus",
    "07:00",
    "25:61",
    "GGrr",
    "x" * 300,
]
BYTES = [b"", b"\x00\xff", b"<net/>", b"<?xml version='1.0'?><net><tlLogic id='a'/></net>", b"not xml at all"]
INT32 = [0, 1, -1, 2, 7, 100, 2**31 - 1, -(2**31)]
INT64 = [*INT32, 2**63 - 1, -(2**63)]
UINT32 = [0, 1, 2, 100, 2**32 - 1]
UINT64 = [*UINT32, 2**64 - 1]
DOUBLES = [0.0, -1.0, 0.5, 1.0, 52.37, 5.22, 90.0, -180.0, 1e308, -1e-300, math.nan, math.inf, -math.inf]
TIMESTAMP_BOUNDS = [-62135596800, 0, 1, 253402300799]  # 0001-01-01 .. 9999-12-31, the valid range
DURATIONS = [0, 1, 60, 900, 3600, 86400, -60]
DURATION_EDGES = [315576000000, -315576000000, 10**9]  # +-10,000 years (the valid range), ~32 years


@dataclass(frozen=True, kw_only=True)
class Rpc:
    path: str
    request: type[Message]
    response: type[Message]
    streaming: bool


def reflect(address: str) -> tuple[list[str], list[Rpc]]:
    """The services and methods a running server lists through reflection (blocking: run in a thread)."""
    with grpc.insecure_channel(address) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        pool = descriptor_pool.DescriptorPool(database)
        names = sorted(database.get_services())
        rpcs = [
            Rpc(
                path=f"/{name}/{method.name}",
                request=GetMessageClass(method.input_type),
                response=GetMessageClass(method.output_type),
                streaming=method.client_streaming or method.server_streaming,
            )
            for name in names
            if name not in STANDARD
            for method in pool.FindServiceByName(name).methods
        ]
    return names, rpcs


def _key(f: FieldDescriptor) -> tuple[str, int, str]:
    return f.name, f.type, f.enum_type.full_name if f.enum_type else ""


def _is_map(f: FieldDescriptor) -> bool:
    return f.type == T.TYPE_MESSAGE and f.message_type.GetOptions().map_entry


def _stem(name: str) -> str:
    return name.removesuffix("s")


@dataclass
class Seen:
    """Values taken from real objects (seed requests, answers): scalars by field, messages by type,
    resource names by resource type."""

    scalars: dict[tuple[str, int, str], list[Any]] = field(default_factory=lambda: defaultdict(list))
    strings: list[str] = field(default_factory=list)
    messages: dict[str, list[bytes]] = field(default_factory=lambda: defaultdict(list))
    names: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    _like: dict[str, list[Any]] = field(default_factory=dict)

    def learn(self, message: Message) -> None:
        def add(values: list[Any], value: Any) -> None:
            if value not in values and len(values) < SEEN_PER_KIND:
                values.append(value)
                self._like.clear()

        add(self.messages[message.DESCRIPTOR.full_name], message.SerializeToString())
        for f, value in message.ListFields():
            if _is_map(f):
                continue
            for item in list(value) if f.is_repeated else [value]:
                if f.type == T.TYPE_MESSAGE:
                    self.learn(item)
                    continue
                add(self.scalars[_key(f)], item)
                if f.type == T.TYPE_STRING and 0 < len(item) < 100:
                    add(self.strings, item)
                    if f.name == "name":
                        add(self.names[message.DESCRIPTOR.name], item)

    def like(self, f: FieldDescriptor) -> list[Any]:
        """Seen values for fields like `f`: a resource's names for a request about that resource
        (GetIncidentRequest.name ~ Incident.name), else fields of its type whose name it is or ends
        with (origin_edge_id ~ edge_id, destination_edge_ids ~ edge_id)."""
        if f.full_name not in self._like:
            named = [n for kind, names in self.names.items() if kind in f.containing_type.name for n in names]
            stem = _stem(f.name)
            self._like[f.full_name] = (
                named
                if f.name == "name" and named
                else [
                    value
                    for (name, kind, enum), values in self.scalars.items()
                    if (kind, enum) == _key(f)[1:] and (_stem(name) == stem or stem.endswith(f"_{_stem(name)}"))
                    for value in values
                ]
            )
        return self._like[f.full_name]


@dataclass
class Requests:
    """Random well-formed messages built from their descriptors, now and then from seen values."""

    rng: random.Random
    seen: Seen
    now: int = field(default_factory=lambda: int(time.time()))

    realistic: bool = False  # this request leans on seen values and leaves more fields unset

    def make(self, cls: type[Message]) -> Message:
        self.realistic = self.rng.random() < 0.4
        message = cls()
        self._sub(message, 0, parent=message.DESCRIPTOR)
        return message

    def _fill(self, message: Message, depth: int) -> None:
        desc = message.DESCRIPTOR
        chosen = {oneof.name: self.rng.choice(oneof.fields) for oneof in desc.oneofs}
        for f in desc.fields:
            if f.containing_oneof is not None and chosen[f.containing_oneof.name] is not f:
                continue
            if self.rng.random() < (0.6 if self.realistic else 0.3):
                continue
            self._set(message, f, depth)

    def _set(self, message: Message, f: FieldDescriptor, depth: int) -> None:
        if f.type == T.TYPE_MESSAGE and depth >= MAX_DEPTH:
            return
        container = getattr(message, f.name)
        if _is_map(f):
            key, value = f.message_type.fields_by_name["key"], f.message_type.fields_by_name["value"]
            for _ in range(self.rng.randint(0, 3)):
                k = self._scalar(key)
                if value.type == T.TYPE_MESSAGE:
                    self._sub(container[k], depth + 1, parent=message.DESCRIPTOR)
                else:
                    container[k] = self._scalar(value)
        elif f.is_repeated:
            for _ in range(self.rng.randint(0, 3)):
                if f.type == T.TYPE_MESSAGE:
                    self._sub(container.add(), depth + 1, parent=message.DESCRIPTOR)
                else:
                    container.append(self._scalar(f))
        elif f.type == T.TYPE_MESSAGE:
            container.SetInParent()
            self._sub(container, depth + 1, parent=message.DESCRIPTOR)
        else:
            setattr(message, f.name, self._scalar(f))

    def _sub(self, message: Message, depth: int, *, parent: Descriptor) -> None:
        name = message.DESCRIPTOR.full_name
        rng = self.rng
        if name == "google.protobuf.Timestamp":
            within = rng.choice([3600, 86400, 30 * 86400])
            near = self.now + rng.randint(-within, within)
            message.seconds = near if rng.random() < 0.75 else rng.choice(TIMESTAMP_BOUNDS)  # type: ignore[attr-defined]
            message.nanos = rng.randint(0, 999_999_999)  # type: ignore[attr-defined]
        elif name == "google.protobuf.Duration":
            seconds = rng.choice(DURATIONS if rng.random() < 0.6 else DURATION_EDGES)
            message.seconds = seconds  # type: ignore[attr-defined]
            message.nanos = rng.randint(0, 999_999_999) * (-1 if seconds < 0 else 1)  # type: ignore[attr-defined]
        elif name == "google.protobuf.FieldMask":
            # Paths of the request's resource (its other message fields), and some that are not.
            paths = [
                f"{inner.name}" if rng.random() < 0.8 else f"{inner.name}.{rng.choice(STRINGS[:4])}"
                for f in parent.fields
                if f.type == T.TYPE_MESSAGE and f.message_type.full_name != name
                for inner in f.message_type.fields
            ] + ["no_such_field", "", "name"]
            message.paths.extend(rng.sample(paths, min(len(paths), rng.randint(0, 3))))  # type: ignore[attr-defined]
        elif self.seen.messages.get(name) and rng.random() < (0.7 if self.realistic else 0.2):
            # A real object, a field or two changed: reaches past the lookups into the logic.
            message.ParseFromString(rng.choice(self.seen.messages[name]))
            changed = rng.randint(0, 1) if self.realistic else 2
            for f in rng.sample(list(message.DESCRIPTOR.fields), min(changed, len(message.DESCRIPTOR.fields))):
                message.ClearField(f.name)
                self._set(message, f, depth)
        else:
            self._fill(message, depth)

    def _scalar(self, f: FieldDescriptor) -> Any:
        rng = self.rng
        seen = self.seen.like(f)
        if seen and rng.random() < (0.8 if self.realistic else 0.3):
            return rng.choice(seen)
        if f.type == T.TYPE_STRING:
            return rng.choice(self.seen.strings) if self.seen.strings and rng.random() < 0.3 else rng.choice(STRINGS)
        if f.type == T.TYPE_BYTES:
            return rng.choice(BYTES) if rng.random() < 0.8 else rng.randbytes(rng.randint(1, 64))
        if f.type == T.TYPE_BOOL:
            return rng.random() < 0.5
        if f.type == T.TYPE_ENUM:
            return rng.choice(f.enum_type.values).number
        if f.type in (T.TYPE_DOUBLE, T.TYPE_FLOAT):
            return rng.choice(DOUBLES) if rng.random() < 0.6 else rng.uniform(-200, 200)
        bits = 64 if f.type in (T.TYPE_INT64, T.TYPE_SINT64, T.TYPE_SFIXED64, T.TYPE_UINT64, T.TYPE_FIXED64) else 32
        unsigned = f.type in (T.TYPE_UINT32, T.TYPE_FIXED32, T.TYPE_UINT64, T.TYPE_FIXED64)
        if rng.random() < 0.4:
            return rng.randint(0 if unsigned else -1000, 1000)
        return rng.choice(
            {(32, False): INT32, (64, False): INT64, (32, True): UINT32, (64, True): UINT64}[bits, unsigned]
        )


@dataclass(frozen=True, kw_only=True)
class Stack:
    """The four services running: each one's address and the reflected methods it serves."""

    addresses: dict[str, str]  # gRPC service full name -> address
    rpcs: dict[str, list[Rpc]]  # address -> its application methods
    reflected: dict[str, list[str]]  # address -> service names listed by reflection


@pytest.fixture
async def stack(
    incidents: str,
    signals: str,
    start_service: Callable[..., Awaitable[str]],
    network_file: Path,
    tokens: dict[str, str],
) -> Stack:
    """The services, wired to each other as deployed (the partner registry beside them): the
    optimizer proposes signal steps to the signal service, parking asks the optimizer for travel
    times."""
    optimizer = await start_service(
        OPTIMIZER_SPEC, network_file=network_file, signals_address=signals, service_token=tokens["optimizer"]
    )
    parking = await start_service(PARKING_SPEC, optimizer_address=optimizer, service_token=tokens["parking_service"])
    specs: list[tuple[ServiceSpec, str]] = [
        (PARKING_SPEC, parking),
        (INCIDENTS_SPEC, incidents),
        (SIGNALS_SPEC, signals),
        (OPTIMIZER_SPEC, optimizer),
        (PARTNERS_SPEC, await start_service(PARTNERS_SPEC)),
    ]
    rpcs, reflected = {}, {}
    for _, address in specs:
        reflected[address], rpcs[address] = await asyncio.to_thread(reflect, address)
    addresses = {name: address for spec, address in specs for name in spec.full_names}
    return Stack(addresses=addresses, rpcs=rpcs, reflected=reflected)


async def _seed(stack: Stack, tokens: dict[str, str], network_file: Path) -> Seen:
    """Real objects in every service (a facility and its occupancy, an incident, a planned event, an
    imported network, plans, a priority), then every argument-free Get/List answer: requests and
    answers both give the fuzz values to borrow."""
    seen = Seen()
    now = datetime.now(UTC)
    closure = ipb.ScheduledClosure(
        title="Grote Markt closed",
        network_location=ipb.NetworkLocation(edge_id="spoke-e-in"),
        impact=ipb.Impact(
            full_closure=True,
            expected_start_time=ts(now + timedelta(days=1)),
            expected_end_time=ts(now + timedelta(days=1, hours=8)),
        ),
    )
    retimed = spb.Plan(
        type=spb.PLAN_TYPE_STATIC, phases=[spb.Phase(state="GGGg", duration=50), spb.Phase(state="yyyy", duration=3)]
    )
    priority = spb.Priority(
        priority_class=spb.PRIORITY_CLASS_EMERGENCY,
        vehicle_id="ambulance-7",
        approach_edge_id="spoke-w-in",
        eta=ts(now + timedelta(seconds=30)),
    )
    seeds: list[tuple[str, str, str, Message]] = [
        (
            PARKING,
            "engineer",
            "CreateFacility",
            ppb.CreateFacilityRequest(facility_id="garage-seed", facility=facility(entrance_edge_ids=["spoke-w-in"])),
        ),
        (
            PARKING,
            "operator",
            "ReportOccupancy",
            ppb.ReportOccupancyRequest(
                facility="facilities/garage-seed", occupied_spaces=40, source_time=ts(now), sequence=1
            ),
        ),
        (
            INCIDENTS,
            "police",
            "ReportIncident",
            ipb.ReportIncidentRequest(
                request_id="seed-1",
                incident=ipb.Incident(
                    type=ipb.INCIDENT_TYPE_COLLISION,
                    title="Collision",
                    network_location=ipb.NetworkLocation(edge_id="spoke-e-in"),
                ),
            ),
        ),
        (
            INCIDENTS,
            "police",
            "CreatePlannedEvent",
            ipb.CreatePlannedEventRequest(
                planned_event_id="market", planned_event=ipb.PlannedEvent(display_name="Market", closures=[closure])
            ),
        ),
        (
            SIGNALS,
            "engineer",
            "ImportNetwork",
            spb.ImportNetworkRequest(net_xml=await asyncio.to_thread(network_file.read_bytes)),
        ),
        (SIGNALS, "engineer", "CreatePlan", spb.CreatePlanRequest(parent=PLAZA, plan=retimed)),
        (SIGNALS, "optimizer", "ProposePlan", spb.ProposePlanRequest(parent=PLAZA, plan=retimed)),
        (SIGNALS, "ems", "RequestPriority", spb.RequestPriorityRequest(parent=PLAZA, priority=priority)),
        (
            PARTNERS,
            "engineer",
            "CreatePartner",
            prt.CreatePartnerRequest(
                partner_id="firm-a",
                partner=prt.Partner(display_name="Firm A", kind=prt.PARTNER_KIND_SECURITY_FIRM),
            ),
        ),
        (
            PARTNERS,
            "partner",
            "SetAgreement",
            prt.SetAgreementRequest(
                name="partners/firm-a/agreements/incident-reports",
                agreement=prt.Agreement(
                    audiences=[prt.AudienceTerms(audience=prt.AUDIENCE_PUBLIC_SAFETY, detail=prt.DETAIL_RAW)],
                    retention_days=30,
                    purposes=["public-safety"],
                ),
            ),
        ),
    ]
    rpcs = {rpc.path: (address, rpc) for address, listed in stack.rpcs.items() for rpc in listed if not rpc.streaming}
    for service, caller, method, request in seeds:
        address, rpc = rpcs[f"/{service}/{method}"]
        seen.learn(request)
        seen.learn(await _call(address, rpc, rpc.request.FromString(request.SerializeToString()), tokens[caller]))
    for address, rpc in rpcs.values():
        if rpc.path.rsplit("/", 1)[1].startswith(("Get", "List")):
            with contextlib.suppress(grpc.aio.AioRpcError):  # it needs arguments: the fuzz finds out
                seen.learn(await _call(address, rpc, rpc.request(), tokens["engineer"]))
    return seen


async def _call(address: str, rpc: Rpc, request: Message, token: str) -> Message:
    async with grpc.aio.insecure_channel(address) as channel:
        call = channel.unary_unary(
            rpc.path, request_serializer=rpc.request.SerializeToString, response_deserializer=rpc.response.FromString
        )
        return await call(request, metadata=(("authorization", f"Bearer {token}"),), timeout=CALL_TIMEOUT_S)


def _callers(tokens: dict[str, str]) -> list[tuple[str, tuple[tuple[str, str], ...]]]:
    return [
        *((role, (("authorization", f"Bearer {tokens[role]}"),)) for role in ROLES),
        ("<no token>", ()),
        ("<forged token>", (("authorization", "Bearer not-a-token-anyone-was-given"),)),
    ]


def _tracebacks(records: list[logging.LogRecord]) -> str:
    formatter = logging.Formatter()
    return "\n".join(
        f"{r.name}: {r.getMessage()}\n{formatter.formatException(r.exc_info)}" for r in records if r.exc_info
    )


async def _fuzz(stack: Stack, seen: Seen, tokens: dict[str, str], caplog: pytest.LogCaptureFixture) -> list[str]:
    """FUZZ_CALLS random requests to every unary method from every caller; what went wrong, readably."""
    requests = Requests(random.Random(SEED), seen)
    access = rules()
    failures: list[str] = []
    for address, rpcs in stack.rpcs.items():
        async with grpc.aio.insecure_channel(address) as channel:
            for rpc in (r for r in rpcs if not r.streaming):
                call = channel.unary_unary(
                    rpc.path,
                    request_serializer=rpc.request.SerializeToString,
                    response_deserializer=rpc.response.FromString,
                )
                # What a change answers (a new incident, a plan) is borrowed by later requests.
                learns = not rpc.path.rsplit("/", 1)[1].startswith(("Get", "List"))
                rule = access[rpc.path.rsplit(".", 1)[1].replace("/", ".")]
                for (caller, metadata), _ in itertools.product(_callers(tokens), range(FUZZ_CALLS)):
                    request = requests.make(rpc.request)
                    logged = len(caplog.records)
                    try:
                        answer = await call(request, metadata=metadata, timeout=CALL_TIMEOUT_S)
                        code, details = grpc.StatusCode.OK, ""
                        if learns:
                            seen.learn(answer)
                    except grpc.aio.AioRpcError as err:
                        code, details = err.code(), err.details() or ""
                    if caller not in ROLES:
                        bad = code != grpc.StatusCode.UNAUTHENTICATED
                    elif rule is not None and Role(ROLES[caller].split(":")[0]) not in rule.roles:
                        bad = code != grpc.StatusCode.PERMISSION_DENIED  # docs/roles.md leaves it blank
                    else:
                        bad = code in BROKEN or code == grpc.StatusCode.UNAUTHENTICATED
                    if bad:
                        failures.append(
                            f"{rpc.path} as {caller}: {code.name} {details!r}\n"
                            f"request:\n{text_format.MessageToString(request, as_utf8=True) or '<empty>'}\n"
                            f"{_tracebacks(caplog.records[logged:])}"
                        )
    return failures


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_every_unary_rpc_answers_random_requests_from_every_caller_with_a_considered_status(
    stack: Stack, tokens: dict[str, str], network_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for address, names in stack.reflected.items():
        served = {name for name, at in stack.addresses.items() if at == address}
        assert set(names) == served | STANDARD, f"reflection at {address} lists {names}"
        for name in served:
            generated = descriptor_pool.Default().FindServiceByName(name)
            reflected = [rpc.path.rsplit("/", 1)[1] for rpc in stack.rpcs[address] if rpc.path.startswith(f"/{name}/")]
            assert reflected == [m.name for m in generated.methods], f"{name}: reflection and the contract differ"
    unary = [rpc for rpcs in stack.rpcs.values() for rpc in rpcs if not rpc.streaming]
    assert len(unary) >= 40

    seen = await _seed(stack, tokens, network_file)
    failures = await _fuzz(stack, seen, tokens, caplog)

    for name, address in stack.addresses.items():
        async with grpc.aio.insecure_channel(address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for service in ("", name):
                reply = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=CALL_TIMEOUT_S)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING, f"{name} stopped serving"
    assert not failures, f"{len(failures)} bad answers; the first:\n\n" + "\n\n".join(failures[:20])
