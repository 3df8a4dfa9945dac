"""Throughput of the parking service's write path, measured against a bare gRPC server.

What is measured
----------------
1. ``ReportOccupancy`` (unary): for each concurrency level N, a load client in its own process keeps N
   calls in flight for ``--duration`` seconds (after ~1 s of warm-up). Caller i reports counts for
   its own facility with increasing sequence numbers and ``source_time = now``, so every report is
   new and must come back ``REPORT_OUTCOME_ACCEPTED``; any other outcome or status is an error. The
   client records calls/s and per-call latency (p50, p99) of the calls completed in the window.
   The same client runs, back to back at the same level, against
   - an *echo* server: a bare ``grpc.aio`` server (this file run with ``--echo-server PORT``) that
     implements the same ``ParkingService.ReportOccupancy`` method and returns an empty
     ``ReportOccupancyResponse`` (no interceptors, no auth, no database, no NATS), and
   - the *real* parking service (``python -m apps.cli serve parking``): auth and observability
     interceptors, validation, a durable SQLite file database (WAL, ``synchronous=FULL``; or the
     PostgreSQL of ``--database-url``, in a schema of its own) written through the group committer,
     occupancy samples and a transactional outbox relayed to JetStream on a real nats-server, with
     ``--processes`` serving processes on its port (``ALMERE_SERVE_PROCESSES``; more than one adds a
     relay process). It logs at WARNING, so the per-call access log is off.
   Also shown: the server's CPU time per call (from /proc, all of its processes), and the outbox rows
   still waiting for JetStream after each parking run; the next run starts only once the relay has
   drained them.
2. ``RecordGateEvents`` (client streaming): four callers, one facility each, send streams of up to 20
   batches of 1,000 gate events (alternating ENTRY/EXIT, unique batch ids), one stream after the other,
   for ~5 s (``--gate-duration``); events/s and batches/s count what the server acknowledged.

Why the echo server is the baseline
-----------------------------------
On a small machine Python gRPC itself is the ceiling: a bare unary server manages only a few thousand
calls/s, and absolute numbers drift by +-50 % between runs on shared hosts. The echo
server pays the same transport, HTTP/2 and request-parsing cost as the service, over the same client,
with the same request messages, on the same cores, measured minutes apart in the same run. The ratio
parking/echo therefore isolates what the service adds per call (interceptors, domain logic,
SQLAlchemy, commits, outbox) and stays comparable between machines and runs, which absolute calls/s
do not. (The echo reply is empty, so the baseline is, if anything, slightly generous.)

Targets: parking >= 0.70 x echo at 32 and at 128 calls in flight, each; >= 10,000 gate events/s.

Every process (nats-server, both servers, the setup and load clients) runs on 127.0.0.1 in a session
of its own and is stopped by PID at the end, also on Ctrl-C, SIGTERM or an error. The orchestrating
process itself makes no gRPC calls: a KeyboardInterrupt landing inside grpc's synchronous client can
hang the interpreter at exit, so even the readiness checks and facility creation run in a client
process.

Run: ``.venv/bin/python loadtest/bench_parking.py`` (``make bench``); ``--help`` for the options.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

import grpc
from almere.parking.v1 import parking_pb2 as pb
from almere.parking.v1 import parking_pb2_grpc
from almere.type.v1 import geo_pb2
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import Engine, create_engine, text

from apps.natsd import NatsServer, issue_bus_keys, start_nats, stop_process
from apps.stack import wait_serving
from services.common.auth import token_digest

ROOT = Path(__file__).resolve().parents[1]
SELF = Path(__file__).resolve()
HOST = "127.0.0.1"

TARGET_RATIO = 0.70
TARGET_LEVELS = (32, 128)  # the ratio target holds at each of these levels
DEFAULT_PROCESSES = 2
DEFAULT_CONNECTIONS = 16
TARGET_GATE_EVENTS_PER_S = 10_000
OPERATOR_ID = "bench-operator"
LOAD_PREFIX = "bench-load"
GATE_PREFIX = "bench-gate"
CAPACITY = 1_000
# Reported counts cycle below the almost-full threshold: after the first report every call changes the
# count but not the status (one occupancy_changed event and one history sample per call).
OCCUPANCY_SPAN = 800
GATE_STREAMS = 4
GATE_CAPACITY = 100_000
GATE_BATCH_EVENTS = 1_000
GATE_BATCHES_PER_STREAM = 20
CALL_TIMEOUT_S = 30.0
STARTUP_TIMEOUT_S = 30.0
LOG_LEVEL = "WARNING"
# ParkingOutbox.__tablename__ (services/parking/models.py), read directly so that the load clients
# need not import the whole service.
OUTBOX_TABLE = "parking_outbox"
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ParkingService"].full_name


# --- the baseline: a bare grpc.aio server with the same method ------------------------------------


async def echo_report(
    request: pb.ReportOccupancyRequest, context: grpc.aio.ServicerContext[Any, Any]
) -> pb.ReportOccupancyResponse:
    """ReportOccupancy with nothing behind it: the request is parsed, an empty response returned."""
    return pb.ReportOccupancyResponse()


async def serve_echo(port: int) -> None:
    # What add_ParkingServiceServicer_to_server registers, for the one method measured.
    handler = grpc.unary_unary_rpc_method_handler(
        echo_report,
        request_deserializer=pb.ReportOccupancyRequest.FromString,
        response_serializer=pb.ReportOccupancyResponse.SerializeToString,
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, {"ReportOccupancy": handler}),))
    if server.add_insecure_port(f"{HOST}:{port}") == 0:
        raise OSError(f"cannot bind {HOST}:{port}")
    await server.start()
    await server.wait_for_termination()


# --- load clients (each runs in its own process: `--load-client` / `--gate-client`, config on stdin) --


@dataclass(frozen=True)
class LoadConfig:
    address: str
    token: str
    concurrency: int
    # Connections (channels) the callers are spread over, as many garage counters each hold their
    # own: several serving processes on one port share the work by connection (SO_REUSEPORT).
    connections: int
    warmup: float
    duration: float
    first_sequence: int
    # True against the parking service; the echo server's empty reply has no outcome.
    expect_accepted: bool


@dataclass
class LoadResult:
    calls: int
    duration: float
    calls_per_s: float
    p50_ms: float
    p99_ms: float
    errors: dict[str, int]
    last_sequence: int
    # Successful calls including warm-up and tail, to divide the server's CPU time by.
    total_calls: int
    # Set by the orchestrator: CPU time of the server process per call, in microseconds (Linux only).
    server_cpu_us: float | None = None

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def facility_ids(prefix: str, count: int) -> list[str]:
    return [f"{prefix}-{i:04d}" for i in range(count)]


async def run_load(cfg: LoadConfig) -> LoadResult:
    metadata = (("authorization", f"Bearer {cfg.token}"),)
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    total_calls = 0
    async with contextlib.AsyncExitStack() as channels:
        stubs = []
        for _ in range(cfg.connections):
            # A subchannel pool of its own per channel: its own TCP connection, not a shared one.
            channel = await channels.enter_async_context(
                grpc.aio.insecure_channel(cfg.address, options=[("grpc.use_local_subchannel_pool", 1)])
            )
            await asyncio.wait_for(channel.channel_ready(), 10)
            stubs.append(parking_pb2_grpc.ParkingServiceStub(channel))
        measure_from = time.perf_counter() + cfg.warmup
        until = measure_from + cfg.duration

        async def caller(index: int, facility_id: str) -> int:
            nonlocal total_calls
            stub = stubs[index % len(stubs)]
            name = f"facilities/{facility_id}"
            sequence = cfg.first_sequence
            while (begin := time.perf_counter()) < until:
                source_time = Timestamp()
                source_time.GetCurrentTime()
                request = pb.ReportOccupancyRequest(
                    facility=name,
                    occupied_spaces=sequence % OCCUPANCY_SPAN,
                    source_time=source_time,
                    sequence=sequence,
                )
                sequence += 1
                error = None
                try:
                    reply = await stub.ReportOccupancy(request, metadata=metadata, timeout=CALL_TIMEOUT_S)
                    if cfg.expect_accepted and reply.outcome != pb.REPORT_OUTCOME_ACCEPTED:
                        error = pb.ReportOutcome.Name(reply.outcome)
                except grpc.aio.AioRpcError as err:
                    error = err.code().name
                done = time.perf_counter()
                if error:
                    errors[error] += 1  # warm-up and tail included: any failure counts
                    continue
                total_calls += 1
                if measure_from <= done <= until:
                    latencies.append(done - begin)
            return sequence - 1

        last = await asyncio.gather(*(caller(i, f) for i, f in enumerate(facility_ids(LOAD_PREFIX, cfg.concurrency))))
    latencies.sort()
    return LoadResult(
        calls=len(latencies),
        duration=cfg.duration,
        calls_per_s=len(latencies) / cfg.duration,
        p50_ms=percentile(latencies, 0.50) * 1000,
        p99_ms=percentile(latencies, 0.99) * 1000,
        errors=dict(errors),
        last_sequence=max(last),
        total_calls=total_calls,
    )


@dataclass(frozen=True)
class GateConfig:
    address: str
    token: str
    streams: int
    batch_events: int
    batches_per_stream: int
    duration: float
    run_id: str


@dataclass
class GateResult:
    elapsed: float
    events: int
    batches: int
    events_per_s: float
    batches_per_s: float
    errors: dict[str, int]

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


async def run_gate(cfg: GateConfig) -> GateResult:
    metadata = (("authorization", f"Bearer {cfg.token}"),)
    event_time = Timestamp()
    event_time.GetCurrentTime()
    # Built once and copied per batch, so the client spends its CPU on sending, not on building.
    template = pb.RecordGateEventsRequest(
        events=[
            pb.GateEvent(
                direction=pb.GATE_DIRECTION_ENTRY if i % 2 == 0 else pb.GATE_DIRECTION_EXIT,
                event_time=event_time,
                gate_id=f"lane-{i % 4}",
            )
            for i in range(cfg.batch_events)
        ]
    )
    errors: Counter[str] = Counter()
    totals: Counter[str] = Counter()
    async with grpc.aio.insecure_channel(cfg.address) as channel:
        await asyncio.wait_for(channel.channel_ready(), 10)
        stub = parking_pb2_grpc.ParkingServiceStub(channel)
        start = time.perf_counter()
        until = start + cfg.duration

        async def one_stream(worker: int, facility: str, first: int) -> int:
            """One call carrying up to `batches_per_stream` batches; returns the events it got accepted."""
            sent = 0

            async def batches() -> AsyncIterator[pb.RecordGateEventsRequest]:
                nonlocal sent
                while sent < cfg.batches_per_stream and time.perf_counter() < until:
                    batch = pb.RecordGateEventsRequest()
                    batch.CopyFrom(template)
                    batch.facility = facility
                    batch.batch_id = f"{cfg.run_id}-{worker}-{first + sent}"
                    sent += 1
                    yield batch

            try:
                reply: pb.RecordGateEventsResponse = await stub.RecordGateEvents(
                    batches(), metadata=metadata, timeout=CALL_TIMEOUT_S
                )
            except grpc.aio.AioRpcError as err:
                errors[err.code().name] += 1
                return 0
            if reply.accepted_batches != sent or reply.duplicate_batches:
                errors["BATCH_NOT_ACCEPTED"] += sent - reply.accepted_batches + reply.duplicate_batches
            totals["batches"] += reply.accepted_batches
            return int(reply.accepted_events)

        async def worker(index: int, facility_id: str) -> None:
            # Streams of bounded length, one after the other: the server cannot fall far behind
            # (a single endless stream lets the transport buffer megabytes past the deadline).
            first = 0
            while time.perf_counter() < until:
                accepted = await one_stream(index, f"facilities/{facility_id}", first)
                totals["events"] += accepted  # not `+= await ...`: that reads the total before awaiting
                first += cfg.batches_per_stream

        await asyncio.gather(*(worker(i, f) for i, f in enumerate(facility_ids(GATE_PREFIX, cfg.streams))))
        elapsed = time.perf_counter() - start
    events, batches = totals["events"], totals["batches"]
    return GateResult(elapsed, events, batches, events / elapsed, batches / elapsed, dict(errors))


@dataclass(frozen=True)
class SetupConfig:
    parking_address: str
    echo_address: str
    engineer_token: str
    load_facilities: int
    gate_facilities: int
    timeout: float


@dataclass
class SetupResult:
    facilities: int
    seconds: float


async def run_setup(cfg: SetupConfig) -> SetupResult:
    """Wait until both servers answer, then create one facility per caller and per gate stream."""
    start = time.perf_counter()
    await asyncio.to_thread(wait_serving, cfg.parking_address, cfg.timeout)
    async with grpc.aio.insecure_channel(cfg.echo_address) as channel:
        probe = pb.ReportOccupancyRequest(facility=f"facilities/{LOAD_PREFIX}-0000", occupied_spaces=0)
        await parking_pb2_grpc.ParkingServiceStub(channel).ReportOccupancy(
            probe, wait_for_ready=True, timeout=cfg.timeout
        )
    metadata = (("authorization", f"Bearer {cfg.engineer_token}"),)
    ids = facility_ids(LOAD_PREFIX, cfg.load_facilities) + facility_ids(GATE_PREFIX, cfg.gate_facilities)
    async with grpc.aio.insecure_channel(cfg.parking_address) as channel:
        stub = parking_pb2_grpc.ParkingServiceStub(channel)
        await asyncio.gather(
            *(
                stub.CreateFacility(
                    pb.CreateFacilityRequest(
                        facility_id=facility_id,
                        facility=pb.Facility(
                            display_name=f"Benchmark garage {facility_id}",
                            kind=pb.FACILITY_KIND_GARAGE,
                            operator_id=OPERATOR_ID,
                            capacity=CAPACITY if facility_id.startswith(LOAD_PREFIX) else GATE_CAPACITY,
                            location=geo_pb2.LatLng(latitude=52.3731, longitude=5.2194),
                        ),
                    ),
                    metadata=metadata,
                    timeout=CALL_TIMEOUT_S,
                )
                for facility_id in ids
            )
        )
    return SetupResult(len(ids), time.perf_counter() - start)


def client_main(mode: str) -> int:
    """Body of a client process: config as JSON on stdin, result as JSON on stdout."""
    config = json.loads(sys.stdin.read())
    result: LoadResult | GateResult | SetupResult
    if mode == "load":
        result = asyncio.run(run_load(LoadConfig(**config)))
    elif mode == "gate":
        result = asyncio.run(run_gate(GateConfig(**config)))
    else:
        result = asyncio.run(run_setup(SetupConfig(**config)))
    json.dump(asdict(result), sys.stdout)
    return 0


# --- the orchestrator -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _stat(pid: int | str) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process and its living descendants so far, from /proc (None
    where there is no /proc): a server of several processes counts all of them."""
    fields = _stat(pid)
    if fields is None:
        return None
    parents: dict[int, list[int]] = {}
    cpu: dict[int, float] = {pid: int(fields[11]) + int(fields[12])}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (other := _stat(entry)) is not None:
            parents.setdefault(int(other[1]), []).append(int(entry))
            cpu[int(entry)] = int(other[11]) + int(other[12])
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        total += cpu.get(current, 0)
        todo += parents.get(current, [])
    return total / os.sysconf("SC_CLK_TCK")


def tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


@dataclass
class LevelResult:
    level: int
    echo: LoadResult
    parking: LoadResult
    # Outbox rows not yet on JetStream when the parking run ended, and how long they took to drain.
    outbox_backlog: int
    outbox_drain_s: float

    @property
    def ratio(self) -> float:
        return self.parking.calls_per_s / self.echo.calls_per_s if self.echo.calls_per_s else 0.0


@dataclass
class Bench:
    """Owns every process it starts and stops them all, by PID, in `close`."""

    workdir: Path
    # Serving processes of the parking service, and its database (None: a SQLite file in workdir;
    # a PostgreSQL URL: a schema of its own there, dropped at the end).
    serve_processes: int = 1
    database_url: str | None = None
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    nats: NatsServer | None = None
    parking_address: str = ""
    echo_address: str = ""
    operator_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    engineer_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    next_sequence: int = 1
    _parking: subprocess.Popen[bytes] | None = None
    _echo: subprocess.Popen[bytes] | None = None
    _engine: Engine | None = None
    _schema: str = ""

    @property
    def db_path(self) -> Path:
        return self.workdir / "parking.db"

    def _service_database(self) -> str:
        """The service's database URL; on PostgreSQL a fresh schema for this run."""
        if self.database_url is None:
            url = f"sqlite:///{self.db_path}"
            self._engine = create_engine(url, connect_args={"timeout": 10})
            return url
        self._schema = f"bench_{secrets.token_hex(6)}"
        self._engine = create_engine(
            self.database_url.replace("postgresql://", "postgresql+psycopg://", 1),
            connect_args={"options": f"-csearch_path={self._schema}"},
        )
        with self._engine.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{self._schema}"'))
        separator = "&" if "?" in self.database_url else "?"
        return f"{self.database_url}{separator}options=-csearch_path%3D{self._schema}"

    def _drop_database(self) -> None:
        if self._engine is None:
            return
        if self._schema:
            with self._engine.begin() as conn:
                conn.execute(text(f'DROP SCHEMA "{self._schema}" CASCADE'))
        self._engine.dispose()
        self._engine = None

    @property
    def parking_log(self) -> Path:
        return self.workdir / "parking.log"

    def spawn(
        self, args: list[str], *, env: dict[str, str] | None = None, log: Path | None = None, pipes: bool = False
    ) -> subprocess.Popen[bytes]:
        # A session of its own: Ctrl-C reaches only this process, which then stops the child itself.
        out: IO[bytes] | int | None = subprocess.PIPE if pipes else None
        log_file = log.open("ab") if log else None
        try:
            process = subprocess.Popen(
                args,
                cwd=ROOT,
                env=env,
                start_new_session=True,
                stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
                stdout=log_file or out,
                stderr=subprocess.STDOUT if log_file else out,
            )
        finally:
            if log_file:
                log_file.close()
        self.processes.append(process)
        return process

    def close(self) -> None:
        """Stop every started process; a second Ctrl-C cannot cut this short."""
        previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            for process in reversed(self.processes):
                stop_process(process)
            self.processes.clear()
            if self.nats:
                self.nats.stop()
                self.nats = None
            self._drop_database()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def start(self) -> None:
        self.nats = start_nats(self.workdir / "nats", keys=issue_bus_keys(self.workdir / "bus-keys", ["parking"]))
        tokens = {
            "tokens": [
                {"caller": "bench-engineer", "role": "engineer", "sha256": token_digest(self.engineer_token)},
                {
                    "caller": "bench-operator",
                    "role": f"operator:{OPERATOR_ID}",
                    "sha256": token_digest(self.operator_token),
                },
            ]
        }
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("ALMERE_")}
        env.update(
            ALMERE_BIND_HOST=HOST,
            ALMERE_PORT=str(port),
            ALMERE_NATS_URL=self.nats.url,
            ALMERE_NATS_NKEY_SEED_FILE=str(self.nats.keys["parking"].seed_file),
            ALMERE_TOKENS=json.dumps(tokens),
            ALMERE_DATA_DIR=str(self.workdir / "data"),
            ALMERE_DATABASE_URL=self._service_database(),
            ALMERE_SERVE_PROCESSES=str(self.serve_processes),
            ALMERE_LOG_LEVEL=LOG_LEVEL,
            ALMERE_GRACE_SECONDS="1",
        )
        self.parking_address = f"{HOST}:{port}"
        self._parking = self.spawn(
            [sys.executable, "-m", "apps.cli", "serve", "parking"], env=env, log=self.parking_log
        )
        echo_port = free_port()
        self.echo_address = f"{HOST}:{echo_port}"
        self._echo = self.spawn(
            [sys.executable, str(SELF), "--echo-server", str(echo_port)], log=self.workdir / "echo.log"
        )

    def check_servers_alive(self) -> None:
        for name, process, log in (
            ("the parking service", self._parking, self.parking_log),
            ("the echo server", self._echo, self.workdir / "echo.log"),
        ):
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}:\n{tail(log)}")

    def setup(self, load_facilities: int, gate_facilities: int) -> SetupResult:
        """Wait for both servers and create the facilities (from a client process, like all gRPC here)."""
        config = SetupConfig(
            parking_address=self.parking_address,
            echo_address=self.echo_address,
            engineer_token=self.engineer_token,
            load_facilities=load_facilities,
            gate_facilities=gate_facilities,
            timeout=STARTUP_TIMEOUT_S,
        )
        return SetupResult(**self.run_client("setup", config, timeout=STARTUP_TIMEOUT_S + CALL_TIMEOUT_S))

    def run_client(self, mode: str, config: SetupConfig | LoadConfig | GateConfig, timeout: float) -> dict[str, Any]:
        """Run this file as a client process; fail early if a server dies meanwhile."""
        process = self.spawn([sys.executable, str(SELF), f"--{mode}-client"], pipes=True)
        deadline = time.monotonic() + timeout
        payload: bytes | None = json.dumps(asdict(config)).encode()
        try:
            while True:
                try:
                    out, err = process.communicate(payload, timeout=0.5)
                    break
                except subprocess.TimeoutExpired:
                    payload = None  # already sent; communicate() resumes where it was
                    self.check_servers_alive()
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{mode} client did not finish within {timeout:.0f} s") from None
        finally:
            stop_process(process)
            self.processes.remove(process)
        if process.returncode != 0:
            stderr = err.decode(errors="replace")[-3000:]
            raise RuntimeError(f"{mode} client failed with {process.returncode}:\n{stderr}")
        result: dict[str, Any] = json.loads(out)
        return result

    def load(self, level: int, warmup: float, duration: float, *, connections: int, parking: bool) -> LoadResult:
        """One run of the load client against the parking service or the echo server."""
        server = self._parking if parking else self._echo
        assert server is not None, "start() first"
        config = LoadConfig(
            address=self.parking_address if parking else self.echo_address,
            token=self.operator_token,
            concurrency=level,
            connections=min(level, connections),
            warmup=warmup,
            duration=duration,
            first_sequence=self.next_sequence,
            expect_accepted=parking,
        )
        cpu_before = process_cpu_seconds(server.pid)
        result = LoadResult(**self.run_client("load", config, timeout=warmup + duration + 60))
        cpu_after = process_cpu_seconds(server.pid)
        if cpu_before is not None and cpu_after is not None and result.total_calls:
            result.server_cpu_us = 1e6 * (cpu_after - cpu_before) / result.total_calls
        self.next_sequence = result.last_sequence + 1
        self.check_servers_alive()
        return result

    def gate(self, duration: float) -> GateResult:
        config = GateConfig(
            address=self.parking_address,
            token=self.operator_token,
            streams=GATE_STREAMS,
            batch_events=GATE_BATCH_EVENTS,
            batches_per_stream=GATE_BATCHES_PER_STREAM,
            duration=duration,
            run_id=secrets.token_hex(4),
        )
        result = GateResult(**self.run_client("gate", config, timeout=duration + 60))
        self.check_servers_alive()
        return result

    def outbox_backlog(self) -> int:
        assert self._engine is not None, "start() first"
        with self._engine.connect() as conn:
            return int(conn.execute(text(f"SELECT count(*) FROM {OUTBOX_TABLE}")).scalar_one())  # noqa: S608

    def drain_outbox(self, timeout: float = 60.0) -> tuple[int, float]:
        """Wait until the relay has published every event, so the next run starts on an idle machine."""
        start = time.monotonic()
        backlog = pending = self.outbox_backlog()
        while pending and time.monotonic() - start < timeout:
            time.sleep(0.05)
            pending = self.outbox_backlog()
        return backlog, time.monotonic() - start


# --- output -------------------------------------------------------------------------------------------


def print_header(args: argparse.Namespace, bench: Bench) -> None:
    print("ParkingService.ReportOccupancy vs a bare grpc.aio echo server (same method, same client)")
    print(
        f"  machine: {os.cpu_count()} cores, Python {platform.python_version()}, grpcio {grpc.__version__}; "
        "servers, nats-server and load client share these cores"
    )
    database = (
        f"SQLite file (WAL, synchronous=FULL) in {bench.workdir}"
        if bench.database_url is None
        else f"PostgreSQL {bench.database_url} (schema {bench._schema})"
    )
    relay = " + 1 relay process" if bench.serve_processes > 1 else ", relay in-process"
    print(
        f"  parking: `apps.cli serve parking`, {bench.serve_processes} serving process(es){relay}, {database}, "
        f"group commit, JetStream outbox, log level {LOG_LEVEL} (access log off)"
    )
    print(
        f"  levels {args.levels}, {args.warmup:g} s warm-up + {args.duration:g} s per run, echo then parking "
        f"back to back, calls spread over min(level, {args.connections}) connections; "
        "errors = non-OK status or outcome != ACCEPTED"
    )
    print("  CPU us/call = CPU time of the server's processes (not the client, not nats-server) per call")
    print()


def level_header() -> str:
    return (
        f"{'level':>5} | {'echo/s':>7} {'parking/s':>9} {'ratio':>5} | {'echo p50/p99 ms':>15} | "
        f"{'parking p50/p99 ms':>18} | {'CPU us/call e/p':>15} | {'errors e/p':>10} | outbox after run"
    )


def _latency(run: LoadResult) -> str:
    return f"{run.p50_ms:.2f}/{run.p99_ms:.2f}"


def _cpu(run: LoadResult) -> str:
    return "?" if run.server_cpu_us is None else f"{run.server_cpu_us:.0f}"


def level_row(r: LevelResult) -> str:
    errors = f"{r.echo.error_count}/{r.parking.error_count}"
    cpu = f"{_cpu(r.echo)}/{_cpu(r.parking)}"
    return (
        f"{r.level:>5} | {r.echo.calls_per_s:>7.0f} {r.parking.calls_per_s:>9.0f} {r.ratio:>5.2f} | "
        f"{_latency(r.echo):>15} | {_latency(r.parking):>18} | {cpu:>15} | {errors:>10} | "
        f"{r.outbox_backlog} rows, drained in {r.outbox_drain_s:.1f} s"
    )


def print_errors(results: list[LevelResult], gate: GateResult | None) -> None:
    for r in results:
        for name, run in (("echo", r.echo), ("parking", r.parking)):
            if run.errors:
                print(f"  level {r.level} {name} errors: {run.errors}")
    if gate and gate.errors:
        print(f"  gate errors: {gate.errors}")


def level_targets(results: list[LevelResult]) -> list[dict[str, Any]]:
    """The ratio target at each level it is set for (not measured: not met)."""
    by_level = {r.level: r for r in results}
    targets = []
    for level in TARGET_LEVELS:
        run = by_level.get(level)
        ratio = round(run.ratio, 3) if run else None
        targets.append({"level": level, "ratio": ratio, "met": ratio is not None and ratio >= TARGET_RATIO})
    return targets


def summary(results: list[LevelResult], gate: GateResult | None) -> dict[str, Any]:
    best = max(results, key=lambda r: r.ratio) if results else None
    errors = sum(r.echo.error_count + r.parking.error_count for r in results) + (gate.error_count if gate else 0)
    targets = level_targets(results)
    ratio_met = all(t["met"] for t in targets)
    gate_met = gate is not None and gate.events_per_s >= TARGET_GATE_EVENTS_PER_S
    return {
        "best_level": best.level if best else None,
        "best_ratio": round(best.ratio, 3) if best else None,
        "ratio_target": TARGET_RATIO,
        "ratio_targets": targets,
        "ratio_target_met": ratio_met,
        "gate_events_per_s": round(gate.events_per_s) if gate else None,
        "gate_target": TARGET_GATE_EVENTS_PER_S,
        "gate_target_met": gate_met,
        "errors": errors,
        "all_targets_met": ratio_met and gate_met and errors == 0,
    }


def parse_levels(text: str) -> list[int]:
    try:
        levels = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"levels must be comma-separated integers, got {text!r}") from None
    if not levels or any(level < 1 for level in levels):
        raise argparse.ArgumentTypeError("levels must be positive integers")
    return levels


def run(args: argparse.Namespace) -> int:
    levels: list[int] = args.levels
    results: list[LevelResult] = []
    gate: GateResult | None = None
    with tempfile.TemporaryDirectory(prefix="almere-bench-") as tmp:
        bench = Bench(Path(tmp), serve_processes=args.processes, database_url=args.database_url)
        try:
            bench.start()
            bench.setup(max(levels), GATE_STREAMS)
            print_header(args, bench)
            bench.drain_outbox()
            print(level_header(), flush=True)
            for level in levels:
                echo = bench.load(level, args.warmup, args.duration, connections=args.connections, parking=False)
                parking = bench.load(level, args.warmup, args.duration, connections=args.connections, parking=True)
                backlog, drain = bench.drain_outbox()
                results.append(LevelResult(level, echo, parking, backlog, drain))
                print(level_row(results[-1]), flush=True)
            gate = bench.gate(args.gate_duration)
            backlog, drain = bench.drain_outbox()
            print()
            print(
                f"RecordGateEvents: {GATE_STREAMS} concurrent callers, streams of up to {GATE_BATCHES_PER_STREAM} "
                f"batches of {GATE_BATCH_EVENTS} events, for "
                f"{gate.elapsed:.1f} s: {gate.events_per_s:,.0f} events/s, {gate.batches_per_s:,.1f} batches/s "
                f"({gate.events:,} events, {gate.error_count} errors; outbox backlog {backlog} rows, "
                f"drained in {drain:.1f} s)"
            )
        finally:
            bench.close()
    print_errors(results, gate)
    result = summary(results, gate)
    print()
    for target in result["ratio_targets"]:
        ratio_text = "not measured" if target["ratio"] is None else f"{target['ratio']:.2f}"
        print(
            f"TARGET parking/echo >= {TARGET_RATIO:.2f} at {target['level']} in flight: {ratio_text} "
            f"-> {'met' if target['met'] else 'NOT met'}"
        )
    ratio_text = f"{result['best_ratio']:.2f}" if result["best_ratio"] is not None else "n/a"
    print(
        f"SUMMARY ratio targets {'met' if result['ratio_target_met'] else 'NOT met'} "
        f"(best ratio {ratio_text} at level {result['best_level']}); "
        f"gate {result['gate_events_per_s'] or 0:,} events/s "
        f"(target >= {TARGET_GATE_EVENTS_PER_S:,}: {'met' if result['gate_target_met'] else 'NOT met'}); "
        f"errors {result['errors']}"
    )
    if args.json:
        document = {
            "config": {
                "levels": levels,
                "duration_s": args.duration,
                "warmup_s": args.warmup,
                "gate_duration_s": args.gate_duration,
                "gate_streams": GATE_STREAMS,
                "gate_batch_events": GATE_BATCH_EVENTS,
                "gate_batches_per_stream": GATE_BATCHES_PER_STREAM,
                "log_level": LOG_LEVEL,
                "serve_processes": args.processes,
                "connections": args.connections,
                "database": "sqlite" if args.database_url is None else "postgresql",
                "cpu_count": os.cpu_count(),
                "python": platform.python_version(),
                "grpcio": grpc.__version__,
            },
            "levels": [
                {
                    "level": r.level,
                    "ratio": round(r.ratio, 3),
                    "echo": asdict(r.echo),
                    "parking": asdict(r.parking),
                    "outbox_backlog": r.outbox_backlog,
                    "outbox_drain_s": round(r.outbox_drain_s, 2),
                }
                for r in results
            ],
            "gate": asdict(gate) if gate else None,
            "summary": result,
        }
        Path(args.json).write_text(json.dumps(document, indent=2) + "\n")
        print(f"results written to {args.json}")
    return 0


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per level and server")
    parser.add_argument(
        "--levels",
        type=parse_levels,
        default=parse_levels("1,8,32,128"),
        help="concurrency levels (calls in flight), comma-separated (default 1,8,32,128)",
    )
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each run")
    parser.add_argument("--gate-duration", type=float, default=5.0, help="seconds of RecordGateEvents load")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument(
        "--processes",
        type=int,
        default=DEFAULT_PROCESSES,
        help=f"serving processes of the parking service, ALMERE_SERVE_PROCESSES (default {DEFAULT_PROCESSES}; "
        "more than 1 adds an outbox-relay process)",
    )
    parser.add_argument(
        "--connections",
        type=int,
        default=DEFAULT_CONNECTIONS,
        help=f"connections the load client spreads its calls over, at most one per call in flight "
        f"(default {DEFAULT_CONNECTIONS}; the same for echo and parking)",
    )
    parser.add_argument(
        "--database-url",
        metavar="URL",
        help="a PostgreSQL URL (e.g. postgresql://postgres@127.0.0.1:5432/test) to measure on, in a schema "
        "of its own dropped afterwards (default: a SQLite file)",
    )
    # Internal modes: this file is also the echo server and the load-client processes.
    parser.add_argument("--echo-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--load-client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--gate-client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--setup-client", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.echo_server is not None:
        asyncio.run(serve_echo(args.echo_server))
        return 0
    if args.load_client or args.gate_client or args.setup_client:
        return client_main("load" if args.load_client else "gate" if args.gate_client else "setup")
    if args.duration <= 0 or args.warmup < 0 or args.gate_duration <= 0:
        parser.error("--duration and --gate-duration must be positive, --warmup not negative")
    if args.processes < 1 or args.connections < 1:
        parser.error("--processes and --connections must be at least 1")
    if args.database_url is not None and not args.database_url.startswith("postgresql://"):
        parser.error("--database-url must be a postgresql:// URL (the default is a SQLite file)")
    # SIGTERM unwinds like Ctrl-C, so every started process is stopped.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        return run(args)
    except KeyboardInterrupt:
        print("\ninterrupted; every started process was stopped", file=sys.stderr)
        return 130
    except (RuntimeError, TimeoutError) as err:
        print(f"\nbenchmark failed (every started process was stopped): {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
