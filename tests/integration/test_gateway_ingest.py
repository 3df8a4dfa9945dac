"""Operators' feeds into the parking service: a real HTTP server on loopback serves the recorded SPDP
and DATEX II payloads (with fresh times), a FeedPoller reads them and reports as the operator to the
real parking service (with NATS and its database), and the service's reads show the result."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import pytest
from almere.parking.v1 import parking_pb2 as pb
from almere.parking.v1 import parking_pb2_grpc
from lxml import etree
from prometheus_client import REGISTRY

from services.gateway.ingest.poller import FeedConfig, FeedPoller, Outcome
from services.gateway.ingest.readers import PRK
from tests.integration.helpers import Parking

FEEDS = Path(__file__).parents[1] / "fixtures" / "feeds"
SPDP_ID = "7b4c1c3e-2f4a-4d1e-9a52-0c7e5f1d2a61"  # the recorded SPDP facility: 600 spaces
BOTH = {"ALM-P01-FORUM": "forum", "ALM-P02-SCHOUWBURG": "schouwburg"}  # the recorded DATEX II facilities
HUGE = 50 * 1024 * 1024
LAST_MODIFIED = "Thu, 09 Oct 2025 08:12:00 GMT"
BILLION_LAUGHS = (FEEDS / "billion-laughs.xml").read_bytes()  # entity expansion: 10^9 "lol"s


def now() -> datetime:
    """Now in whole seconds: SPDP states times in epoch seconds."""
    return datetime.now(UTC).replace(microsecond=0)


def spdp(*, vacant: int, at: datetime, **status: Any) -> bytes:
    """The recorded SPDP document with these counts and time (a status field given as None is left out)."""
    document = json.loads((FEEDS / "spdp-dynamic.json").read_text())
    actual = document["parkingFacilityDynamicInformation"]["facilityActualStatus"]
    actual.update(vacantSpaces=vacant, lastUpdated=int(at.timestamp()), **status)
    for key in [k for k, v in actual.items() if v is None]:
        del actual[key]
    return json.dumps(document).encode()


def datex(*, at: datetime, forum: int, schouwburg_vacant: int | None = None) -> bytes:
    """The recorded DATEX II publication measured at `at`, with ALM-P01-FORUM (650 spaces) at this
    count and ALM-P02-SCHOUWBURG (380 spaces) with these free spaces, or left out."""
    root = etree.fromstring((FEEDS / "datex2-parking-status.xml").read_bytes())
    first, second = root.iter(f"{{{PRK}}}parkingRecordStatus")
    for record in (first, second):
        record.find(f"{{{PRK}}}parkingStatusOriginTime").text = at.isoformat()
    first.find(f".//{{{PRK}}}parkingNumberOfOccupiedSpaces").text = str(forum)
    first.find(f".//{{{PRK}}}parkingNumberOfVacantSpaces").text = str(max(0, 650 - forum))
    if schouwburg_vacant is None:
        second.getparent().remove(second)
    else:
        second.find(f".//{{{PRK}}}parkingNumberOfVacantSpaces").text = str(schouwburg_vacant)
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


def external_entity(body: bytes) -> bytes:
    """A DATEX II document that would read /etc/passwd into the publication, were entities resolved."""
    declaration, rest = body.split(b"?>", 1)
    doctype = b'\n<!DOCTYPE mc:messageContainer [<!ENTITY secret SYSTEM "file:///etc/passwd">]>'
    return declaration + b"?>" + doctype + rest.replace(b"NL-ALMERE-PARKEREN", b"&secret;")


@dataclass
class Served:
    """What the feed server answers: a document (with ETag and Last-Modified when conditional), an
    HTTP status, or `huge` bytes streamed (chunked, or with a Content-Length when declared)."""

    body: bytes = b""
    status: int = 200
    conditional: bool = True
    huge: int = 0
    declare_length: bool = False
    delay_s: float = 0.0


@dataclass
class FeedServer:
    """An operator's feed: a real HTTP server on 127.0.0.1 in a thread of its own."""

    served: Served = field(default_factory=Served)
    requests: list[dict[str, str]] = field(default_factory=list)
    sent: int = 0  # bytes of a huge body written before the client hung up
    huge_done: threading.Event = field(default_factory=threading.Event)
    url: str = ""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_GET(self) -> None:
        feed = self.server.feed
        served = feed.served
        feed.requests.append(dict(self.headers))
        time.sleep(served.delay_s)
        if served.huge:
            self._huge(feed, served)
            return
        etag = f'"{hashlib.sha256(served.body).hexdigest()[:16]}"'
        if served.conditional and self.headers.get("If-None-Match") == etag:
            self.send_response(304)
            self.send_header("ETag", etag)
            self.end_headers()
            return
        self.send_response(served.status)
        self.send_header("Content-Length", str(len(served.body)))
        if served.conditional:
            self.send_header("ETag", etag)
            self.send_header("Last-Modified", LAST_MODIFIED)
        self.end_headers()
        self.wfile.write(served.body)

    def _huge(self, feed: FeedServer, served: Served) -> None:
        self.close_connection = True
        self.send_response(200)
        self.send_header(
            *(("Content-Length", str(served.huge)) if served.declare_length else ("Transfer-Encoding", "chunked"))
        )
        self.end_headers()
        chunk = b"<" * 65536  # never read to the end: it would be refused as malformed, not too large
        try:
            while feed.sent < served.huge:
                self.wfile.write(chunk if served.declare_length else b"%x\r\n%s\r\n" % (len(chunk), chunk))
                feed.sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            feed.huge_done.set()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test asserts on what was requested."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    feed: FeedServer


@pytest.fixture
def feed_server() -> Iterator[FeedServer]:
    server = _Server(("127.0.0.1", 0), _Handler)
    server.feed = FeedServer(url=f"http://127.0.0.1:{server.server_address[1]}/parking/status")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.feed
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
async def make_poller(parking: str, tokens: dict[str, str]) -> AsyncIterator[Callable[..., FeedPoller]]:
    """Makes pollers reporting as the operator (role operator:op-a, the owner of the test facilities)
    over one channel to the parking service; each feed has a name of its own (its metrics' label)."""
    async with grpc.aio.insecure_channel(parking) as channel:
        stub = parking_pb2_grpc.ParkingServiceStub(channel)
        pollers: list[FeedPoller] = []

        def make(**overrides: Any) -> FeedPoller:
            settings: dict[str, Any] = {
                "name": f"feed-{uuid.uuid4().hex[:8]}",
                "format": "spdp",
                "operator_token": tokens["operator"],
                "facilities": {SPDP_ID: "stadhuisplein"},
                "timeout_s": 5.0,
                **overrides,
            }
            poller = FeedPoller(config=FeedConfig(**settings), parking=stub)
            pollers.append(poller)
            return poller

        yield make
        for poller in pollers:
            await poller.stop()


async def occupancy(client: Parking, facility: str) -> pb.Occupancy:
    reply = await client.as_("engineer").GetOccupancy(pb.GetOccupancyRequest(facility=f"facilities/{facility}"))
    current: pb.Occupancy = reply.occupancy
    return current


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def warnings_of(caplog: pytest.LogCaptureFixture, feed: str) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and f"feed {feed}:" in r.getMessage()
    ]


async def test_an_spdp_feed_flows_in_once_and_in_order(
    client: Parking, feed_server: FeedServer, make_poller: Callable[..., FeedPoller]
) -> None:
    await client.create("stadhuisplein", capacity=600)
    poller = make_poller(url=feed_server.url, interval_s=30)
    measured = now() - timedelta(seconds=5)
    feed_server.served = Served(body=spdp(vacant=232, at=measured))
    report = await poller.poll_once()
    assert (report.outcome, report.reports) == (Outcome.OK, {"accepted": 1})
    current = await occupancy(client, "stadhuisplein")
    assert (current.occupied_spaces, current.free_spaces, current.capacity) == (368, 232, 600)
    assert current.source_time.ToDatetime(tzinfo=UTC) == measured
    assert current.sequence == int(measured.timestamp()) * 1000 and not current.stale
    facility = (
        await client.as_("engineer").GetFacility(pb.GetFacilityRequest(name="facilities/stadhuisplein"))
    ).facility
    assert facility.stale_after.ToTimedelta() == timedelta(seconds=90)  # 3 intervals of 30 s
    version = current.version

    # The same document again: not even downloaded (conditional GET), and reported would change nothing.
    assert (await poller.poll_once()).outcome == Outcome.NOT_MODIFIED
    assert feed_server.requests[-1]["If-None-Match"] and feed_server.requests[-1]["If-Modified-Since"] == LAST_MODIFIED
    feed_server.served = Served(body=spdp(vacant=232, at=measured), conditional=False)
    assert (await poller.poll_once()).reports == {"duplicate": 1}
    assert (await occupancy(client, "stadhuisplein")).version == version

    # An older document (a cache or a replica behind) after the newer one is not applied.
    feed_server.served = Served(body=spdp(vacant=300, at=measured - timedelta(minutes=1)))
    assert (await poller.poll_once()).reports == {"stale": 1}
    after = await occupancy(client, "stadhuisplein")
    assert (after.occupied_spaces, after.version) == (368, version)

    feed_server.served = Served(body=spdp(vacant=100, at=measured + timedelta(seconds=3)))
    assert (await poller.poll_once()).reports == {"accepted": 1}
    assert (await occupancy(client, "stadhuisplein")).occupied_spaces == 500
    assert metric("almere_gateway_feed_reports_total", feed=poller.config.name, outcome="accepted") == 2
    assert metric("almere_gateway_feed_polls_total", feed=poller.config.name, outcome="ok") == 4
    assert metric("almere_gateway_feed_last_success_timestamp_seconds", feed=poller.config.name) >= measured.timestamp()


async def test_a_datex2_feed_flows_in_once_and_in_order(
    client: Parking, feed_server: FeedServer, make_poller: Callable[..., FeedPoller]
) -> None:
    await client.create("forum", capacity=650)
    await client.create("schouwburg", capacity=380)
    poller = make_poller(url=feed_server.url, format="datex2", facilities=BOTH)
    measured = datetime.now(UTC) - timedelta(seconds=5)
    body = datex(at=measured, forum=438, schouwburg_vacant=12)
    feed_server.served = Served(body=body, conditional=False)
    assert (await poller.poll_once()).reports == {"accepted": 2}
    forum, schouwburg = await occupancy(client, "forum"), await occupancy(client, "schouwburg")
    assert (forum.occupied_spaces, schouwburg.occupied_spaces) == (438, 368)
    assert forum.source_time.ToDatetime(tzinfo=UTC) == measured
    assert forum.sequence == (measured - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
    versions = (forum.version, schouwburg.version)

    assert (await poller.poll_once()).reports == {"duplicate": 2}
    feed_server.served = Served(body=datex(at=measured - timedelta(seconds=30), forum=100, schouwburg_vacant=300))
    assert (await poller.poll_once()).reports == {"stale": 2}
    forum, schouwburg = await occupancy(client, "forum"), await occupancy(client, "schouwburg")
    assert (forum.occupied_spaces, schouwburg.occupied_spaces) == (438, 368)
    assert (forum.version, schouwburg.version) == versions


def _bad(name: str, fmt: str, served: Callable[[datetime], Served], reason: str) -> Any:
    return pytest.param(fmt, served, reason, id=name)


BAD_INPUTS = [
    _bad(
        "wrong-namespace",
        "datex2",
        lambda at: Served(body=datex(at=at, forum=500).replace(PRK.encode(), b"http://datex2.eu/schema/2/2_0")),
        "wrong_namespace",
    ),
    _bad(
        "missing-field", "spdp", lambda at: Served(body=spdp(vacant=100, at=at, parkingCapacity=None)), "missing_field"
    ),
    _bad(
        "capacity-below-occupancy",
        "datex2",
        lambda at: Served(body=datex(at=at, forum=700)),  # 700 occupied of the 650 it states
        "over_capacity",
    ),
    _bad("future-time", "spdp", lambda at: Served(body=spdp(vacant=100, at=at + timedelta(minutes=10))), "future_time"),
    _bad("50-mb-chunked", "datex2", lambda at: Served(huge=HUGE), "too_large"),
    _bad("50-mb-content-length", "datex2", lambda at: Served(huge=HUGE, declare_length=True), "too_large"),
    _bad("billion-laughs", "datex2", lambda at: Served(body=BILLION_LAUGHS), "doctype"),
    _bad(
        "external-entity",
        "datex2",
        lambda at: Served(body=external_entity(datex(at=at, forum=500))),
        "doctype",
    ),
]


@pytest.mark.parametrize(("fmt", "bad", "reason"), BAD_INPUTS)
async def test_a_bad_document_is_refused_writes_nothing_and_the_next_good_one_applies(
    client: Parking,
    feed_server: FeedServer,
    make_poller: Callable[..., FeedPoller],
    caplog: pytest.LogCaptureFixture,
    fmt: str,
    bad: Callable[[datetime], Served],
    reason: str,
) -> None:
    caplog.set_level(logging.WARNING, logger="services.gateway.ingest.poller")
    feed_id, facility, capacity = (
        ("ALM-P01-FORUM", "forum", 650) if fmt == "datex2" else (SPDP_ID, "stadhuisplein", 600)
    )
    await client.create(facility, capacity=capacity)
    poller = make_poller(url=feed_server.url, format=fmt, facilities={feed_id: facility})
    first = now() - timedelta(seconds=10)

    def good(at: datetime, count: int) -> bytes:
        return datex(at=at, forum=count) if fmt == "datex2" else spdp(vacant=capacity - count, at=at)

    feed_server.served = Served(body=good(first, 300))
    assert (await poller.poll_once()).outcome == Outcome.OK
    before = await occupancy(client, facility)

    feed_server.served = bad(first + timedelta(seconds=2))
    report = await poller.poll_once()
    assert report.outcome == Outcome.REJECTED and [r.reason for r in report.rejected] == [reason]
    after = await occupancy(client, facility)
    assert (after.occupied_spaces, after.version) == (300, before.version)
    name = poller.config.name
    assert metric("almere_gateway_feed_rejected_total", feed=name, reason=reason) == 1
    assert metric("almere_gateway_feed_polls_total", feed=name, outcome="rejected") == 1
    (line,) = warnings_of(caplog, name)
    assert f": {reason}: " in line and "root:" not in line  # nothing of /etc/passwd
    if feed_server.served.huge:  # refused on its Content-Length, or while streaming, long before the end
        declared = feed_server.served.declare_length
        assert report.rejected[0].message.startswith("Content-Length" if declared else "the body passed")
        assert feed_server.huge_done.wait(10)
        assert feed_server.sent < HUGE // 2

    feed_server.served = Served(body=good(first + timedelta(seconds=4), 320))
    assert (await poller.poll_once()).reports == {"accepted": 1}
    assert (await occupancy(client, facility)).occupied_spaces == 320


async def test_a_document_with_a_bad_record_applies_its_good_ones(
    client: Parking, feed_server: FeedServer, make_poller: Callable[..., FeedPoller], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="services.gateway.ingest.poller")
    await client.create("forum", capacity=650)
    await client.create("schouwburg", capacity=380)
    poller = make_poller(url=feed_server.url, format="datex2", facilities=BOTH)
    feed_server.served = Served(body=datex(at=now(), forum=700, schouwburg_vacant=80))
    report = await poller.poll_once()
    assert (report.outcome, report.reports) == (Outcome.PARTIAL, {"accepted": 1})
    assert [(r.record, r.reason) for r in report.rejected] == [("ALM-P01-FORUM", "over_capacity")]
    assert (await occupancy(client, "schouwburg")).occupied_spaces == 300
    assert (await occupancy(client, "forum")).status == pb.OCCUPANCY_STATUS_UNKNOWN
    (line,) = warnings_of(caplog, poller.config.name)
    assert "record ALM-P01-FORUM rejected: over_capacity: parkingNumberOfOccupiedSpaces 700 exceed" in line


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_no_error_stops_the_poller(
    client: Parking, feed_server: FeedServer, make_poller: Callable[..., FeedPoller], caplog: pytest.LogCaptureFixture
) -> None:
    """HTTP errors, a feed that does not answer in time or at all, and the service refusing a report
    (a facility of another operator, one that does not exist) are each logged and counted; the loop
    goes on and the next good document is applied."""
    caplog.set_level(logging.WARNING, logger="services.gateway.ingest.poller")
    await client.create("stadhuisplein", capacity=600)
    await client.create("forum", capacity=650, operator="op-b")
    poller = make_poller(
        url=feed_server.url,
        interval_s=0.1,
        timeout_s=0.5,
        facilities={SPDP_ID: "stadhuisplein", "other": "forum", "gone": "facilities/nowhere"},
    )
    name = poller.config.name
    outcomes = [
        (Served(status=503), Outcome.HTTP_ERROR),
        (Served(body=spdp(vacant=1, at=now()), delay_s=1.0), Outcome.TIMEOUT),
    ]
    for served, outcome in outcomes:
        feed_server.served = served
        assert (await poller.poll_once()).outcome == outcome
    unreachable = make_poller(url=f"http://127.0.0.1:{free_port()}/feed", timeout_s=0.5)
    assert (await unreachable.poll_once()).outcome == Outcome.UNREACHABLE

    documents = [json.loads(spdp(vacant=100, at=now())) for _ in range(3)]
    for document, feed_id in zip(documents, [SPDP_ID, "other", "gone"], strict=True):
        document["parkingFacilityDynamicInformation"]["identifier"] = feed_id
    feed_server.served = Served(body=json.dumps(documents).encode())
    await poller.start()  # the loop: every 0.1 s
    await asyncio.sleep(0.5)
    assert (await occupancy(client, "stadhuisplein")).occupied_spaces == 500
    reports = {o: metric("almere_gateway_feed_reports_total", feed=name, outcome=o) for o in ("accepted", "duplicate")}
    assert reports["accepted"] == 1 and reports["duplicate"] >= 1  # polled on, though some reports fail
    assert metric("almere_gateway_feed_reports_total", feed=name, outcome="permission_denied") >= 2
    assert metric("almere_gateway_feed_reports_total", feed=name, outcome="not_found") >= 2
    assert metric("almere_gateway_feed_stale_after_updates_total", feed=name, outcome="permission_denied") >= 2
    assert metric("almere_gateway_feed_stale_after_updates_total", feed=name, outcome="ok") == 1
    for failure in ("http_error", "timeout"):
        assert metric("almere_gateway_feed_polls_total", feed=name, outcome=failure) == 1
    lines = warnings_of(caplog, name)
    assert any(": poll failed: http_error: HTTP 503 from" in line for line in lines)
    assert any(": poll failed: timeout: " in line for line in lines)
    assert any("report of other to facilities/forum failed: permission_denied: " in line for line in lines)
    assert any("report of gone to facilities/nowhere failed: not_found: " in line for line in lines)
    assert any(": poll failed: unreachable: " in line for line in warnings_of(caplog, unreachable.config.name))


async def test_a_silent_feed_makes_the_occupancy_stale(
    client: Parking, feed_server: FeedServer, make_poller: Callable[..., FeedPoller]
) -> None:
    """The feed still answers, but with the same document: after 2 intervals its count shows stale
    in every read of the service; a new count makes it current again."""
    await client.create("forum", capacity=650)
    poller = make_poller(
        url=feed_server.url,
        format="datex2",
        facilities={"ALM-P01-FORUM": "forum"},
        interval_s=1.0,
        stale_after_factor=2.0,
    )
    feed_server.served = Served(body=datex(at=datetime.now(UTC), forum=200), conditional=False)
    await poller.start()
    facility = (await client.as_("engineer").GetFacility(pb.GetFacilityRequest(name="facilities/forum"))).facility
    assert facility.stale_after.ToTimedelta() == timedelta(seconds=2)
    started = time.monotonic()
    while (first := await occupancy(client, "forum")).occupied_spaces != 200:
        assert time.monotonic() - started < 3
        await asyncio.sleep(0.05)
    assert not first.stale
    while not (await occupancy(client, "forum")).stale:
        assert time.monotonic() - started < 5
        await asyncio.sleep(0.1)
    listed = await client.as_("police").ListFacilities(pb.ListFacilitiesRequest())
    assert [f.occupancy.stale for f in listed.facilities] == [True]
    assert metric("almere_gateway_feed_reports_total", feed=poller.config.name, outcome="duplicate") >= 1

    feed_server.served = Served(body=datex(at=datetime.now(UTC), forum=210))
    while (await occupancy(client, "forum")).stale:
        assert time.monotonic() - started < 8
        await asyncio.sleep(0.1)
    assert (await occupancy(client, "forum")).occupied_spaces == 210


async def test_a_pushed_document_is_read_and_reported_like_a_polled_one(
    client: Parking, make_poller: Callable[..., FeedPoller]
) -> None:
    await client.create("stadhuisplein", capacity=600)
    poller = make_poller(interval_s=300, max_bytes=4096)  # push-only: no url
    await poller.start()
    facility = (
        await client.as_("engineer").GetFacility(pb.GetFacilityRequest(name="facilities/stadhuisplein"))
    ).facility
    assert facility.stale_after.ToTimedelta() == timedelta(minutes=15)
    body = spdp(vacant=50, at=now())
    assert (await poller.push(body)).reports == {"accepted": 1}
    assert (await poller.push(body)).reports == {"duplicate": 1}
    refused = await poller.push(b"{" * 10)
    assert (refused.outcome, [r.reason for r in refused.rejected]) == (Outcome.REJECTED, ["malformed"])
    too_large = await poller.push(b" " * 4097)
    assert [r.reason for r in too_large.rejected] == ["too_large"]
    assert (await occupancy(client, "stadhuisplein")).occupied_spaces == 550
    name = poller.config.name
    assert metric("almere_gateway_feed_pushes_total", feed=name, outcome="ok") == 2
    assert metric("almere_gateway_feed_pushes_total", feed=name, outcome="rejected") == 2
    with pytest.raises(RuntimeError, match="no url"):
        await poller.poll_once()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": "csv"}, "format 'csv' is not one of ['datex2', 'spdp']"),
        ({"url": "file:///etc/passwd"}, "is not http(s)"),
        ({"interval_s": 0}, "interval_s, max_bytes, timeout_s > 0"),
        ({"max_bytes": -1}, "interval_s, max_bytes, timeout_s > 0"),
        ({"stale_after_factor": 0.5}, "stale_after_factor >= 1"),
        ({"facilities": {"P1": "Garage A"}}, "'Garage A' is not a facility id or facilities/<id>"),
    ],
)
def test_a_feed_config_the_gateway_cannot_use_is_refused_at_once(change: dict[str, Any], message: str) -> None:
    settings: dict[str, Any] = {"name": "city", "format": "spdp", "operator_token": "t", "facilities": {}}
    with pytest.raises(ValueError, match=r"^feed city: ") as refused:
        FeedConfig(**settings | change)
    assert message in str(refused.value)


def test_a_feed_config_names_our_facilities_and_hides_its_token() -> None:
    config = FeedConfig(
        name="city",
        format="datex2",
        operator_token="s3cret",
        facilities={"P1": "garage-a", "P2": "facilities/garage-b"},
    )
    assert [config.facility_name(f) for f in ("P1", "P2", "P3")] == ["facilities/garage-a", "facilities/garage-b", None]
    assert config.stale_after == timedelta(minutes=3) and "s3cret" not in repr(config)


def feeds_file(tmp_path: Path, token: str, **feed: Any) -> Path:
    """A gateway feeds file with one SPDP feed for the stadhuisplein garage, its token in a file."""
    (tmp_path / "operator.token").write_text(token + "\n")
    entry = {
        "name": "stadhuisplein",
        "format": "spdp",
        "facilities": {SPDP_ID: "stadhuisplein"},
        "token_file": str(tmp_path / "operator.token"),
        **feed,
    }
    path = tmp_path / "feeds.json"
    path.write_text(json.dumps({"feeds": [entry]}))
    return path


async def test_the_gateway_polls_the_feeds_its_file_names(
    client: Parking,
    feed_server: FeedServer,
    start_gateway: Callable[..., Any],
    tokens: dict[str, str],
    tmp_path: Path,
) -> None:
    await client.create("stadhuisplein", capacity=600)
    feed_server.served = Served(body=spdp(vacant=200, at=now() - timedelta(seconds=2)))
    path = feeds_file(tmp_path, tokens["operator"], url=feed_server.url, interval_seconds=0.2)
    await start_gateway(gateway_feeds_file=path)
    for _ in range(100):
        if (await occupancy(client, "stadhuisplein")).occupied_spaces == 400:
            break
        await asyncio.sleep(0.05)
    current = await occupancy(client, "stadhuisplein")
    assert (current.occupied_spaces, current.free_spaces) == (400, 200)


async def test_an_operator_pushes_its_feed_through_the_gateway(
    client: Parking, start_gateway: Callable[..., Any], tokens: dict[str, str], tmp_path: Path
) -> None:
    import httpx

    await client.create("stadhuisplein", capacity=600)
    gateway = await start_gateway(
        gateway_feeds_file=feeds_file(tmp_path, tokens["operator"]), gateway_max_body_bytes=4096
    )
    operator = {"Authorization": f"Bearer {tokens['operator']}"}
    async with httpx.AsyncClient(base_url=gateway) as http:
        pushed = await http.post("/api/v1/feeds/stadhuisplein", content=spdp(vacant=100, at=now()), headers=operator)
        assert pushed.status_code == 200 and pushed.json()["reports"] == {"accepted": 1}
        assert (await occupancy(client, "stadhuisplein")).occupied_spaces == 500
        # Another caller, even an engineer, may not speak for the operator's garages.
        engineer = {"Authorization": f"Bearer {tokens['engineer']}"}
        refused = await http.post("/api/v1/feeds/stadhuisplein", content=spdp(vacant=1, at=now()), headers=engineer)
        assert refused.status_code == 403 and "operator" in refused.json()["detail"]
        unknown = await http.post("/api/v1/feeds/nobody", content=b"{}", headers=operator)
        assert unknown.status_code == 404
        bad = await http.post(
            "/api/v1/feeds/stadhuisplein", content=spdp(vacant=700, at=now() + timedelta(seconds=1)), headers=operator
        )
        assert bad.status_code == 422 and bad.json()["rejected"][0]["reason"] == "over_capacity"
        huge = await http.post("/api/v1/feeds/stadhuisplein", content=b" " * 5000, headers=operator)
        assert huge.status_code == 413

        async def endless() -> AsyncIterator[bytes]:  # chunked, no Content-Length to refuse it by
            for _ in range(1000):
                yield b" " * 1024

        streamed = await http.post("/api/v1/feeds/stadhuisplein", content=endless(), headers=operator)
        assert streamed.status_code == 413 and "passed 4096 bytes" in streamed.json()["detail"]
        assert (await occupancy(client, "stadhuisplein")).occupied_spaces == 500  # nothing of the refused ones


async def test_a_feed_opens_and_closes_its_facility_and_reports_another_capacity(
    client: Parking, feed_server: FeedServer, make_poller: Callable[..., FeedPoller]
) -> None:
    await client.create("stadhuisplein", capacity=600)
    poller = make_poller(url=feed_server.url)
    measured = now() - timedelta(seconds=30)
    feed_server.served = Served(body=spdp(vacant=600, at=measured, open=False))
    await poller.poll_once()
    assert (await occupancy(client, "stadhuisplein")).status == pb.OCCUPANCY_STATUS_CLOSED
    feed_server.served = Served(body=spdp(vacant=200, at=measured + timedelta(seconds=10), open=True))
    await poller.poll_once()
    reopened = await occupancy(client, "stadhuisplein")
    assert reopened.status == pb.OCCUPANCY_STATUS_SPACES_AVAILABLE and reopened.occupied_spaces == 400
    feed_server.served = Served(
        body=spdp(vacant=200, at=measured + timedelta(seconds=20), parkingCapacity=650), conditional=False
    )
    await poller.poll_once()
    assert metric("almere_gateway_feed_capacity_mismatches_total", feed=poller.config.name) == 1
    assert (await occupancy(client, "stadhuisplein")).capacity == 600  # the register stays the city's
