"""`almere up`: the whole system on one machine: nats-server, database migrations and every service
as its own process (as on Kubernetes), with development tokens for the callers asked for."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc

from apps.natsd import (
    NatsCluster,
    NatsServer,
    ServerTls,
    client_options,
    free_ports,
    issue_bus_keys,
    port_is_free,
    start_cluster,
    start_nats,
)
from services.common.auth import issue_token, parse_role, write_private
from services.common.bus import tls as bus_tls
from services.common.channels import open_blocking_channel, open_channel, uses_tls
from services.common.config import DEFAULT_PORTS, Settings
from sim.named_networks import build_network

SERVICES = ["parking", "incidents", "signals", "optimizer", "whatif", "partners", "counters", "gateway"]
# What a simulation run's city needs: the twin plays no partners, so their registry stays out (a
# process less to start beside each coupled run).
TWIN_SERVICES = [s for s in SERVICES if s not in ("partners", "counters")]
# Served over HTTP (health at /readyz, metrics at /metrics on the same port), not gRPC.
HTTP_SERVICES = frozenset({"gateway"})
# Processes without a port that run beside a service: the what-if workers simulate its runs (one SUMO
# process per core), pulling them from the bus.
WORKERS = {"whatif": "whatif-worker"}
METRICS_PORT_BASE = 9101
# Development callers `almere up --caller <name>` issues when no tokens file is configured (any
# other as `--caller <name>=<role>`); without --caller, an engineer only.
DEV_CALLERS = {
    "engineer": "engineer",
    "operator": "operator:demo-operator",
    "police": "police",
    "fire": "fire",
    "ems": "ems",
    "optimizer": "optimizer",
    "sim": "sim",
    "partner": "partner:demo-partner",
}
DEFAULT_CALLERS = ("engineer",)
# The services that call others, each with a development token of its own whenever it runs (in no
# credentials.json; nobody asks for it): the optimizer proposes signal steps, the parking service
# asks the optimizer for travel times, the gateway reads its open-data feeds as the public, the
# what-if service reads the live picture and adopts plans for the engineer who asks.
SERVICE_CALLERS = {"optimizer": "optimizer", "parking": "service:parking", "gateway": "public", "whatif": "engineer"}


def dev_callers(*asked: str) -> dict[str, str]:
    """name -> role of the development callers asked for: names of DEV_CALLERS, or `name=role`."""
    callers: dict[str, str] = {}
    for text in asked:
        name, custom, role = text.partition("=")
        if not custom:
            if name not in DEV_CALLERS:
                raise ValueError(f"unknown caller {name!r}: one of {', '.join(DEV_CALLERS)}, or <name>=<role>")
            role = DEV_CALLERS[name]
        if not name:
            raise ValueError(f"caller {text!r} has no name: <name>=<role>")
        parse_role(role)
        callers[name] = role
    return callers


def free_port(host: str, preferred: int = 0) -> int:
    """`preferred` if it is free, else (or without one) a port the kernel picks."""
    if preferred and port_is_free(host, preferred):
        return preferred
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class ServiceExited(RuntimeError):
    """A service process ended before it served (e.g. its port was taken after we checked it)."""


def listens_on(process: subprocess.Popen[bytes], port: int) -> bool:
    """Whether `process` (or a serving process it started) listens on `port`: the answer on a port
    may come from another stack's service that took it between our check and our bind."""
    try:
        parent = psutil.Process(process.pid)
        for proc in [parent, *parent.children(recursive=True)]:
            for conn in proc.net_connections(kind="tcp"):
                if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
                    return True
    except psutil.Error:
        return False
    return False


# How long a service that is still running may take to serve: its imports (grpc, SQLAlchemy, numpy,
# scipy) alone took over 30 s with every service starting at once on two cores busy with other jobs.
# A service that exits is reported at once, so a long bound only costs time when one hangs.
STARTUP_TIMEOUT_S = 90.0


def _wait(
    ready: Callable[[], bool],
    *,
    what: str,
    timeout: float,
    process: subprocess.Popen[bytes] | None,
    port: int | None = None,
) -> None:
    """Until `ready()` (a probe failing on its own errors answers False); `process`: the service behind
    it, which must not exit first and, given its `port`, must be the one listening there."""
    deadline = time.monotonic() + timeout
    while not (ready() and (process is None or port is None or listens_on(process, port))):
        if process is not None and process.poll() is not None:
            raise ServiceExited(f"the service for {what} exited with {process.returncode} before serving")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not report SERVING within {timeout:.0f} s")
        time.sleep(0.1)


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1].split("/", 1)[0])


def wait_http_ready(
    url: str, timeout: float = STARTUP_TIMEOUT_S, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Until GET `url` answers 200 (the gateway's /readyz: it and the services behind it serve)."""

    def ready() -> bool:
        try:
            return httpx.get(url, timeout=1, verify=False).status_code == 200  # noqa: S501 (loopback probe)
        except httpx.HTTPError:
            return False

    _wait(ready, what=url, timeout=timeout, process=process, port=httpx.URL(url).port if process else None)


def wait_serving(
    address: str,
    timeout: float = STARTUP_TIMEOUT_S,
    process: subprocess.Popen[bytes] | None = None,
    settings: Settings | None = None,
) -> None:
    """Until `address` reports SERVING; `process`: the service behind it, which must not exit first;
    `settings`: the deployment's, whose TLS the check uses (plain without)."""
    with open_blocking_channel(settings, address) if settings else grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)

        def ready() -> bool:
            try:
                status = stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                return bool(status == health_pb2.HealthCheckResponse.SERVING)
            except grpc.RpcError:
                return False

        _wait(ready, what=address, timeout=timeout, process=process, port=_port(address) if process else None)


@dataclass(kw_only=True)
class Stack:
    settings: Settings
    services: list[str] = field(default_factory=lambda: list(SERVICES))
    nats: NatsServer | NatsCluster | None = None
    # nats-servers of our own: 1, or a JetStream cluster of this many nodes (3 survives losing one),
    # whose streams the services then create with as many replicas.
    nats_nodes: int = 1
    # Whether the bus takes TLS: our own nats-server does when the stack serves TLS (mutual with
    # the client CA); an external one when $ALMERE_NATS_TLS says so.
    nats_tls: bool = field(default=False, init=False)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    endpoints: dict[str, str] = field(default_factory=dict)
    # The development callers to issue tokens for (name -> role); their tokens land in credentials.
    callers: dict[str, str] = field(default_factory=lambda: dev_callers(*DEFAULT_CALLERS))
    credentials: dict[str, str] = field(default_factory=dict)
    # The own tokens of the running services that call others (SERVICE_CALLERS).
    service_tokens: dict[str, str] = field(default_factory=dict, init=False, repr=False)
    network: str = ""
    metrics: dict[str, str] = field(default_factory=dict)
    # Where each bus user's NKey seed is (<name>.nk): issued for our own nats-server, or given with an
    # external one ($ALMERE_NATS_KEYS_DIR).
    bus_keys: Path | None = None
    # The well-known ports when free (a user's stack); False: ports the kernel picks, for stacks
    # started side by side, which would otherwise both find a default port free and one would
    # answer the other's health checks.
    default_ports: bool = True
    # Where the dashboard finds finished runs' reports (default: the data folder).
    reports_dir: Path | None = None
    _environments: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir.resolve()

    def start(self) -> None:
        """NATS, then every service as its own process; returns once each reports SERVING."""
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)  # databases, logs and tokens: the owner's only
        nats_url = self._nats_url()
        env = dict(
            os.environ,
            ALMERE_DATA_DIR=str(self.data_dir),
            ALMERE_NATS_URL=nats_url,
            **self._bus_settings(),
            **self._shared_settings(),
        )
        self.network = env["ALMERE_NETWORK_FILE"]
        try:
            try:
                self._serve_all(env, default_ports=self.default_ports)
            except ServiceExited:
                # Another stack on this machine bound a default port between our check and the
                # service's bind: this time the kernel picks every port.
                self._stop_services()
                self._serve_all(env, default_ports=False)
        except BaseException:
            self.stop()
            raise
        self.endpoints["nats"] = nats_url
        keys = {"nats-keys": str(self.bus_keys)} if self.bus_keys else {}
        metrics = {f"{n}-metrics": u for n, u in self.metrics.items()}
        write_private(self.data_dir / "endpoints.json", {**self.endpoints, **keys, **self._client_tls(), **metrics})

    def _nats_url(self) -> str:
        """The NATS of $ALMERE_NATS_URL (with the seeds in $ALMERE_NATS_KEYS_DIR when it checks
        identities), else nats-servers of our own (one on 4222 when that is free, or a cluster of
        `nats_nodes`) that admit only the bus users of contract.bus_access, each with a key issued
        now, over TLS when the stack serves TLS."""
        if "ALMERE_NATS_URL" in os.environ:
            keys_dir = os.environ.get("ALMERE_NATS_KEYS_DIR")
            self.bus_keys = Path(keys_dir).resolve() if keys_dir else None
            self.nats_tls = self.settings.nats_tls
            return os.environ["ALMERE_NATS_URL"]
        s = self.settings
        self.bus_keys = self.data_dir / "bus-keys"
        keys = issue_bus_keys(self.bus_keys)
        tls = None
        if s.tls_cert_file and s.tls_key_file:
            tls = ServerTls(cert_file=s.tls_cert_file, key_file=s.tls_key_file, client_ca_file=s.tls_client_ca_file)
        self.nats_tls = tls is not None
        if self.nats_nodes > 1:
            self.nats = start_cluster(self.data_dir / "nats-cluster", self.nats_nodes, s.bind_host, keys=keys, tls=tls)
        else:
            port = 4222 if self.default_ports and port_is_free(s.bind_host, 4222) else None
            self.nats = start_nats(self.data_dir / "nats", port, s.bind_host, keys=keys, tls=tls)
        return self.nats.url

    def _bus_settings(self) -> dict[str, str]:
        """What the services need of the stack's own bus: TLS (checked against the stack's CA and
        server name, as its gRPC) and, on a cluster, a replica of every stream on each node."""
        env = {"ALMERE_NATS_TLS": "true"} if self.nats_tls else {}
        if self.nats is not None and self.nats_nodes > 1:
            env["ALMERE_STREAM_REPLICAS"] = str(self.nats_nodes)
        return env

    def _client_tls(self) -> dict[str, dict[str, str | bool | None]]:
        """endpoints.json's "tls" for clients outside the services (the twin, tools): present when the
        stack serves TLS, with the CA and server name to check, the certificate to present where
        servers require one (the stack's own), and whether the bus takes TLS too ("nats")."""
        if not uses_tls(self.settings):
            return {}
        s = self.settings
        files = {"ca_file": s.tls_ca_file, "cert_file": s.tls_cert_file, "key_file": s.tls_key_file}
        tls: dict[str, str | bool | None] = {
            name: str(path.resolve()) if path else None for name, path in files.items()
        }
        return {"tls": {**tls, "server_name": s.tls_server_name, "nats": self.nats_tls}}

    def channel(self, name: str) -> grpc.aio.Channel:
        """A channel to service `name`, TLS when the stack serves TLS (as the services' own)."""
        return open_channel(self.settings, self.endpoints[name])

    def blocking_channel(self, name: str) -> grpc.Channel:
        return open_blocking_channel(self.settings, self.endpoints[name])

    def _shared_settings(self) -> dict[str, str]:
        """The settings every service gets, whether they came from the environment or from code:
        tokens (development ones issued here when none are configured), TLS, network and log level."""
        env = {}
        tls_files = {
            "ALMERE_TLS_CERT_FILE": self.settings.tls_cert_file,
            "ALMERE_TLS_KEY_FILE": self.settings.tls_key_file,
            "ALMERE_TLS_CA_FILE": self.settings.tls_ca_file,
            "ALMERE_TLS_CLIENT_CA_FILE": self.settings.tls_client_ca_file,
        }
        env.update({key: str(path.resolve()) for key, path in tls_files.items() if path})
        if self.settings.tls_server_name:
            env["ALMERE_TLS_SERVER_NAME"] = self.settings.tls_server_name
        if self.settings.tokens_file:
            env["ALMERE_TOKENS_FILE"] = str(self.settings.tokens_file.resolve())
        elif not self.settings.tokens:
            env["ALMERE_TOKENS_FILE"] = str(self._issue_dev_tokens())
        if self.settings.network_file:
            env["ALMERE_NETWORK_FILE"] = str(self.settings.network_file.resolve())
        else:
            # Without a city network of its own, the stack runs on the schematic centrum-mini.
            env["ALMERE_NETWORK_FILE"] = str(build_network("centrum-mini", self.data_dir / "networks"))
        env["ALMERE_LOG_LEVEL"] = self.settings.log_level
        return env

    def _serve_all(self, env: dict[str, str], *, default_ports: bool) -> None:
        self._spawn_services(env, default_ports=default_ports)
        for name, address in self.endpoints.items():
            if name in HTTP_SERVICES:
                wait_http_ready(f"{address}/readyz", process=self.processes[name])
            else:
                wait_serving(address, process=self.processes[name], settings=self.settings)

    def _spawn_services(self, env: dict[str, str], *, default_ports: bool) -> None:
        """One process per service on a free port (its default when free and `default_ports`), each
        told where the services it calls are."""
        host = self.settings.bind_host
        ports = {name: free_port(host, DEFAULT_PORTS[name] if default_ports else 0) for name in self.services}
        if "optimizer" in ports:  # the parking service ranks facilities by its travel times
            env["ALMERE_OPTIMIZER_ADDRESS"] = f"{host}:{ports['optimizer']}"
        if "signals" in ports:  # the optimizer proposes adaptive signal steps
            env["ALMERE_SIGNALS_ADDRESS"] = f"{host}:{ports['signals']}"
        # The gateway reads and feeds parking and incidents (and carries every service's calls as
        # JSON); the what-if service reads the live picture from them and adopts plans through them
        # and the signal service and optimizer.
        for read in ("parking", "incidents", "whatif", "partners", "counters"):
            if read in ports:
                env[f"ALMERE_{read.upper()}_ADDRESS"] = f"{host}:{ports[read]}"
        # The dashboard links to the reports of runs under the reports folder (default: the data folder).
        env.setdefault("ALMERE_GATEWAY_REPORTS_DIR", str(self.reports_dir or self.data_dir))
        for index, name in enumerate(self.services):
            port = ports[name]
            scheme = "https" if self.settings.tls_enabled else "http"
            if name in HTTP_SERVICES:  # metrics on its own port, beside its routes
                metrics_port = 0
                self.metrics[name] = f"{scheme}://{host}:{port}/metrics"
            else:
                metrics_port = free_port(host, METRICS_PORT_BASE + index if default_ports else 0)
                self.metrics[name] = f"http://{host}:{metrics_port}/metrics"
            # A service calling others (the optimizer, parking) gets its development caller's token.
            token = self.service_tokens.get(name)
            own_token = {"ALMERE_SERVICE_TOKEN": token} if token else {}
            if self.bus_keys and name not in HTTP_SERVICES:
                own_token["ALMERE_NATS_NKEY_SEED_FILE"] = str(self.bus_keys / f"{name}.nk")
            # Logs go to <name>.log, rotated by size; stdout and stderr (a crash before logging starts)
            # to <name>.out.
            log_file = {"ALMERE_LOG_FILE": str(self.data_dir / f"{name}.log")}
            self._environments[name] = dict(
                env, ALMERE_PORT=str(port), ALMERE_METRICS_PORT=str(metrics_port), **own_token, **log_file
            )
            self._launch(name)
            self.endpoints[name] = f"{scheme}://{host}:{port}" if name in HTTP_SERVICES else f"{host}:{port}"
            if worker := WORKERS.get(name):
                self._spawn_worker(worker, env)

    def _spawn_worker(self, name: str, env: dict[str, str]) -> None:
        """A service's worker process: its own bus identity and log, no port (it takes jobs from the bus)."""
        identity = {"ALMERE_NATS_NKEY_SEED_FILE": str(self.bus_keys / f"{name}.nk")} if self.bus_keys else {}
        self._environments[name] = dict(env, ALMERE_LOG_FILE=str(self.data_dir / f"{name}.log"), **identity)
        self._launch(name)

    def add_replica(self, name: str, replica_id: str) -> str:
        """Another process of gRPC service `name` with its settings, but a port, metrics port, log and
        replica id of its own (leader election picks which replica runs what must run once); known
        as `<name>@<replica_id>` in processes, endpoints and metrics. Returns its address once it
        reports SERVING."""
        if name in HTTP_SERVICES or name not in self.services:
            raise ValueError(f"{name!r} is not a gRPC service of this stack")
        host = self.settings.bind_host
        port, metrics_port = free_ports(host, 2)
        replica = f"{name}@{replica_id}"
        self._environments[replica] = dict(
            self._environments[name],
            ALMERE_PORT=str(port),
            ALMERE_METRICS_PORT=str(metrics_port),
            ALMERE_REPLICA_ID=replica_id,
            ALMERE_LOG_FILE=str(self.data_dir / f"{replica}.log"),
        )
        self._launch(replica)
        self.endpoints[replica] = f"{host}:{port}"
        self.metrics[replica] = f"http://{host}:{metrics_port}/metrics"
        wait_serving(self.endpoints[replica], process=self.processes[replica], settings=self.settings)
        return self.endpoints[replica]

    def _launch(self, name: str) -> None:
        """Start process `name`: a service, a worker, or a service's replica (`<service>@<replica_id>`)."""
        log = os.fdopen(os.open(self.data_dir / f"{name}.out", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab")
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", "apps.cli", "serve", name.partition("@")[0]],
            env=self._environments[name],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    def restart(self, name: str) -> None:
        """Start service `name` again as it first started: same port, settings and identity."""
        self._launch(name)

    def _issue_dev_tokens(self) -> Path:
        """Tokens for the callers asked for (also in credentials.json) and for each running service
        that calls others (its own; a caller of the same name and role shares it)."""
        path = self.data_dir / "tokens.json"
        path.unlink(missing_ok=True)
        services = {name: role for name, role in SERVICE_CALLERS.items() if name in self.services}
        for name in services.keys() & self.callers.keys():
            if self.callers[name] != services[name]:
                raise ValueError(f"caller {name!r} is the {name} service's own ({services[name]}); rename yours")
        callers = {**self.callers, **services}
        tokens = {caller: issue_token(path, caller, role) for caller, role in callers.items()}
        self.credentials = {caller: tokens[caller] for caller in self.callers}
        self.service_tokens = {name: tokens[name] for name in services}
        credentials = {c: {"role": self.callers[c], "token": t} for c, t in self.credentials.items()}
        write_private(self.data_dir / "credentials.json", credentials)
        return path

    def bus_options(self, user: str) -> dict[str, Any]:
        """nats.connect's keyword arguments besides the servers to reach this stack's bus as `user`
        (contract.bus_access): its identity and, when the bus takes TLS, the stack's certificate."""
        return {**client_options(self.bus_keys, user), **(bus_tls(self.settings) if self.nats_tls else {})}

    def stop(self) -> None:
        self._stop_services()
        if self.nats:
            self.nats.stop()
            self.nats = None

    def _stop_services(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(self.settings.grace_seconds + 10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()

    def dashboard(self) -> str | None:
        """The control room's page and whom to log in as, when the stack runs the gateway."""
        if "gateway" not in self.endpoints:
            return None
        where = self.data_dir / "credentials.json"
        login = (
            f" (log in with a token, e.g. the engineer's in {where})" if self.credentials else " (log in with a token)"
        )
        return f"dashboard: {self.endpoints['gateway']}/dashboard/{login}"

    def describe(self) -> str:
        lines = ["almere-traffic is up", ""]
        lines += [f"  {name:<10} {address}" for name, address in self.endpoints.items()]
        if hint := self.dashboard():
            lines += ["", hint]
        lines += ["", "Prometheus metrics:"] + [f"  {name:<10} {url}" for name, url in self.metrics.items()]
        if self.credentials:
            lines += ["", "development tokens (also in credentials.json; send as 'authorization: Bearer <token>'):"]
            lines += [f"  {c:<12} {self.callers[c]:<24} {t}" for c, t in self.credentials.items()]
            lines += [
                f"more callers: almere up --caller <name> (repeat; names: {', '.join(DEV_CALLERS)}) "
                "or --caller <name>=<role>; who may call what: docs/roles.md"
            ]
        lines += ["", f"road network: {self.network}", f"data, logs and endpoints.json in {self.data_dir}"]
        if self.bus_keys:
            lines += [f"NATS admits only its users; their NKey seeds are in {self.bus_keys} (tools: observer.nk)"]
        lines += ["Ctrl-C stops everything."]
        return "\n".join(lines)
