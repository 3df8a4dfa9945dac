"""Structured logs and Prometheus metrics shared by every service."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from logging.handlers import RotatingFileHandler

from prometheus_client import Counter, Gauge, Histogram, start_http_server
from pythonjsonlogger.json import JsonFormatter

from services.common.config import Settings

RPC_REQUESTS = Counter("almere_grpc_requests", "gRPC calls handled", ["service", "method", "code"])
RPC_LATENCY = Histogram(
    "almere_grpc_request_seconds",
    "gRPC call latency (server side)",
    ["service", "method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
OUTBOX_BACKLOG = Gauge("almere_outbox_backlog", "Outbox rows not yet published to JetStream", ["service"])
OUTBOX_PUBLISHED = Counter("almere_outbox_published", "Outbox rows published to JetStream", ["service"])
RETENTION_REMOVED = Counter(
    "almere_retention_removed",
    "Rows the city's retention deleted (steps: compacted into summaries)",
    ["service", "table"],
)
LEADER = Gauge("almere_leader", "1 while this process leads the role among the service's replicas", ["service", "role"])
WATCH_LAG = Gauge("almere_watch_lag", "Changes queued for the slowest Watch stream (its consumer lag)", ["subjects"])
COMMIT_BATCH = Histogram(
    "almere_commit_batch_size",
    "Write operations committed together (group commit)",
    ["service"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)


def configure_logging(settings: Settings) -> None:
    """Logs to stderr, or to settings.log_file rotated by size (a process left running for months
    keeps at most log_file_max_bytes x (log_file_backups + 1) of logs)."""
    handler: logging.Handler
    if settings.log_file is None:
        handler = logging.StreamHandler(sys.stderr)
    else:
        settings.log_file.parent.mkdir(parents=True, exist_ok=True)
        handler = RotatingFileHandler(
            settings.log_file, maxBytes=settings.log_file_max_bytes, backupCount=settings.log_file_backups
        )
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())


def serve_metrics(host: str, port: int) -> Callable[[], None] | None:
    """Expose /metrics on host:port (not when port is 0); returns how to stop it."""
    if not port:
        return None
    server, _ = start_http_server(port, addr=host)
    return server.shutdown
