"""The gateway's ASGI application: routes, gzip, per-client rate limits, request metrics, health and
the OpenAPI document (/openapi.json, browsable at /docs)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import httpx
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.gateway.ingest.config import load_feeds
from services.gateway.ingest.poller import FeedPoller
from services.gateway.problems import from_bug, from_http_error, from_rpc_error, problem
from services.gateway.ratelimit import RateLimit
from services.gateway.routes import api, console, feeds, ingest, rpc
from services.gateway.routes.deps import Gateway
from services.gateway.watches import WatchSlots

DASHBOARD = Path(__file__).with_name("dashboard")
# A dashboard holds four streams; a few tabs of it, not hundreds.
WATCHES_PER_CALLER = 32
HTTP_REQUESTS = Counter("almere_http_requests", "HTTP requests answered by the gateway", ["route", "status"])
HTTP_LATENCY = Histogram(
    "almere_http_request_seconds",
    "HTTP request latency (to the response's start)",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Polls the operators' feeds while the gateway serves."""
    gw: Gateway = app.state.gateway
    configs = load_feeds(gw.settings.gateway_feeds_file) if gw.settings.gateway_feeds_file else []
    async with httpx.AsyncClient() as http:
        pollers = {c.name: FeedPoller(config=c, parking=gw.upstream.parking, http=http) for c in configs}
        app.state.feeds = pollers
        try:
            for poller in pollers.values():
                await poller.start()
            yield
        finally:
            for poller in pollers.values():
                await poller.stop()
            await gw.upstream.close()


def create_app(gw: Gateway) -> FastAPI:
    app = FastAPI(
        lifespan=_lifespan,
        title="almere-traffic gateway",
        version="1",
        description=(
            "The city's parking and incident data over HTTP: open-data feeds in DATEX II v3, SPDP, NGSI-LD "
            "and CAP 1.2 (no token), the services' resources as JSON and live updates as Server-Sent "
            "Events (with 'Authorization: Bearer <token>', the same tokens and roles as the gRPC services)."
        ),
    )
    app.state.gateway = gw
    app.state.watches = WatchSlots(total=gw.settings.gateway_max_watches, per_caller=WATCHES_PER_CALLER)
    for router in (feeds.router, api.router, rpc.router, ingest.router, console.router):
        app.include_router(router)
    _mount_dashboard(app)
    app.add_exception_handler(grpc.aio.AioRpcError, from_rpc_error)
    app.add_exception_handler(StarletteHTTPException, from_http_error)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(Exception, from_bug)
    app.add_middleware(GZipMiddleware, minimum_size=1024)
    settings = gw.settings
    app.add_middleware(
        RateLimit, limit=settings.gateway_rate_limit, caller_limit=settings.gateway_caller_rate_limit, tokens=gw.tokens
    )
    app.middleware("http")(_measured)
    app.get("/healthz", include_in_schema=False)(_alive)
    app.get("/readyz", include_in_schema=False)(_ready)
    app.get("/metrics", include_in_schema=False)(_metrics)
    return app


def _mount_dashboard(app: FastAPI) -> None:
    """The control room's page (built from web/ into DASHBOARD by `make`), at /dashboard/; / leads there."""
    app.get("/", include_in_schema=False)(lambda: RedirectResponse("/dashboard/"))
    if (DASHBOARD / "index.html").is_file():
        app.mount("/dashboard", StaticFiles(directory=DASHBOARD, html=True), name="dashboard")
        return

    @app.get("/dashboard/{path:path}", include_in_schema=False)
    async def not_built(path: str) -> Response:
        return problem(
            503, "UNAVAILABLE", "the dashboard is not built: run `make web` (npm ci and npm run build in web/)"
        )


async def _measured(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    started = time.perf_counter()
    response = await call_next(request)
    route = request.scope.get("route")
    label = getattr(route, "path", "unmatched")  # the template, not the path: bounded label values
    HTTP_REQUESTS.labels(label, str(response.status_code)).inc()
    HTTP_LATENCY.labels(label).observe(time.perf_counter() - started)
    return response


async def _invalid(request: Request, error: Exception) -> Response:
    assert isinstance(error, RequestValidationError)
    detail = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors())
    return problem(400, "INVALID_ARGUMENT", detail)


async def _alive() -> dict[str, str]:
    return {"status": "SERVING"}


async def _ready(request: Request) -> Response:
    """SERVING when both services behind the gateway are; else 503 naming who is not."""
    gw: Gateway = request.app.state.gateway
    down = []
    for name in ("parking", "incidents"):
        channel = gw.upstream.channels[name]
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
            if reply.status != health_pb2.HealthCheckResponse.SERVING:
                down.append(name)
        except grpc.aio.AioRpcError:
            down.append(name)
    if down:
        return problem(503, "UNAVAILABLE", f"not serving: {', '.join(down)}")
    return Response('{"status":"SERVING"}', media_type="application/json")


async def _metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
