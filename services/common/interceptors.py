"""Server interceptors: bearer-token authentication, and access logs + metrics + error statuses."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

import grpc
from grpc import aio

from services.common.auth import TokenStore, current_identity
from services.common.errors import ServiceError
from services.common.observability import RPC_LATENCY, RPC_REQUESTS

# Standard infrastructure services answer without a token (probes and tooling must reach them).
OPEN_METHOD_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
# grpc's stubs type behaviours for the sync server; under grpc.aio they are coroutine functions,
# and a response-streaming one returns an async generator (or writes through its context itself).
Behavior = Callable[[Any, aio.ServicerContext[Any, Any]], Any]
Around = Callable[[aio.ServicerContext[Any, Any], Callable[[], Awaitable[Any]]], Awaitable[Any]]

access_log = logging.getLogger("almere.access")


def _wrap(handler: Handler, around: Around) -> Handler:
    """Run every call of `handler` inside `around(context, call)`, whatever its streaming kind."""
    serializers = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.response_streaming:
        stream_behavior: Behavior = handler.stream_stream if handler.request_streaming else handler.unary_stream  # type: ignore[assignment]

        async def streaming(request: Any, context: aio.ServicerContext[Any, Any]) -> None:
            async def drain() -> None:
                # Servicers yield responses; an inner interceptor's wrapper writes them itself.
                responses = stream_behavior(request, context)
                if inspect.isasyncgen(responses):
                    async for item in responses:
                        await context.write(item)
                else:
                    await responses

            await around(context, drain)

        factory = (
            grpc.stream_stream_rpc_method_handler if handler.request_streaming else grpc.unary_stream_rpc_method_handler
        )
        return factory(streaming, **serializers)

    unary_behavior: Behavior = handler.stream_unary if handler.request_streaming else handler.unary_unary  # type: ignore[assignment]

    async def unary(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
        return await around(context, lambda: unary_behavior(request, context))

    factory_u = (
        grpc.stream_unary_rpc_method_handler if handler.request_streaming else grpc.unary_unary_rpc_method_handler
    )
    return factory_u(unary, **serializers)


def _bearer_token(metadata: tuple[tuple[str, str | bytes], ...] | None) -> str | None:
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            return token.strip() if scheme.lower() == "bearer" else None
    return None


class _WrappingInterceptor(aio.ServerInterceptor):  # type: ignore[type-arg]
    """Wraps the handlers of application methods (not health or reflection) in `around`."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(OPEN_METHOD_PREFIXES):
            return handler
        return _wrap(handler, self.around_for(handler_call_details))

    def around_for(self, details: grpc.HandlerCallDetails) -> Around:
        raise NotImplementedError


class AuthInterceptor(_WrappingInterceptor):
    """Resolves the caller's token to an Identity; calls without a valid token get UNAUTHENTICATED."""

    def __init__(self, tokens: TokenStore) -> None:
        self._tokens = tokens

    def around_for(self, details: grpc.HandlerCallDetails) -> Around:
        token = _bearer_token(details.invocation_metadata)
        identity = self._tokens.identify(token) if token else None

        async def around(context: aio.ServicerContext[Any, Any], call: Callable[[], Awaitable[Any]]) -> Any:
            if identity is None:
                reason = "invalid token" if token else "missing 'authorization: Bearer <token>' metadata"
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, reason)
            current_identity.set(identity)
            return await call()

        return around


class ObservabilityInterceptor(_WrappingInterceptor):
    """Access log and metrics per call; turns ServiceError into its status and hides crashes."""

    def __init__(self, service: str) -> None:
        self._service = service

    def around_for(self, details: grpc.HandlerCallDetails) -> Around:
        method = details.method
        short = method.rsplit("/", 1)[-1]
        latency = RPC_LATENCY.labels(self._service, short)

        async def around(context: aio.ServicerContext[Any, Any], call: Callable[[], Awaitable[Any]]) -> Any:
            start = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                return await call()
            except ServiceError as err:
                code = err.code
                await context.abort(err.code, err.message)
            except aio.AbortError:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            except Exception:
                code = grpc.StatusCode.INTERNAL
                access_log.exception("unhandled error in %s", method)
                await context.abort(grpc.StatusCode.INTERNAL, "internal error")
            finally:
                elapsed = time.perf_counter() - start
                latency.observe(elapsed)
                RPC_REQUESTS.labels(self._service, short, code.name).inc()
                identity = current_identity.get(None)
                if access_log.isEnabledFor(logging.INFO):
                    access_log.info(
                        "rpc",
                        extra={
                            "method": method,
                            "code": code.name,
                            "ms": round(elapsed * 1000, 3),
                            "caller": identity.caller if identity else None,
                        },
                    )

        return around
