"""`almere up` as a user runs it: a subprocess that starts NATS and the services, then stops on Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import httpx
import psutil
import pytest
from almere.incidents.v1 import incidents_pb2 as ipb
from almere.incidents.v1 import incidents_pb2_grpc
from almere.parking.v1 import parking_pb2 as pb
from almere.parking.v1 import parking_pb2_grpc
from almere.signals.v1 import signals_pb2 as spb
from almere.signals.v1 import signals_pb2_grpc
from almere.type.v1 import geo_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from lxml import etree

from apps import stack as stack_module
from apps.natsd import NatsServer
from services.common.config import Settings
from tests.integration.helpers import facility, ts

pytestmark = pytest.mark.e2e


def wait_for(path: Path, process: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            raise AssertionError(f"almere up exited early: {process.communicate()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} not written within {timeout} s")
        time.sleep(0.1)


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # what a shell does to a background job


@pytest.mark.parametrize(
    ("stop_signal", "background"),
    [(signal.SIGINT, False), (signal.SIGINT, True), (signal.SIGTERM, False)],
    ids=["ctrl-c", "ctrl-c-as-background-job", "sigterm"],
)
def test_up_serves_every_service_and_stops_cleanly(tmp_path: Path, stop_signal: int, background: bool) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALMERE_")}
    env["ALMERE_DATA_DIR"] = str(tmp_path / "data")
    process = subprocess.Popen(
        [sys.executable, "-m", "apps.cli", "up", *(f"--caller={c}" for c in ("engineer", "operator", "police"))],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own group: a failed test can stop everything it started
        preexec_fn=_ignore_sigint if background else None,
    )
    try:
        wait_for(tmp_path / "data" / "endpoints.json", process)
        endpoints = json.loads((tmp_path / "data" / "endpoints.json").read_text())
        credentials = json.loads((tmp_path / "data" / "credentials.json").read_text())
        assert (tmp_path / "data" / "credentials.json").stat().st_mode & 0o077 == 0
        assert endpoints["nats"].startswith("nats://127.0.0.1:")
        with grpc.insecure_channel(endpoints["parking"]) as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            stub = parking_pb2_grpc.ParkingServiceStub(channel)

            def auth(caller: str) -> tuple[tuple[str, str]]:
                return (("authorization", f"Bearer {credentials[caller]['token']}"),)

            stub.CreateFacility(
                pb.CreateFacilityRequest(facility_id="garage-e2e", facility=facility(operator="demo-operator")),
                metadata=auth("engineer"),
            )
            reply = stub.ReportOccupancy(
                pb.ReportOccupancyRequest(
                    facility="facilities/garage-e2e", occupied_spaces=42, sequence=1, source_time=ts()
                ),
                metadata=auth("operator"),
            )
            assert reply.outcome == pb.REPORT_OUTCOME_ACCEPTED
            with pytest.raises(grpc.RpcError) as err:
                stub.ReportOccupancy(
                    pb.ReportOccupancyRequest(
                        facility="facilities/garage-e2e", occupied_spaces=43, sequence=2, source_time=ts()
                    ),
                    metadata=auth("police"),
                )
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with grpc.insecure_channel(endpoints["incidents"]) as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="almere.incidents.v1.IncidentService")
            )
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            reported = incidents_pb2_grpc.IncidentServiceStub(channel).ReportIncident(
                ipb.ReportIncidentRequest(
                    request_id="e2e-1",
                    incident=ipb.Incident(
                        type=ipb.INCIDENT_TYPE_COLLISION, location=geo_pb2.LatLng(latitude=52.3742, longitude=5.2117)
                    ),
                ),
                metadata=auth("police"),
            )
            # almere up runs on the centrum-mini network: the report is snapped to the ring road.
            assert reported.incident.network_location.edge_id == "ring-w-n"
            incidents_pb2_grpc.IncidentServiceStub(channel).TransitionIncident(
                ipb.TransitionIncidentRequest(name=reported.incident.name, state=ipb.INCIDENT_STATE_CONFIRMED),
                metadata=auth("police"),
            )
        # The HTTP gateway's open-data feeds (no token) show both, as any consumer would curl them.
        gateway = endpoints["gateway"]
        assert gateway.startswith("http://127.0.0.1:")
        status = etree.fromstring(httpx.get(f"{gateway}/feeds/datex2/parking-status", timeout=10).content)
        vacant = status.xpath(
            "//*[local-name()='parkingRecordStatus'][.//*[@id='garage-e2e']]"
            "//*[local-name()='parkingNumberOfVacantSpaces']/text()"
        )
        assert vacant == ["58"]
        situations = httpx.get(f"{gateway}/feeds/datex2/situations", timeout=10)
        assert reported.incident.name.removeprefix("incidents/") in situations.text
        with grpc.insecure_channel(endpoints["signals"]) as channel:
            stub = signals_pb2_grpc.SignalServiceStub(channel)
            imported = stub.ImportNetwork(spb.ImportNetworkRequest(), metadata=auth("engineer"))
            assert len(imported.created) == 3  # the traffic lights of the centrum-mini network
    finally:
        # What it started (the services, nats-server): its ports may serve another test's stack
        # right after it stops, so the processes themselves are checked.
        started = psutil.Process(process.pid).children(recursive=True)
        process.send_signal(stop_signal)
        try:
            out, errors = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            raise
    assert process.returncode == 0, errors
    assert "almere-traffic is up" in out and endpoints["parking"] in out and endpoints["gateway"] in out
    assert credentials["engineer"]["token"] in out
    # Everything it started is gone.
    assert len(started) >= len(stack_module.SERVICES) + 1
    _, alive = psutil.wait_procs(started, timeout=5)
    assert not alive, [p.cmdline() for p in alive]


def _parking_stack_moves_off(
    port: int, tmp_path: Path, nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stack told to serve parking on `port`, found free by its check and taken when the service
    binds it, ends up elsewhere, with its endpoint serving the parking service itself."""
    monkeypatch.setattr(stack_module, "DEFAULT_PORTS", {"parking": port})
    monkeypatch.setattr(stack_module, "port_is_free", lambda host, p: True)  # the check before the bind
    monkeypatch.setenv("ALMERE_NATS_URL", nats_server.url)
    monkeypatch.setenv("ALMERE_NATS_KEYS_DIR", str(nats_server.keys["parking"].seed_file.parent))
    stack = stack_module.Stack(settings=Settings(data_dir=tmp_path / "data", log_level="WARNING"), services=["parking"])
    stack.start()
    try:
        assert int(stack.endpoints["parking"].rsplit(":", 1)[1]) != port
        with grpc.insecure_channel(stack.endpoints["parking"]) as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="almere.parking.v1.ParkingService"), timeout=5
            )
        assert health.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        stack.stop()


def test_a_default_port_taken_after_the_check_moves_the_stack_to_free_ports(
    tmp_path: Path, nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two stacks on one machine: the port was free when checked and taken when the service bound it."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        _parking_stack_moves_off(taken.getsockname()[1], tmp_path, nats_server, monkeypatch)


def test_another_stacks_service_answering_on_the_port_is_not_taken_for_ours(
    tmp_path: Path, nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two stacks side by side: the port checked free is served by the other stack's service (of
    another kind) when ours binds. Its SERVING answer must not pass for ours."""
    from grpc_health.v1.health import HealthServicer

    other = grpc.server(ThreadPoolExecutor(max_workers=2), options=[("grpc.so_reuseport", 0)])
    other_health = HealthServicer()
    other_health.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(other_health, other)
    port = other.add_insecure_port("127.0.0.1:0")
    other.start()
    try:
        _parking_stack_moves_off(port, tmp_path, nats_server, monkeypatch)
    finally:
        other.stop(None)


def test_a_service_that_dies_is_restarted_with_backoff(
    tmp_path: Path, nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from apps.supervision import Backoff, Supervisor

    monkeypatch.setenv("ALMERE_NATS_URL", nats_server.url)
    monkeypatch.setenv("ALMERE_NATS_KEYS_DIR", str(nats_server.keys["parking"].seed_file.parent))
    stack = stack_module.Stack(settings=Settings(data_dir=tmp_path / "data", log_level="WARNING"), services=["parking"])
    stack.start()
    try:
        supervisor = Supervisor(stack=stack, backoff=Backoff(first_s=0.5, max_s=2.0))
        for round_ in (1, 2):
            first = stack.processes["parking"]
            first.kill()
            first.wait()
            events: list[str] = []
            deadline = time.monotonic() + 10
            while not any("restarted" in e for e in events):
                assert time.monotonic() < deadline, events
                events += supervisor.tick(time.monotonic())
                time.sleep(0.05)
            # The second quick failure waits twice as long as the first.
            assert events[0].startswith(f"service parking exited with -9; restart {round_} in {0.5 * round_:g} s")
            assert stack.processes["parking"].pid != first.pid
            stack_module.wait_serving(stack.endpoints["parking"], process=stack.processes["parking"])
    finally:
        stack.stop()
    assert all(p.poll() is not None for p in stack.processes.values())
