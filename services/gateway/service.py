"""`almere serve gateway`: the HTTP gateway on uvicorn, until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio

import uvicorn
from fastapi import FastAPI

from services.common.auth import TokenStore
from services.common.config import Settings
from services.common.observability import configure_logging
from services.gateway.app import create_app
from services.gateway.caching import FeedCache
from services.gateway.formats.publisher import Publisher
from services.gateway.routes.deps import Gateway
from services.gateway.upstream import Upstream


def build_app(settings: Settings) -> FastAPI:
    """The gateway's application, connected to the services the settings name."""
    tokens = TokenStore(settings.tokens_file, settings.tokens) if settings.tokens_file or settings.tokens else None
    gw = Gateway(
        settings=settings,
        upstream=Upstream.connect(settings),
        publisher=Publisher(),
        tokens=tokens,
        cache=FeedCache(max_age_s=settings.gateway_feed_max_age_seconds),
    )
    return create_app(gw)


async def _serve(settings: Settings) -> None:
    config = uvicorn.Config(
        build_app(settings),
        host=settings.bind_host,
        port=settings.port_for("gateway"),
        log_config=None,  # our logging (JSON, rotated), not uvicorn's
        limit_concurrency=settings.max_concurrent_rpcs,
        timeout_graceful_shutdown=int(settings.grace_seconds),
        ssl_certfile=settings.tls_cert_file,
        ssl_keyfile=settings.tls_key_file,
        server_header=False,
    )
    await uvicorn.Server(config).serve()  # handles SIGTERM and SIGINT itself


def serve(settings: Settings) -> None:
    configure_logging(settings)
    asyncio.run(_serve(settings))
