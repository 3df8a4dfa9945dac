"""How the twin reaches the services of a running stack, from what the stack wrote in endpoints.json
(the twin cannot import the services' helpers): gRPC channels with TLS when the stack serves TLS
("tls" names the CA, the server name to check and the certificate to present), plain otherwise;
and the bus's TLS when "tls" says the bus takes it too."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc

from libs.nats_client import tls_options


def open_channel(endpoints: Mapping[str, Any], name: str, options: Sequence[tuple[str, Any]] = ()) -> grpc.Channel:
    """A channel to service `name` of the stack whose endpoints.json is `endpoints`; with the stack's
    certificate presented when it names one (servers requiring client certificates, mutual TLS)."""
    tls = endpoints.get("tls")
    if not tls:
        return grpc.insecure_channel(endpoints[name], options=options)
    roots = Path(tls["ca_file"]).read_bytes() if tls.get("ca_file") else None
    server_name = [("grpc.ssl_target_name_override", tls["server_name"])] if tls.get("server_name") else []
    own: dict[str, bytes] = {}
    if tls.get("cert_file") and tls.get("key_file"):
        own = {
            "private_key": Path(tls["key_file"]).read_bytes(),
            "certificate_chain": Path(tls["cert_file"]).read_bytes(),
        }
    credentials = grpc.ssl_channel_credentials(root_certificates=roots, **own)
    return grpc.secure_channel(endpoints[name], credentials, options=[*options, *server_name])


def bus_tls(endpoints: Mapping[str, Any]) -> dict[str, Any]:
    """nats.connect's TLS arguments for the twin when the stack's bus takes TLS ("tls"."nats"), else
    none."""
    tls = endpoints.get("tls") or {}
    if not tls.get("nats"):
        return {}

    def path(key: str) -> Path | None:
        return Path(tls[key]) if tls.get(key) else None

    return tls_options(
        ca_file=path("ca_file"),
        cert_file=path("cert_file"),
        key_file=path("key_file"),
        server_name=tls.get("server_name"),
    )
