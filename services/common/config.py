"""Configuration from environment variables (prefix ALMERE_), with defaults for one machine."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from contract.bus import DEFAULT_LIMITS

DEFAULT_PORTS = {
    "parking": 50051,
    "incidents": 50052,
    "signals": 50053,
    "optimizer": 50054,
    "whatif": 50055,
    "partners": 50056,
    "counters": 50057,
    "gateway": 8080,
}


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
    # This process's bus identity (see contract.bus_access): an NKey seed file, or the seed inline
    # (from a Kubernetes Secret), or a user and password the server's configuration holds hashed.
    nats_nkey_seed_file: Path | None = None
    nats_nkey_seed: str | None = None
    nats_user: str | None = None
    nats_password: str | None = None
    tokens_file: Path | None = None
    # The tokens file's JSON content, for a Kubernetes Secret exposed as an environment variable.
    tokens: str | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    # The CA that signed the services' certificates, which clients check the server against
    # (default: the system's roots). Every client channel uses TLS when this process serves TLS
    # or this is set; tls_server_name overrides the name checked (an address by IP, a test CA).
    tls_ca_file: Path | None = None
    tls_server_name: str | None = None
    # Mutual TLS: the CA whose certificates callers must present (servers refuse any other caller
    # before a call starts); channels to other services present this process's own certificate.
    tls_client_ca_file: Path | None = None
    # OAuth2/OIDC bearer tokens from the city's identity provider, accepted beside the tokens file
    # when oidc_issuer is set (see services/common/oidc.py): the audience the tokens must name, the
    # JWKS address (default: from the issuer's discovery document), the claims holding the role
    # (`operator:garage-a`, or `operator` with the id in the subject claim), the provider's CA.
    oidc_issuer: str | None = None
    oidc_audience: str | None = None
    oidc_jwks_url: str | None = None
    oidc_role_claim: str = "almere_role"
    oidc_subject_claim: str = "almere_subject"
    oidc_ca_file: Path | None = None
    metrics_port: int = 0
    log_level: str = "INFO"
    log_format: str = "json"
    # Log to this file, rotated by size (max_bytes x backups), instead of stderr.
    log_file: Path | None = None
    log_file_max_bytes: int = 10 * 1024 * 1024
    log_file_backups: int = 5
    # Refused (UNAUTHENTICATED) calls are logged once per this interval, with a count of the rest.
    unauthenticated_log_seconds: float = 10.0
    max_message_bytes: int = 1024 * 1024
    # gRPC serving processes of `almere serve <service>` sharing its port (SO_REUSEPORT), each with
    # its own GIL and group committer, plus one process relaying the outbox to JetStream; 1 runs
    # everything in one process. With more than one, process i serves metrics on metrics_port + i
    # (the relay on metrics_port + serve_processes) and logs to <log_file stem>-serve-<i> (-relay).
    # Meant for the parking service's ingest: every serving process runs what a service mounts, so
    # services with scheduled work or durable consumers (incidents, signals, optimizer) keep 1.
    serve_processes: int = Field(default=1, ge=1, le=64)
    grace_seconds: float = 5.0
    # Connection limits of the gRPC server. The server pings a connection silent for keepalive_seconds
    # and drops it without an answer in keepalive_timeout_seconds (a dead peer holds no Watch); it
    # closes connections idle (no call) that long, and, to spread load over new replicas, any older
    # than max_connection_age_seconds after letting its calls run for the grace (longer than
    # watch_max_seconds, so Watches end with their own status). Clients may ping every
    # client_ping_min_seconds at most.
    keepalive_seconds: float = 60.0
    keepalive_timeout_seconds: float = 20.0
    client_ping_min_seconds: float = 10.0
    max_connection_idle_seconds: float = 300.0
    max_connection_age_seconds: float = 3600.0
    max_connection_age_grace_seconds: float = 1860.0
    max_streams_per_connection: int = 256
    # Calls in progress in the whole process; more are refused with RESOURCE_EXHAUSTED.
    max_concurrent_rpcs: int = 2000
    # Watch streams open at once, per caller and in the process; a Watch ends after watch_max_seconds
    # (the caller watches again, maybe on another replica), and one whose reader falls more than
    # watch_queue_size changes behind ends too (memory: at most streams x queue x ~1.3 KB a change,
    # far less as watchers share the changes). Keep the queue above commit_max_batch: the changes
    # of one commit arrive at once.
    watch_max_per_caller: int = 64
    watch_max_total: int = 1000
    watch_max_seconds: float = 1800.0
    watch_queue_size: int = 1000
    commit_max_batch: int = 512
    # Writes waiting for the group commit; beyond it a write is refused at once (RESOURCE_EXHAUSTED).
    commit_max_queue: int = 10_000
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
    # The parking and incident services (host:port), which the HTTP gateway reads and feeds.
    parking_address: str | None = None
    incidents_address: str | None = None
    # The partner registry and the counter service (host:port), which the gateway's JSON routes carry.
    partners_address: str | None = None
    counters_address: str | None = None
    # The gateway's operator feeds to poll (a JSON file, see docs/gateway.md).
    gateway_feeds_file: Path | None = None
    # Requests one client may make to the gateway, in `limits` notation: a caller the services know
    # (the dashboard loads a city's lights in a burst), and anybody else by address.
    gateway_caller_rate_limit: str = "6000/minute"
    gateway_rate_limit: str = "600/minute"
    # Finished simulation runs whose reports (report.md and its plots) the dashboard links to.
    gateway_reports_dir: Path | None = None
    # Where readers reach the gateway (e.g. https://verkeer.almere.nl behind an Ingress), for the
    # links in feeds (SPDP index, Atom); default: the address each request came to.
    gateway_public_url: str | None = None
    # How long public feeds may be cached by their readers (Cache-Control max-age), and are kept by
    # the gateway before it asks the services again.
    gateway_feed_max_age_seconds: int = 15
    # Server-Sent Event streams open at once in the gateway (each holds a Watch at a service).
    gateway_max_watches: int = 500
    # The most facilities or incidents one feed document holds (it pages through the services).
    gateway_max_items: int = 10_000
    # Largest request body the gateway accepts (a pushed feed document).
    gateway_max_body_bytes: int = 5 * 1024 * 1024
    # This service's own bearer token for calling other services (the optimizer's, role optimizer);
    # from a secret, never from the repository.
    service_token: str | None = None
    # How often scheduled work (planned closures, scheduled plan activations) is checked.
    scheduler_poll_seconds: float = 1.0
    # How often history older than partners' agreements allow (retention_days) is deleted.
    retention_check_seconds: float = Field(default=3600.0, gt=0)
    # Cycle lengths a signal plan may have.
    signal_cycle_min_seconds: float = 30.0
    signal_cycle_max_seconds: float = 180.0
    # SUMO runs a what-if worker simulates at once (each its own process); 0: one per core.
    whatif_worker_processes: int = Field(default=0, ge=0, le=64)
    # The what-if service (host:port), for its clients (control room, demo).
    whatif_address: str | None = None
    # The scenario a what-if's live-picture start names when no twin state was taken with it.
    whatif_scenario: str = "almere-centrum"
    # Where the what-if service writes its reports (whatif/<id>/report.md and plots); default:
    # gateway_reports_dir, so the dashboard links to them; neither set: no report.
    whatif_reports_dir: Path | None = None
    # How long CreateWhatIf waits for the twin's saved state (TWIN_STATE_REQUEST).
    whatif_twin_timeout_seconds: float = Field(default=10.0, gt=0)

    def port_for(self, service: str) -> int:
        return self.port if self.port is not None else DEFAULT_PORTS[service]

    def database_url_for(self, service: str) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / f'{service}.db').resolve()}"

    @cached_property
    def tls_enabled(self) -> bool:
        return self.tls_cert_file is not None and self.tls_key_file is not None
