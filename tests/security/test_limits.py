"""Every resource a caller can hold is bounded, and each bound answers with a status that says what
to do: Watch streams per caller and per server, a Watch's lifetime and its reader's lag, the group
commit's queue, calls and streams per connection, connection age; a flood of refused calls is
counted, not logged line by line; a log file is rotated by size."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from almere.parking.v1 import parking_pb2 as pb
from prometheus_client import REGISTRY

from services.common.config import Settings
from services.common.limits import LogThrottle
from services.common.observability import configure_logging
from services.parking.service import SPEC as PARKING
from tests.integration.helpers import Parking

Start = Callable[..., Awaitable[str]]
SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the limits, not the database


def _watch(client: Parking, caller: str, *facilities: str) -> Any:
    names = [f"facilities/{f}" for f in facilities]
    return client.as_(caller).WatchOccupancy(pb.WatchOccupancyRequest(facilities=names))


async def _status(call: Any) -> grpc.aio.AioRpcError:
    """The status a stream ends with, reading (and dropping) what comes before it."""
    with pytest.raises(grpc.aio.AioRpcError) as err:
        while await call.read() is not grpc.aio.EOF:
            pass
    return err.value


@pytest.fixture
async def parking_client(
    start_service: Start, tokens: dict[str, str]
) -> AsyncIterator[Callable[..., Awaitable[Parking]]]:
    """Starts the parking service with the given settings and returns a client with one facility."""
    channels: list[grpc.aio.Channel] = []

    async def start(**overrides: object) -> Parking:
        channel = grpc.aio.insecure_channel(await start_service(PARKING, **overrides))
        channels.append(channel)
        client = Parking(channel, tokens)
        await client.create("garage-a", capacity=10_000)
        return client

    yield start
    for channel in channels:
        await channel.close()


@SQLITE
async def test_watch_streams_are_bounded_per_caller_and_per_server(parking_client: Any) -> None:
    client = await parking_client(watch_max_per_caller=2, watch_max_total=3)
    first, second = _watch(client, "engineer", "garage-a"), _watch(client, "engineer", "garage-a")
    for call in (first, second):
        assert (await call.read()).snapshot  # open on the server
    refused = await _status(_watch(client, "engineer", "garage-a"))
    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert refused.details() == "caller engineer has 2 watch streams open (limit 2); close one first"
    police = _watch(client, "police", "garage-a")
    assert (await police.read()).snapshot  # another caller has slots of its own
    full = await _status(_watch(client, "fire", "garage-a"))
    assert full.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert full.details() == "this server has 3 watch streams open (limit 3); retry with backoff"

    first.cancel()
    deadline = time.monotonic() + 2
    while True:  # the server notices the cancellation a moment later
        again = _watch(client, "engineer", "garage-a")
        try:
            assert (await again.read()).snapshot
            break
        except grpc.aio.AioRpcError as err:
            assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and time.monotonic() < deadline
            await asyncio.sleep(0.05)
    reply = await client.report("garage-a", 5, 1)  # unary calls never count
    assert reply.outcome == pb.REPORT_OUTCOME_ACCEPTED
    for call in (second, police, again):
        call.cancel()


@SQLITE
async def test_a_watch_ends_after_its_lifetime_even_while_busy(parking_client: Any) -> None:
    client = await parking_client(watch_max_seconds=0.6)
    idle, busy = _watch(client, "engineer", "garage-a"), _watch(client, "police", "garage-a")
    started = time.monotonic()
    changes = 0

    async def keep_busy() -> None:
        nonlocal changes
        while True:
            changes += 1
            await client.report("garage-a", changes, changes)

    writer = asyncio.create_task(keep_busy())
    try:
        ended = await asyncio.wait_for(asyncio.gather(_status(idle), _status(busy)), 5)
    finally:
        writer.cancel()
    assert 0.6 <= time.monotonic() - started < 3
    assert changes > 3  # the busy watch had changes to send up to the end
    for status in ended:
        assert status.code() == grpc.StatusCode.UNAVAILABLE
        assert status.details() == "watch lifetime of 0.6 s reached; watch again for a fresh snapshot"
    reopened = _watch(client, "engineer", "garage-a")
    assert (await reopened.read()).snapshot
    reopened.cancel()


@SQLITE
async def test_a_watcher_that_falls_behind_gets_every_change_up_to_a_status_telling_it_to_resync(
    parking_client: Any,
) -> None:
    client = await parking_client(watch_queue_size=8)
    facilities = [f"garage-{n}" for n in range(40)]
    await asyncio.gather(*(client.create(f) for f in facilities))
    call = client.as_("engineer").WatchOccupancy(pb.WatchOccupancyRequest())
    versions: dict[str, list[int]] = {}
    for _ in range(len(facilities) + 1):
        message = await call.read()
        assert message.snapshot
        versions[message.occupancy.facility] = [message.occupancy.version]
    # Each round commits 40 changes together: they arrive at once, more than the watch's queue
    # holds, while its reader does not read.
    for sequence in (1, 2, 3):
        await asyncio.gather(*(client.report(f, sequence, sequence) for f in facilities))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        while True:
            message = await call.read()
            versions[message.occupancy.facility].append(message.occupancy.version)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert err.value.details() == (
        "this watch fell more than 8 changes behind (the reader is too slow); "
        "watch again to resync from a fresh snapshot"
    )
    for seen in versions.values():  # what came before the status has no gap
        assert seen == list(range(seen[0], seen[0] + len(seen)))
    assert sum(len(seen) - 1 for seen in versions.values()) < 3 * len(facilities)
    again = client.as_("engineer").WatchOccupancy(pb.WatchOccupancyRequest(facilities=["facilities/garage-0"]))
    resynced = await again.read()
    assert resynced.snapshot and resynced.occupancy.version == 4  # created, then three reports
    again.cancel()


@SQLITE
async def test_a_full_write_queue_refuses_at_once_and_recovers(parking_client: Any, database_url: str) -> None:
    client = await parking_client(commit_max_queue=3)
    lock = sqlite3.connect(database_url.removeprefix("sqlite:///"), isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")  # the committer's next transaction waits for this one
    try:
        stuck = asyncio.create_task(client.report("garage-a", 1, 1))
        await asyncio.sleep(0.3)  # taken by the committer, which now waits for the lock
        queued = [asyncio.create_task(client.report("garage-a", n, n)) for n in (2, 3, 4)]
        await asyncio.sleep(0.3)
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client.report("garage-a", 99, 5)
        assert time.monotonic() - started < 0.5
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert err.value.details() == "write queue full (3 waiting); retry with backoff"
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    replies = await asyncio.gather(stuck, *queued)
    assert [r.outcome for r in replies] == [pb.REPORT_OUTCOME_ACCEPTED] * 4
    assert (await client.report("garage-a", 6, 6)).outcome == pb.REPORT_OUTCOME_ACCEPTED
    final = await client.as_("engineer").GetOccupancy(pb.GetOccupancyRequest(facility="facilities/garage-a"))
    # Created, then five reports: the refused one (99 spaces) left nothing behind.
    assert (final.occupancy.occupied_spaces, final.occupancy.sequence, final.occupancy.version) == (6, 6, 6)


@SQLITE
async def test_calls_in_progress_are_bounded_in_the_process(parking_client: Any) -> None:
    client = await parking_client(max_concurrent_rpcs=2)
    watches = [_watch(client, "engineer", "garage-a"), _watch(client, "police", "garage-a")]
    for call in watches:
        assert (await call.read()).snapshot
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.report("garage-a", 1, 1)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    watches[0].cancel()
    await asyncio.sleep(0.2)
    assert (await client.report("garage-a", 1, 1)).outcome == pb.REPORT_OUTCOME_ACCEPTED
    watches[1].cancel()


@SQLITE
async def test_streams_per_connection_are_bounded(parking_client: Any, tokens: dict[str, str]) -> None:
    client = await parking_client(max_streams_per_connection=2)
    watches = [_watch(client, "engineer", "garage-a"), _watch(client, "police", "garage-a")]
    for call in watches:
        assert (await call.read()).snapshot
    waiting = asyncio.ensure_future(client.report("garage-a", 1, 1))  # queued by the client for a free stream
    await asyncio.sleep(0.3)
    assert not waiting.done()
    watches[0].cancel()
    assert (await asyncio.wait_for(waiting, 2)).outcome == pb.REPORT_OUTCOME_ACCEPTED
    watches[1].cancel()


@SQLITE
async def test_old_connections_are_closed_after_their_grace(parking_client: Any) -> None:
    client = await parking_client(max_connection_age_seconds=0.3, max_connection_age_grace_seconds=0.3)
    call = _watch(client, "engineer", "garage-a")
    assert (await call.read()).snapshot
    started = time.monotonic()
    status = await asyncio.wait_for(_status(call), 5)
    assert status.code() == grpc.StatusCode.UNAVAILABLE and time.monotonic() - started < 3
    assert (await client.report("garage-a", 1, 1)).outcome == pb.REPORT_OUTCOME_ACCEPTED  # on a new connection


def _requests(code: str) -> float:
    labels = {"service": "parking", "method": "GetOccupancy", "code": code}
    return REGISTRY.get_sample_value("almere_grpc_requests_total", labels) or 0.0


@SQLITE
async def test_refused_calls_are_counted_each_and_logged_once_per_interval(
    start_service: Start, tokens: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    async with grpc.aio.insecure_channel(await start_service(PARKING, unauthenticated_log_seconds=60)) as channel:
        raw = channel.unary_unary(
            "/almere.parking.v1.ParkingService/GetOccupancy",
            request_serializer=lambda b: b,
            response_deserializer=pb.GetOccupancyResponse.FromString,
        )
        await _flood(raw, tokens, caplog)


async def _flood(raw: Any, tokens: dict[str, str], caplog: pytest.LogCaptureFixture) -> None:
    garbage = b"\xff\xff\xff not a message"
    before = _requests("UNAUTHENTICATED"), _requests("INVALID_ARGUMENT")
    caplog.set_level(logging.INFO, logger="almere.access")
    calls = [raw(garbage) for _ in range(100)]
    calls += [raw(garbage, metadata=(("authorization", "Bearer not-a-token"),)) for _ in range(100)]
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert {(r.code(), r.details()) for r in results} == {  # type: ignore[union-attr]
        (grpc.StatusCode.UNAUTHENTICATED, "missing or invalid 'authorization: Bearer <token>' metadata")
    }
    with pytest.raises(grpc.aio.AioRpcError) as err:  # a caller's garbage is its mistake, not ours
        await raw(garbage, metadata=(("authorization", f"Bearer {tokens['engineer']}"),))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == "the request is not a valid message of this method"
    assert (_requests("UNAUTHENTICATED") - before[0], _requests("INVALID_ARGUMENT") - before[1]) == (200, 1)
    refusals = {getattr(r, "reason", None): r for r in caplog.records if getattr(r, "code", None) == "UNAUTHENTICATED"}
    assert len([r for r in caplog.records if getattr(r, "code", None) == "UNAUTHENTICATED"]) == 2
    assert {reason: r.levelname for reason, r in refusals.items()} == {"missing": "WARNING", "unknown": "WARNING"}
    assert refusals["missing"].getMessage() == (
        "refused a call of /almere.parking.v1.ParkingService/GetOccupancy with no token "
        "(0 more since the last such line)"
    )
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # no traceback per garbage call


def test_log_throttle_reports_what_it_suppressed(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    throttle = LogThrottle(logging.getLogger("test.throttle"), 10, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="test.throttle"):
        logged = [throttle.warning("missing", "refused %s", "a", extra={}) for _ in range(50)]
        logged.append(throttle.warning("expired", "refused %s", "b", extra={}))  # another kind has its own interval
        now[0] = 9.9
        logged.append(throttle.warning("missing", "refused %s", "c", extra={}))
        now[0] = 10.0
        logged.append(throttle.warning("missing", "refused %s", "d", extra={}))
    assert logged == [True] + [False] * 49 + [True, False, True]
    assert [(r.getMessage(), r.suppressed) for r in caplog.records] == [  # type: ignore[attr-defined]
        ("refused a (0 more since the last such line)", 0),
        ("refused b (0 more since the last such line)", 0),
        ("refused d (50 more since the last such line)", 50),
    ]


def test_a_log_file_is_rotated_by_size(tmp_path: Path) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    path = tmp_path / "logs" / "parking.log"
    try:
        configure_logging(Settings(log_file=path, log_file_max_bytes=2000, log_file_backups=2, log_format="json"))
        for n in range(500):
            logging.getLogger("test.rotation").info("line %d", n)
        for handler in root.handlers:
            handler.close()
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    assert sorted(p.name for p in path.parent.iterdir()) == ["parking.log", "parking.log.1", "parking.log.2"]
    assert all(p.stat().st_size <= 2000 for p in path.parent.iterdir())
    assert json.loads(path.read_text().splitlines()[-1])["message"] == "line 499"
