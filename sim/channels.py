"""Channels from the twin to the services of a running stack: TLS when the stack serves TLS
(endpoints.json's "tls" names the CA and the server name to check), plain otherwise. The twin
cannot import the services' helper, so it reads what the stack wrote."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc


def open_channel(endpoints: Mapping[str, Any], name: str, options: Sequence[tuple[str, Any]] = ()) -> grpc.Channel:
    """A channel to service `name` of the stack whose endpoints.json is `endpoints`."""
    tls = endpoints.get("tls")
    if not tls:
        return grpc.insecure_channel(endpoints[name], options=options)
    roots = Path(tls["ca_file"]).read_bytes() if tls.get("ca_file") else None
    server_name = [("grpc.ssl_target_name_override", tls["server_name"])] if tls.get("server_name") else []
    credentials = grpc.ssl_channel_credentials(root_certificates=roots)
    return grpc.secure_channel(endpoints[name], credentials, options=[*options, *server_name])
