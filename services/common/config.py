"""Configuration from environment variables (prefix ALMERE_), with defaults for one machine."""

from __future__ import annotations

import re
import socket
from functools import cached_property
from pathlib import Path

from pydantic import Field, model_validator
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
    # TLS to NATS (nats_url may name a cluster's servers, comma-separated): nats-server's
    # certificate checked against nats_tls_ca_file (default tls_ca_file, else the system's roots)
    # under nats_tls_server_name (default tls_server_name, else the URL's host); this process's
    # tls_cert_file and tls_key_file go along, for a nats-server that verifies clients (mutual TLS).
    nats_tls: bool = False
    nats_tls_ca_file: Path | None = None
    nats_tls_server_name: str | None = None
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
    # Meant for the parking service's ingest. Every serving process runs what a service mounts; its
    # scheduled work runs on the one leading the schedulers. The optimizer keeps 1: its durable
    # consumers are named after the replica, and its processes would split them.
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
    # How often scheduled work (planned closures, scheduled plan activations, adaptive leases) is checked.
    scheduler_poll_seconds: float = 1.0
    # Leader election among a service's replicas (services/common/leader.py): work that must run once
    # (scheduled ticks, retention, the outbox relay) runs on the replica holding the role's lock.
    # Followers try every leader_poll_seconds and the leader confirms its lock as often; a leader
    # that cannot confirm it within a poll steps down, and PostgreSQL frees the lock of a session
    # silent for leader_lease_seconds (a partitioned or frozen leader). Keep the lease above 2 polls.
    leader_poll_seconds: float = Field(default=1.0, gt=0)
    leader_lease_seconds: float = Field(default=5.0, gt=0)
    # This replica's name, for what each replica keeps of its own (the optimizer's durable consumers:
    # optimizer-parking-<replica_id>); default: the host name (a pod's name on Kubernetes).
    replica_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,64}$")
    # How often history older than partners' agreements allow (retention_days) is deleted.
    retention_check_seconds: float = Field(default=3600.0, gt=0)
    # The city's own retention of what grows with every control step, reading and decision (README
    # "Retention"); rounds run every retention_check_seconds, and again at once while a round finds
    # a full batch. Raw adaptive steps: two weeks answers complaints and incident reviews, which
    # come within days; older ones become hourly summaries per intersection.
    retention_steps_days: int = Field(default=14, gt=0)
    # Hourly step summaries, occupancy history: two years, a year-on-year comparison of a season.
    retention_steps_summary_days: int = Field(default=730, gt=0)
    retention_occupancy_history_days: int = Field(default=730, gt=0)
    # Optimizer decisions name vehicles (personal data): no longer than the optimizer recalls them
    # to answer each cause once (optimizer.state.DECISION_MEMORY, 48 h).
    retention_decisions_days: int = Field(default=2, ge=2)
    # Rows one retention round removes at most: it shares a write transaction with control writes.
    retention_batch_rows: int = Field(default=1000, gt=0, le=10_000)
    # A light under adaptive control goes back to its timing plan by itself when the optimizer sends
    # no step or renewal for this long (it renews every third of it): a dead optimizer or a cut
    # link never freezes a light. The optimizer reads it too, to renew in time.
    signal_adaptive_lease_seconds: float = Field(default=24.0, gt=0)
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

    @model_validator(mode="after")
    def _lease_outlasts_two_polls(self) -> Settings:
        """A leader steps down at most two polls after its link fails; the database must not free its
        lock (and let another lead) before."""
        if self.leader_lease_seconds <= 2 * self.leader_poll_seconds:
            raise ValueError(
                f"leader_lease_seconds ({self.leader_lease_seconds}) must exceed two leader_poll_seconds"
                f" ({self.leader_poll_seconds})"
            )
        return self

    def port_for(self, service: str) -> int:
        return self.port if self.port is not None else DEFAULT_PORTS[service]

    def database_url_for(self, service: str) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / f'{service}.db').resolve()}"

    @cached_property
    def replica(self) -> str:
        """replica_id, or the host name as a NATS consumer name may spell it."""
        return self.replica_id or re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())[:64]

    @cached_property
    def tls_enabled(self) -> bool:
        return self.tls_cert_file is not None and self.tls_key_file is not None
