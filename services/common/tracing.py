"""Request ids and W3C trace context, carried from gRPC metadata into logs and into the NATS headers
of the events a request causes, so one report can be followed from the caller to every consumer.

A call's `traceparent` (or a new one) is kept in a context variable. Write items capture it when
they are created (they inherit `Traced`); the group committer's handlers `bind` each item while they
build its events, and the outbox stores the header with the event."""

from __future__ import annotations

import contextvars
import os
import random
import re
from dataclasses import dataclass, field

TRACEPARENT = "traceparent"
REQUEST_ID = "x-request-id"
_PATTERN = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")

current_trace: contextvars.ContextVar[str | None] = contextvars.ContextVar("current_trace", default=None)
current_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("current_request_id", default=None)


# Trace, span and request ids need to be unique, not secret: Python's own generator makes them in
# well under a microsecond, the secrets module's read the kernel's random source per id (a system
# call each, three or four per call served).
_ids = random.Random()
os.register_at_fork(after_in_child=_ids.seed)  # a forked child must not repeat its parent's ids


def new_id(nbytes: int) -> str:
    """`nbytes` random bytes in hex, never all zero (W3C trace context forbids all-zero ids)."""
    return f"{_ids.getrandbits(8 * nbytes) or 1:0{2 * nbytes}x}"


def new_uuid4() -> str:
    """A random (version 4) UUID in its usual text form, from the same generator."""
    h = f"{_ids.getrandbits(128) & _UUID4_CLEAR | _UUID4_SET:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_UUID4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48)) & ((1 << 128) - 1)
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)


def new_traceparent(trace_id: str | None = None) -> str:
    return f"00-{trace_id or new_id(16)}-{new_id(8)}-01"


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
