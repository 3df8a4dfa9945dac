"""Per-client rate limits in a moving window, then 429 with Retry-After: a caller the services know
(by its token) gets `gateway_caller_rate_limit`, anybody else `gateway_rate_limit` per address. An
unknown token counts against its address, so inventing tokens buys no fresh allowance. Health and
metrics are not limited, so a probe never fails for a busy client's sake."""

from __future__ import annotations

import math
import time

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter
from starlette.types import ASGIApp, Receive, Scope, Send

from services.common.auth import TokenStore
from services.gateway.problems import problem

UNLIMITED = ("/healthz", "/readyz", "/metrics")


class RateLimit:
    def __init__(self, app: ASGIApp, *, limit: str, caller_limit: str, tokens: TokenStore | None) -> None:
        self.app = app
        self.anonymous = parse(limit)
        self.known = parse(caller_limit)
        self.limiter = MovingWindowRateLimiter(MemoryStorage())
        self.tokens = tokens

    def client(self, scope: Scope) -> tuple[str, RateLimitItem]:
        """The client's key and its limit."""
        for name, value in scope.get("headers", []):
            if name == b"authorization" and self.tokens is not None:
                token = value.decode("latin-1").removeprefix("Bearer ").strip()
                entry = self.tokens.lookup(token)
                if entry is not None and not entry.expired():
                    return f"caller:{entry.identity.caller}", self.known
        client = scope.get("client")
        return f"address:{client[0] if client else 'unknown'}", self.anonymous

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(UNLIMITED):
            await self.app(scope, receive, send)
            return
        key, limit = self.client(scope)
        if not await self.limiter.hit(limit, key):
            reset, _ = await self.limiter.get_window_stats(limit, key)
            retry = max(1, math.ceil(reset - time.time()))
            response = problem(
                429,
                "RESOURCE_EXHAUSTED",
                f"more than {limit} requests; try again in {retry} s",
                headers={"Retry-After": str(retry)},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
