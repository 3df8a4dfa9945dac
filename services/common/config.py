"""Configuration from environment variables (prefix ALMERE_), with defaults for one machine."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from contract.bus import DEFAULT_LIMITS

DEFAULT_PORTS = {"parking": 50051, "incidents": 50052, "signals": 50053, "optimizer": 50054}


class Settings(BaseSettings):
    """Every knob of a service process. See README "Configuration" for the list."""

    model_config = SettingsConfigDict(env_prefix="ALMERE_", frozen=True)

    data_dir: Path = Path("data")
    bind_host: str = "127.0.0.1"
    port: int | None = Field(default=None, description="gRPC port; default by service (parking 50051)")
    # SQLAlchemy URL; default is a SQLite file per service under data_dir. Tables carry the service's
    # prefix, so several services may share one PostgreSQL database.
    database_url: str | None = None
    nats_url: str = "nats://127.0.0.1:4222"
    tokens_file: Path | None = None
    # The tokens file's JSON content, for a Kubernetes Secret exposed as an environment variable.
    tokens: str | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    metrics_port: int = 0
    log_level: str = "INFO"
    log_format: str = "json"
    max_message_bytes: int = 1024 * 1024
    grace_seconds: float = 5.0
    commit_max_batch: int = 512
    stream_max_age_days: float = DEFAULT_LIMITS.max_age_s / 86400
    stream_max_bytes: int = DEFAULT_LIMITS.max_bytes
    stream_max_msg_bytes: int = DEFAULT_LIMITS.max_msg_bytes
    stream_replicas: int = DEFAULT_LIMITS.replicas
    # The SUMO network (.net.xml, geo-referenced) locations are checked and snapped against.
    network_file: Path | None = None
    # The optimizer (host:port), asked for network travel times by the parking service's
    # RecommendFacility; without it facilities are ranked by walking distance only.
    optimizer_address: str | None = None
    # The signal service (host:port), to which the optimizer proposes its adaptive signal steps.
    signals_address: str | None = None
    # This service's own bearer token for calling other services (the optimizer's, role optimizer);
    # from a secret, never from the repository.
    service_token: str | None = None
    # How often scheduled work (planned closures, scheduled plan activations) is checked.
    scheduler_poll_seconds: float = 1.0
    # Cycle lengths a signal plan may have.
    signal_cycle_min_seconds: float = 30.0
    signal_cycle_max_seconds: float = 180.0

    def port_for(self, service: str) -> int:
        return self.port if self.port is not None else DEFAULT_PORTS[service]

    def database_url_for(self, service: str) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / f'{service}.db').resolve()}"

    @cached_property
    def tls_enabled(self) -> bool:
        return self.tls_cert_file is not None and self.tls_key_file is not None
