"""Per-client rate limits: each caller (a token the services know, else its address) gets
`gateway_rate_limit` requests in a moving window, then 429 with Retry-After. An unknown token counts
against its address, so inventing tokens buys no fresh allowance. Health and metrics are not
limited, so a probe never fails for a busy client's sake."""

from __future__ import annotations

import math
import time

from limits import parse
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter
from starlette.types import ASGIApp, Receive, Scope, Send

from services.common.auth import TokenStore
from services.gateway.problems import problem

UNLIMITED = ("/healthz", "/readyz", "/metrics")


class RateLimit:
    def __init__(self, app: ASGIApp, *, limit: str, tokens: TokenStore | None) -> None:
        self.app = app
        self.limit = parse(limit)
        self.limiter = MovingWindowRateLimiter(MemoryStorage())
        self.tokens = tokens

    def client_key(self, scope: Scope) -> str:
        for name, value in scope.get("headers", []):
            if name == b"authorization" and self.tokens is not None:
                token = value.decode("latin-1").removeprefix("Bearer ").strip()
                entry = self.tokens.lookup(token)
                if entry is not None and not entry.expired():
                    return f"caller:{entry.identity.caller}"
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
                headers={"Retry-After": str(retry)},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
