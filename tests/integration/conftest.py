from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from tests.integration.helpers import Parking


@pytest.fixture
async def client(parking: str, tokens: dict[str, str]) -> AsyncIterator[Parking]:
    async with grpc.aio.insecure_channel(parking) as channel:
        yield Parking(channel, tokens)
