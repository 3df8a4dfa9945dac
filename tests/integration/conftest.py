from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import pytest
import uvicorn

from services.common.config import Settings
from tests.integration.helpers import Parking


@pytest.fixture
async def client(parking: str, tokens: dict[str, str]) -> AsyncIterator[Parking]:
    async with grpc.aio.insecure_channel(parking) as channel:
        yield Parking(channel, tokens)


@pytest.fixture
async def start_gateway(
    settings: Settings, parking: str, incidents: str, tokens: dict[str, str]
) -> AsyncIterator[Callable[..., Awaitable[str]]]:
    """Starts the HTTP gateway in-process on a free loopback port in front of the real parking and
    incident services, as `almere up` runs it (its own token of role public); returns its base URL."""
    from services.gateway.service import build_app

    running: list[tuple[uvicorn.Server, asyncio.Task[None]]] = []

    async def start(**overrides: object) -> str:
        own = {
            "parking_address": parking,
            "incidents_address": incidents,
            "service_token": tokens["public"],
            "gateway_feed_max_age_seconds": 0,  # every read asks the services: tests see changes at once
        }
        app = build_app(settings.model_copy(update={**own, **overrides}))
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None))
        task = asyncio.create_task(server.serve())
        running.append((server, task))
        while not server.started:
            if task.done():
                task.result()  # raises what stopped it
            await asyncio.sleep(0.01)
        return f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"

    yield start
    for server, task in running:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture
async def gateway(start_gateway: Callable[..., Awaitable[str]]) -> str:
    """The gateway's base URL (http://127.0.0.1:<port>)."""
    return await start_gateway()
