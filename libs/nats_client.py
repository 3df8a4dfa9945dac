"""What nats.connect needs from plain settings, for the services and the twin alike: the servers of
a cluster from one URL setting, and the TLS context to reach them with."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any


def servers(url: str) -> list[str]:
    """The servers of `url`: one, or a cluster's as `nats://a:4222,nats://b:4222` (nats-py takes a
    list, not such a string; with several it reconnects to the next when one goes away)."""
    found = [part.strip() for part in url.split(",") if part.strip()]
    if not found:
        raise ValueError(f"no NATS server in {url!r}")
    return found


def tls_options(
    *, ca_file: Path | None, cert_file: Path | None, key_file: Path | None, server_name: str | None
) -> dict[str, Any]:
    """nats.connect's TLS arguments: nats-server's certificate checked against `ca_file` (None: the
    system's roots) under `server_name` (None: the URL's host); this process's own certificate goes
    along when it has one, for a server that requires client certificates (mutual TLS)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file) if ca_file else None)
    if cert_file and key_file:
        context.load_cert_chain(cert_file, key_file)
    return {"tls": context, **({"tls_hostname": server_name} if server_name else {})}
