"""Operators' standard feeds into the parking service: each feed polled (or pushed) and its counts
reported with ReportOccupancy as the operator itself (its own token, role `operator:<id>`), so the
service's ownership checks apply to the feed exactly as to the operator's own system.

The poller keeps no state the service does not: each count goes with sequence = its measurement time
in epoch milliseconds, so the service answers a repeated document DUPLICATE and an older one STALE.
Each mapped facility gets a stale_after of a few intervals, so a feed that falls silent shows as stale
in every read of the service. No error stops the loop: each is logged in one line and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter as Tally
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from urllib.parse import urlsplit, urlunsplit

import grpc
import httpx
from almere.parking.v1 import parking_pb2 as pb
from almere.parking.v1 import parking_pb2_grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask
from prometheus_client import Counter, Gauge

from services.common.clock import to_timestamp, utcnow
from services.common.names import ID_PATTERN
from services.gateway.ingest.readers import READERS, FeedRejected, Reading, Reason

log = logging.getLogger(__name__)

POLLS = Counter("almere_gateway_feed_polls", "Polls of operators' feeds, by outcome", ["feed", "outcome"])
PUSHES = Counter("almere_gateway_feed_pushes", "Documents operators pushed, by outcome", ["feed", "outcome"])
REJECTED = Counter("almere_gateway_feed_rejected", "Feed documents and records refused, by reason", ["feed", "reason"])
REPORTS = Counter(
    "almere_gateway_feed_reports",
    "Counts reported to the parking service, by its outcome (or the gRPC status code)",
    ["feed", "outcome"],
)
STALE_AFTER_UPDATES = Counter(
    "almere_gateway_feed_stale_after_updates",
    "stale_after set on a feed's facilities, by outcome (or the gRPC status code)",
    ["feed", "outcome"],
)
LAST_SUCCESS = Gauge(
    "almere_gateway_feed_last_success_timestamp_seconds",
    "When the feed was last read (polled, pushed, or not modified) without being refused",
    ["feed"],
)

CAPACITY_MISMATCHES = Counter(
    "almere_gateway_feed_capacity_mismatches",
    "Counts whose feed states another capacity than the facility's register",
    ["feed"],
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
REPORTS_IN_FLIGHT = 16


def _shown(url: str) -> str:
    """A feed's address as logs may show it: without a password or a query (API keys live there)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    return urlunsplit((parts.scheme, f"{host}:{parts.port}" if parts.port else host, parts.path, "", ""))


_REPORT_OUTCOMES = {
    pb.REPORT_OUTCOME_ACCEPTED: "accepted",
    pb.REPORT_OUTCOME_DUPLICATE: "duplicate",
    pb.REPORT_OUTCOME_STALE: "stale",
}
# Report outcomes that a retry of the same document would not change.
_SETTLED = frozenset([*_REPORT_OUTCOMES.values(), "unmapped"])
_VALIDATORS = (("If-None-Match", "etag"), ("If-Modified-Since", "last-modified"))


class Outcome(StrEnum):
    """What became of one poll or push."""

    OK = "ok"
    PARTIAL = "partial"  # some records refused or some reports failed; the rest went through
    NOT_MODIFIED = "not_modified"
    REJECTED = "rejected"
    HTTP_ERROR = "http_error"
    TIMEOUT = "timeout"
    UNREACHABLE = "unreachable"
    ERROR = "error"  # a bug of ours, logged with its traceback


_READ = frozenset({Outcome.OK, Outcome.PARTIAL, Outcome.NOT_MODIFIED})


@dataclass(frozen=True, kw_only=True)
class FeedConfig:
    """One operator's feed. `facilities` maps the feed's facility ids to ours (`garage-a` or
    `facilities/garage-a`); records of other facilities are skipped. Without a url the feed is
    push-only."""

    name: str
    format: str  # a key of READERS: "spdp" or "datex2"
    operator_token: str = field(repr=False)
    facilities: Mapping[str, str]
    url: str | None = None
    interval_s: float = 60.0
    # stale_after = interval_s x this: a count not renewed within a few intervals is shown stale.
    stale_after_factor: float = 3.0
    max_bytes: int = 5 * 1024 * 1024
    timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if self.format not in READERS:
            raise ValueError(f"feed {self.name}: format {self.format!r} is not one of {sorted(READERS)}")
        if self.url is not None and not self.url.startswith(("http://", "https://")):
            raise ValueError(f"feed {self.name}: url {self.url!r} is not http(s)")
        if min(self.interval_s, self.max_bytes, self.timeout_s) <= 0 or self.stale_after_factor < 1:
            raise ValueError(f"feed {self.name}: interval_s, max_bytes, timeout_s > 0 and stale_after_factor >= 1")
        for ours in self.facilities.values():
            if not ID_PATTERN.match(ours.removeprefix("facilities/")):
                raise ValueError(f"feed {self.name}: {ours!r} is not a facility id or facilities/<id>")

    @property
    def stale_after(self) -> timedelta:
        return timedelta(seconds=self.interval_s * self.stale_after_factor)

    def facility_name(self, feed_id: str) -> str | None:
        """Our resource name (`facilities/<id>`) of a facility of the feed, None if not mapped."""
        ours = self.facilities.get(feed_id)
        return None if ours is None else f"facilities/{ours.removeprefix('facilities/')}"


@dataclass(frozen=True, kw_only=True)
class IngestReport:
    """What one poll or push did: its outcome, the service's answers counted by outcome (accepted,
    duplicate, stale, unmapped, or a gRPC status code such as unavailable), and what was refused."""

    outcome: Outcome
    reports: Mapping[str, int] = field(default_factory=dict)
    rejected: tuple[FeedRejected, ...] = ()
    detail: str = ""


class _FetchFailed(Exception):
    def __init__(self, outcome: Outcome, message: str) -> None:
        super().__init__(message)
        self.outcome = outcome
        self.message = message


class FeedPoller:
    """Polls one feed every interval_s and reports its counts; `push` does the same for a document
    the operator sent. Pass an aio stub of an open channel (services.common.channels.open_channel)
    and, to share connections between feeds, an httpx client (else it opens its own, closed by stop)."""

    def __init__(
        self,
        *,
        config: FeedConfig,
        parking: parking_pb2_grpc.ParkingServiceAsyncStub,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.config = config
        self._parking = parking
        self._http = http or httpx.AsyncClient()
        self._owns_http = http is None
        self._read = READERS[config.format]
        self._metadata = (("authorization", f"Bearer {config.operator_token}"),)
        # Facilities whose stale_after is not set yet: tried again before every poll and push.
        self._stale_after_pending = {n for f in config.facilities if (n := config.facility_name(f))}
        # Conditional GET headers of the last document whose every count the service answered.
        self._validators: dict[str, str] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Sets stale_after on the feed's facilities, then polls in the background (with a url)."""
        if self._task is not None:
            raise RuntimeError(f"feed {self.config.name} is already running")
        await self.apply_stale_after()
        if self.config.url is not None:
            self._task = asyncio.create_task(self._run(), name=f"feed {self.config.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._owns_http:
            await self._http.aclose()

    async def apply_stale_after(self) -> None:
        """Sets stale_after (interval x factor) on each mapped facility not set yet, so a feed silent
        past it shows stale at the service. The operator may: they are its own facilities."""
        duration = Duration()
        duration.FromTimedelta(self.config.stale_after)
        for name in sorted(self._stale_after_pending):
            request = pb.UpdateFacilityRequest(
                facility=pb.Facility(name=name, stale_after=duration), update_mask=FieldMask(paths=["stale_after"])
            )
            try:
                await self._parking.UpdateFacility(request, metadata=self._metadata, timeout=self.config.timeout_s)
            except grpc.aio.AioRpcError as error:
                code = error.code().name.lower()
                self._warn(f"setting stale_after of {name} failed", code, error.details() or "")
                STALE_AFTER_UPDATES.labels(self.config.name, code).inc()
                continue
            self._stale_after_pending.discard(name)
            STALE_AFTER_UPDATES.labels(self.config.name, "ok").inc()

    async def poll_once(self) -> IngestReport:
        """One poll: fetch (conditionally), read, report. Never raises for the feed's or the
        service's faults; they are in the returned report, the log and the metrics."""
        if self.config.url is None:
            raise RuntimeError(f"feed {self.config.name} has no url to poll")
        await self.apply_stale_after()
        try:
            fetched = await self._fetch(self.config.url)
        except FeedRejected as rejected:
            report = self._refused(rejected)
        except _FetchFailed as failed:
            self._warn("poll failed", failed.outcome, failed.message)
            report = IngestReport(outcome=failed.outcome, detail=failed.message)
        else:
            if fetched is None:
                report = IngestReport(outcome=Outcome.NOT_MODIFIED)
            else:
                body, validators = fetched
                report = await self._ingest(body)
                # A retry of this document would change nothing, unless some count did not get through.
                self._validators = validators if set(report.reports) <= _SETTLED else {}
        self._counted(POLLS, report)
        return report

    async def push(self, body: bytes) -> IngestReport:
        """Reads and reports a document the operator pushed (the gateway's push endpoint calls this);
        refused documents come back as outcome REJECTED with the reason in `rejected`."""
        await self.apply_stale_after()
        if len(body) > self.config.max_bytes:
            report = self._refused(FeedRejected(Reason.TOO_LARGE, f"{len(body)} bytes, over {self.config.max_bytes}"))
        else:
            report = await self._ingest(body)
        self._counted(PUSHES, report)
        return report

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                await self.poll_once()
            except Exception:
                log.exception("feed %s: poll failed unexpectedly", self.config.name)
                POLLS.labels(self.config.name, Outcome.ERROR).inc()
            await asyncio.sleep(max(0.0, self.config.interval_s - (loop.time() - started)))

    async def _fetch(self, url: str) -> tuple[bytes, dict[str, str]] | None:
        """The body and its conditional GET headers, or None when not modified. The body is read in
        chunks and dropped as soon as it passes max_bytes (or its Content-Length says it will)."""
        limit = self.config.max_bytes
        try:
            async with (
                asyncio.timeout(self.config.timeout_s),  # the whole exchange, also a body sent drop by drop
                self._http.stream("GET", url, headers=self._validators, timeout=self.config.timeout_s) as response,
            ):
                if response.status_code == httpx.codes.NOT_MODIFIED:
                    return None
                if response.status_code != httpx.codes.OK:
                    raise _FetchFailed(Outcome.HTTP_ERROR, f"HTTP {response.status_code} from {_shown(url)}")
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > limit:
                    raise FeedRejected(Reason.TOO_LARGE, f"Content-Length {declared} is over {limit} bytes")
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > limit:
                        raise FeedRejected(Reason.TOO_LARGE, f"the body passed {limit} bytes; stopped reading")
                    chunks.append(chunk)
                validators = {ours: v for ours, theirs in _VALIDATORS if (v := response.headers.get(theirs))}
                return b"".join(chunks), validators
        except (TimeoutError, httpx.TimeoutException):
            raise _FetchFailed(
                Outcome.TIMEOUT, f"no complete answer from {_shown(url)} within {self.config.timeout_s} s"
            ) from None
        except httpx.HTTPError as error:
            raise _FetchFailed(Outcome.UNREACHABLE, f"{_shown(url)}: {type(error).__name__}") from None

    async def _ingest(self, body: bytes) -> IngestReport:
        try:  # parsing megabytes of XML would hold up every other request of the gateway
            document = await asyncio.to_thread(self._read, body, now=utcnow())
        except FeedRejected as rejected:
            return self._refused(rejected)
        for record in document.rejected:
            self._warn(f"record {record.record} rejected", record.reason, record.message)
            REJECTED.labels(self.config.name, record.reason).inc()
        reports: Tally[str] = Tally()
        # A few at a time: a large feed's counts arrive in seconds, not one timeout after another.
        sending = asyncio.Semaphore(REPORTS_IN_FLIGHT)

        async def report(reading: Reading) -> str:
            async with sending:
                return await self._report(reading)

        for answer in await asyncio.gather(*(report(r) for r in document.readings)):
            REPORTS.labels(self.config.name, answer).inc()
            reports[answer] += 1
        if document.rejected and not document.readings:
            outcome = Outcome.REJECTED
        elif document.rejected or not set(reports) <= _SETTLED:
            outcome = Outcome.PARTIAL
        else:
            outcome = Outcome.OK
        return IngestReport(outcome=outcome, reports=dict(reports), rejected=document.rejected)

    async def _report(self, reading: Reading) -> str:
        name = self.config.facility_name(reading.facility)
        if name is None:
            log.debug("feed %s: facility %s is not mapped; skipped", self.config.name, reading.facility)
            return "unmapped"
        request = pb.ReportOccupancyRequest(
            facility=name,
            occupied_spaces=reading.occupied,
            source_time=to_timestamp(reading.measured_at),
            sequence=(reading.measured_at - _EPOCH) // timedelta(milliseconds=1),
        )
        try:
            reply = await self._parking.ReportOccupancy(request, metadata=self._metadata, timeout=self.config.timeout_s)
            if reply.outcome != pb.REPORT_OUTCOME_STALE:  # the feed speaks for the facility as it is now
                await self._follow(reading, name, reply.occupancy)
        except grpc.aio.AioRpcError as error:
            code = error.code().name.lower()
            self._warn(f"report of {reading.facility} to {name} failed", code, error.details() or "")
            return code
        return _REPORT_OUTCOMES.get(reply.outcome, "unspecified")

    async def _follow(self, reading: Reading, name: str, occupancy: pb.Occupancy) -> None:
        """What else the feed says of the facility: opened or closed (the operator's to set, so the
        facility follows), and its capacity (ours is the city's register: a difference is reported,
        not taken over)."""
        closed = occupancy.status == pb.OCCUPANCY_STATUS_CLOSED
        if reading.open is not None and reading.open == closed:
            state = pb.FACILITY_STATE_OPEN if reading.open else pb.FACILITY_STATE_CLOSED
            request = pb.UpdateFacilityRequest(
                facility=pb.Facility(name=name, state=state), update_mask=FieldMask(paths=["state"])
            )
            await self._parking.UpdateFacility(request, metadata=self._metadata, timeout=self.config.timeout_s)
            log.info(
                "feed %s: %s is %s, as the feed says", self.config.name, name, "open" if reading.open else "closed"
            )
        if reading.capacity is not None and reading.capacity != occupancy.capacity:
            CAPACITY_MISMATCHES.labels(self.config.name).inc()
            self._warn(
                f"{name} has {occupancy.capacity} spaces in the register",
                "capacity_mismatch",
                f"the feed says {reading.capacity}",
            )

    def _refused(self, rejected: FeedRejected) -> IngestReport:
        self._warn("document rejected", rejected.reason, rejected.message)
        REJECTED.labels(self.config.name, rejected.reason).inc()
        return IngestReport(outcome=Outcome.REJECTED, rejected=(rejected,))

    def _counted(self, counter: Counter, report: IngestReport) -> None:
        counter.labels(self.config.name, report.outcome).inc()
        if report.outcome in _READ:
            LAST_SUCCESS.labels(self.config.name).set_to_current_time()

    def _warn(self, what: str, reason: str, message: str) -> None:
        """The one log line of a fault: feed, what, reason, message."""
        log.warning(
            "feed %s: %s: %s: %s",
            self.config.name,
            what,
            reason,
            message,
            extra={"feed": self.config.name, "reason": reason},
        )
