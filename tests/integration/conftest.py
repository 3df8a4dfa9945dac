from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from tests.integration.helpers import Parking


@pytest.fixture
async def client(parking: tuple[object, str], tokens: dict[str, str]) -> AsyncIterator[Parking]:
    _, address = parking
    async with grpc.aio.insecure_channel(address) as channel:
        yield Parking(channel, tokens)
