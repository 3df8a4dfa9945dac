"""Request ids and trace context from gRPC metadata to logs and NATS headers; Prometheus metrics."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Awaitable, Callable

import grpc
import nats
import pytest
from almere.parking.v1 import parking_pb2 as pb

from apps.natsd import NatsServer
from apps.stack import free_port
from services.parking.service import SPEC
from tests.integration.helpers import Parking, ts

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_trace_context_flows_from_the_call_to_the_event_headers(
    start_service: Callable[..., Awaitable[str]], tokens: dict[str, str], nats_server: NatsServer
) -> None:
    address = await start_service(SPEC)
    async with grpc.aio.insecure_channel(address) as channel:
        client = Parking(channel, tokens)
        await client.create("garage-a")
        call = client.stub.ReportOccupancy(
            pb.ReportOccupancyRequest(facility="facilities/garage-a", occupied_spaces=7, sequence=1, source_time=ts()),
            metadata=(
                ("authorization", f"Bearer {tokens['operator']}"),
                ("traceparent", TRACEPARENT),
                ("x-request-id", "req-42"),
            ),
        )
        await call
        trailing = dict(await call.trailing_metadata())
    assert trailing["x-request-id"] == "req-42"
    assert trailing["traceparent"].split("-")[1] == TRACE_ID and trailing["traceparent"] != TRACEPARENT
    nc = await nats.connect(nats_server.url, **nats_server.client_options("observer"))
    try:
        sub = await nc.jetstream().pull_subscribe(
            "almere.parking.v1.occupancy_changed.>", durable="trace", stream="PARKING"
        )
        (msg,) = await sub.fetch(1, timeout=5)
    finally:
        await nc.close()
    assert msg.headers is not None and msg.headers["traceparent"].split("-")[1] == TRACE_ID
    assert msg.headers["Nats-Msg-Id"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_metrics_endpoint_counts_calls_and_shows_occupancy(
    start_service: Callable[..., Awaitable[str]], tokens: dict[str, str]
) -> None:
    metrics_port = free_port("127.0.0.1")
    address = await start_service(SPEC, metrics_port=metrics_port)
    async with grpc.aio.insecure_channel(address) as channel:
        client = Parking(channel, tokens)
        await client.create("garage-metrics", capacity=100)
        await client.report("garage-metrics", 42, 1)
        with pytest.raises(grpc.aio.AioRpcError):
            await client.report("garage-metrics", -1, 2)
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    text = (await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read())).decode()
    assert 'almere_parking_occupied_spaces{facility="garage-metrics"} 42.0' in text
    assert 'almere_parking_free_spaces{facility="garage-metrics"} 58.0' in text
    assert 'almere_grpc_requests_total{code="OK",method="ReportOccupancy",service="parking"}' in text
    assert 'almere_grpc_requests_total{code="INVALID_ARGUMENT",method="ReportOccupancy",service="parking"}' in text
    assert "almere_grpc_request_seconds_bucket" in text and "almere_outbox_backlog" in text
