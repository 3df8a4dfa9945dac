"""Demo scene 1: a garage operator's system fills a garage while an engineer's watcher prints the
occupancy stream and the status going almostFull -> full; then guidance skips the full garage."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta

import grpc
from almere.parking.v1 import parking_pb2 as pb
from almere.parking.v1 import parking_pb2_grpc
from almere.type.v1 import geo_pb2
from google.protobuf.duration_pb2 import Duration

from services.common.clock import to_timestamp, utcnow

# Schematic facilities around Almere Centrum station (52.375 N, 5.218 E).
GARAGE = "garage-stadhuisplein"
FACILITIES = [
    (GARAGE, "Parkeergarage Stadhuisplein", pb.FACILITY_KIND_GARAGE, 100, 52.3718, 5.2205),
    ("garage-flevo", "Parkeergarage Flevo", pb.FACILITY_KIND_GARAGE, 400, 52.3752, 5.2153),
    ("pr-poort", "P+R Almere Poort", pb.FACILITY_KIND_PARK_AND_RIDE, 300, 52.3432, 5.1556),
]
DESTINATION = geo_pb2.LatLng(latitude=52.3722, longitude=5.2210)  # the town hall square
STATUS = {v: n.removeprefix("OCCUPANCY_STATUS_") for n, v in pb.OccupancyStatus.items()}


def _auth(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


async def _setup(stub: parking_pb2_grpc.ParkingServiceAsyncStub, engineer: str) -> None:
    for facility_id, name, kind, capacity, lat, lng in FACILITIES:
        facility = pb.Facility(
            display_name=name,
            kind=kind,
            operator_id="demo-operator",
            capacity=capacity,
            location=geo_pb2.LatLng(latitude=lat, longitude=lng),
            entrance_edge_ids=[f"{facility_id}-in"],
        )
        await stub.CreateFacility(
            pb.CreateFacilityRequest(facility_id=facility_id, facility=facility), metadata=_auth(engineer)
        )


async def _watch(stub: parking_pb2_grpc.ParkingServiceAsyncStub, token: str, say: Callable[[str], None]) -> list[str]:
    statuses: list[str] = []
    call = stub.WatchOccupancy(pb.WatchOccupancyRequest(facilities=[f"facilities/{GARAGE}"]), metadata=_auth(token))
    try:
        async for change in call:
            o = change.occupancy
            status = STATUS[o.status]
            if not statuses or statuses[-1] != status:
                statuses.append(status)
            kind = "snapshot" if change.snapshot else "change  "
            bar = "#" * (o.occupied_spaces // 4)
            say(f"[watch {kind}] v{o.version:<4} {o.occupied_spaces:>3}/{o.capacity} {status:<16} {bar}")
    except asyncio.CancelledError:
        call.cancel()
    return statuses


async def _fill(stub: parking_pb2_grpc.ParkingServiceAsyncStub, operator: str, say: Callable[[str], None]) -> None:
    """The operator's counter: arrivals push the garage to full, then a few cars leave."""
    counts = [*range(0, 101, 5), 100, 99, 98, 96, 94, 90, 86, 80]
    for sequence, count in enumerate(counts, start=1):
        reply = await stub.ReportOccupancy(
            pb.ReportOccupancyRequest(
                facility=f"facilities/{GARAGE}",
                occupied_spaces=count,
                source_time=to_timestamp(utcnow()),
                sequence=sequence,
            ),
            metadata=_auth(operator),
        )
        if reply.outcome != pb.REPORT_OUTCOME_ACCEPTED:
            say(f"[operator] report {sequence}: {pb.ReportOutcome.Name(reply.outcome)} {reply.detail}")
        await asyncio.sleep(0.1)
    retry = await stub.ReportOccupancy(
        pb.ReportOccupancyRequest(
            facility=f"facilities/{GARAGE}",
            occupied_spaces=counts[-1],
            source_time=to_timestamp(utcnow()),
            sequence=len(counts),
        ),
        metadata=_auth(operator),
    )
    say(f"[operator] the counter resends report {len(counts)}: {pb.ReportOutcome.Name(retry.outcome)}")


async def play(channel: grpc.aio.Channel, tokens: dict[str, str], say: Callable[[str], None]) -> bool:
    async with channel:
        stub = parking_pb2_grpc.ParkingServiceStub(channel)
        await _setup(stub, tokens["engineer"])
        say(f"[engineer] registered parking facilities {', '.join(f[0] for f in FACILITIES)}")
        start = utcnow()
        watcher = asyncio.create_task(_watch(stub, tokens["engineer"], say))
        await asyncio.sleep(0.5)
        await _fill(stub, tokens["operator"], say)
        await asyncio.sleep(0.5)
        watcher.cancel()
        statuses = await watcher
        say(f"[summary] status sequence of {GARAGE}: {' -> '.join(statuses)}")
        history = await stub.GetOccupancyHistory(
            pb.GetOccupancyHistoryRequest(
                facility=f"facilities/{GARAGE}",
                start_time=to_timestamp(start - timedelta(seconds=1)),
                bucket=Duration(seconds=1),
            ),
            metadata=_auth(tokens["engineer"]),
        )
        means = ", ".join(f"{b.mean_occupied_spaces:.0f}" for b in history.buckets if b.known)
        say(f"[history] mean occupancy per second: {means}")
        advice = await stub.RecommendFacility(
            pb.RecommendFacilityRequest(destination=DESTINATION, max_walk_meters=5000), metadata=_auth(tokens["sim"])
        )
        for r in advice.recommendations:
            o = r.facility.occupancy
            say(
                f"[guidance] {r.facility.display_name:<28} walk {r.walk_meters:5.0f} m  "
                f"free {o.free_spaces:>3}  {STATUS[o.status]}"
            )
        expected = ["SPACES_AVAILABLE", "ALMOST_FULL", "FULL", "ALMOST_FULL"]
        ok = all(s in statuses for s in expected) and statuses.index("ALMOST_FULL") < statuses.index("FULL")
        say(
            "[result] the garage filled: almostFull -> full, and the sign relaxed with hysteresis"
            if ok
            else "[result] UNEXPECTED status sequence"
        )
        return ok
