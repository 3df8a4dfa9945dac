"""Request ids and W3C trace context, carried from gRPC metadata into logs and into the NATS headers
of the events a request causes, so one report can be followed from the caller to every consumer.

A call's `traceparent` (or a new one) is kept in a context variable. Write items capture it when
they are created (they inherit `Traced`); the group committer's handlers `bind` each item while they
build its events, and the outbox stores the header with the event."""

from __future__ import annotations

import contextvars
import re
import secrets
from dataclasses import dataclass, field

TRACEPARENT = "traceparent"
REQUEST_ID = "x-request-id"
_PATTERN = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")

current_trace: contextvars.ContextVar[str | None] = contextvars.ContextVar("current_trace", default=None)
current_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("current_request_id", default=None)


def new_traceparent(trace_id: str | None = None) -> str:
    return f"00-{trace_id or secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def trace_id(traceparent: str | None) -> str | None:
    match = _PATTERN.match(traceparent or "")
    return match[1] if match else None


def continue_trace(incoming: str | None) -> str:
    """A traceparent for this hop: same trace as the caller's (if valid), new span."""
    return new_traceparent(trace_id(incoming))


def current() -> str | None:
    return current_trace.get()


@dataclass(frozen=True, kw_only=True)
class Traced:
    """Base of write items: remembers the trace of the call that created the item."""

    trace: str | None = field(default_factory=current)


def bind(item: object) -> None:
    """Make `item`'s trace the current one while its events are built (in the writer thread)."""
    current_trace.set(getattr(item, "trace", None))


def outgoing_headers() -> dict[str, str]:
    """Headers for an event caused by the current call (a new trace when there is none)."""
    return {TRACEPARENT: continue_trace(current_trace.get())}
