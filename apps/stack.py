"""`almere up`: the whole system on one machine: nats-server, database migrations and every service
as its own process (as on Kubernetes), with development tokens for each role."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from apps.natsd import NatsServer, port_is_free, start_nats
from services.common.auth import issue_token, write_private
from services.common.config import DEFAULT_PORTS, Settings
from sim.named_networks import build_network

SERVICES = ["parking", "incidents", "signals", "optimizer"]
METRICS_PORT_BASE = 9101
# Development callers issued by `almere up` when no tokens file is configured.
DEV_CALLERS = {
    "engineer": "engineer",
    "operator": "operator:demo-operator",
    "police": "police",
    "fire": "fire",
    "ems": "ems",
    "optimizer": "optimizer",
    "sim": "sim",
}


def free_port(host: str, preferred: int = 0) -> int:
    """`preferred` if it is free, else (or without one) a port the kernel picks."""
    if preferred and port_is_free(host, preferred):
        return preferred
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class ServiceExited(RuntimeError):
    """A service process ended before it served (e.g. its port was taken after we checked it)."""


def wait_serving(address: str, timeout: float = 30.0, process: subprocess.Popen[bytes] | None = None) -> None:
    """Until `address` reports SERVING; `process`: the service behind it, which must not exit first."""
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                status = stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if process is not None and process.poll() is not None:
                raise ServiceExited(f"the service for {address} exited with {process.returncode} before serving")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{address} did not report SERVING within {timeout:.0f} s")
            time.sleep(0.1)


@dataclass(kw_only=True)
class Stack:
    settings: Settings
    services: list[str] = field(default_factory=lambda: list(SERVICES))
    nats: NatsServer | None = None
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    endpoints: dict[str, str] = field(default_factory=dict)
    credentials: dict[str, str] = field(default_factory=dict)
    # More development callers (name -> role), e.g. the operators of a simulated city's garages.
    extra_callers: dict[str, str] = field(default_factory=dict)
    network: str = ""
    metrics: dict[str, str] = field(default_factory=dict)

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir.resolve()

    def start(self) -> None:
        """NATS, then every service as its own process; returns once each reports SERVING."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        nats_url = self._nats_url()
        env = dict(os.environ, ALMERE_DATA_DIR=str(self.data_dir), ALMERE_NATS_URL=nats_url, **self._shared_settings())
        self.network = env["ALMERE_NETWORK_FILE"]
        try:
            try:
                self._serve_all(env, default_ports=True)
            except ServiceExited:
                # Another stack on this machine bound a default port between our check and the
                # service's bind: this time the kernel picks every port.
                self._stop_services()
                self._serve_all(env, default_ports=False)
        except BaseException:
            self.stop()
            raise
        self.endpoints["nats"] = nats_url
        (self.data_dir / "endpoints.json").write_text(
            json.dumps({**self.endpoints, **{f"{n}-metrics": u for n, u in self.metrics.items()}}, indent=2)
        )

    def _nats_url(self) -> str:
        """The NATS of $ALMERE_NATS_URL, else a nats-server of our own (on 4222 when that is free)."""
        if "ALMERE_NATS_URL" in os.environ:
            return os.environ["ALMERE_NATS_URL"]
        port = 4222 if port_is_free(self.settings.bind_host, 4222) else None
        self.nats = start_nats(self.data_dir / "nats", port, self.settings.bind_host)
        return self.nats.url

    def _shared_settings(self) -> dict[str, str]:
        """The settings every service gets, whether they came from the environment or from code:
        tokens (development ones issued here when none are configured), network and log level."""
        env = {}
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
            wait_serving(address, process=self.processes[name])

    def _spawn_services(self, env: dict[str, str], *, default_ports: bool) -> None:
        """One process per service on a free port (its default when free and `default_ports`), each
        told where the services it calls are."""
        host = self.settings.bind_host
        ports = {name: free_port(host, DEFAULT_PORTS[name] if default_ports else 0) for name in self.services}
        if "optimizer" in ports:  # the parking service ranks facilities by its travel times
            env["ALMERE_OPTIMIZER_ADDRESS"] = f"{host}:{ports['optimizer']}"
        if "signals" in ports:  # the optimizer proposes adaptive signal steps
            env["ALMERE_SIGNALS_ADDRESS"] = f"{host}:{ports['signals']}"
        for index, name in enumerate(self.services):
            port = ports[name]
            metrics_port = free_port(host, METRICS_PORT_BASE + index if default_ports else 0)
            self.metrics[name] = f"http://{host}:{metrics_port}/metrics"
            # A service calling others (the optimizer) gets its development caller's token.
            token = self.credentials.get(name)
            own_token = {"ALMERE_SERVICE_TOKEN": token} if token else {}
            log = (self.data_dir / f"{name}.log").open("ab")
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", "apps.cli", "serve", name],
                env=dict(env, ALMERE_PORT=str(port), ALMERE_METRICS_PORT=str(metrics_port), **own_token),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            log.close()
            self.endpoints[name] = f"{host}:{port}"

    def _issue_dev_tokens(self) -> Path:
        path = self.data_dir / "tokens.json"
        path.unlink(missing_ok=True)
        callers = {**DEV_CALLERS, **self.extra_callers}
        self.credentials = {caller: issue_token(path, caller, role) for caller, role in callers.items()}
        credentials = {c: {"role": callers[c], "token": t} for c, t in self.credentials.items()}
        write_private(self.data_dir / "credentials.json", credentials)
        return path

    def check_alive(self) -> str | None:
        """Name of a service process that died, if any."""
        return next((n for n, p in self.processes.items() if p.poll() is not None), None)

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

    def describe(self) -> str:
        lines = ["almere-traffic is up", ""]
        lines += [f"  {name:<10} {address}" for name, address in self.endpoints.items()]
        lines += ["", "Prometheus metrics:"] + [f"  {name:<10} {url}" for name, url in self.metrics.items()]
        if self.credentials:
            lines += ["", "development tokens (also in credentials.json; send as 'authorization: Bearer <token>'):"]
            roles = {**DEV_CALLERS, **self.extra_callers}
            lines += [f"  {roles[c]:<24} {t}" for c, t in self.credentials.items()]
        lines += ["", f"road network: {self.network}", f"data, logs and endpoints.json in {self.data_dir}"]
        lines += ["Ctrl-C stops everything."]
        return "\n".join(lines)
