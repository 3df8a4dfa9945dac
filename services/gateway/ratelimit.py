"""Per-client rate limits: each caller (its bearer token, else its address) gets `gateway_rate_limit`
requests in a moving window, then 429 with Retry-After. Health and metrics are not limited, so a
probe never fails for a busy client's sake."""

from __future__ import annotations

import hashlib
import math
import time

from limits import parse
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter
from starlette.types import ASGIApp, Receive, Scope, Send

from services.gateway.problems import problem

UNLIMITED = ("/healthz", "/readyz", "/metrics")


class RateLimit:
    def __init__(self, app: ASGIApp, *, limit: str) -> None:
        self.app = app
        self.limit = parse(limit)
        self.limiter = MovingWindowRateLimiter(MemoryStorage())

    @staticmethod
    def client_key(scope: Scope) -> str:
        # Only a digest of the token is kept, like the services' token store.
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                return "token:" + hashlib.sha256(value).hexdigest()
        client = scope.get("client")
        return f"address:{client[0] if client else 'unknown'}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(UNLIMITED):
            await self.app(scope, receive, send)
            return
        key = self.client_key(scope)
        if not await self.limiter.hit(self.limit, key):
            reset, _ = await self.limiter.get_window_stats(self.limit, key)
            retry = max(1, math.ceil(reset - time.time()))
            response = problem(
                429,
                "RESOURCE_EXHAUSTED",
                f"more than {self.limit} requests; try again in {retry} s",
                {"Retry-After": str(retry)},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
