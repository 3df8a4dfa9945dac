"""The server interceptor of every service: bearer-token authentication, access log, metrics, and
turning ServiceError into its gRPC status. One layer, wrapped once per method (not per call): on two
cores every microsecond of per-call Python is throughput."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

import grpc
from google.protobuf.message import DecodeError, Message
from grpc import aio

from services.common import tracing
from services.common.agreements import AgreementBook
from services.common.auth import PURPOSE_METADATA, Identity, Role, TokenStore, current_identity, current_purpose
from services.common.delegation import on_behalf_of
from services.common.errors import InvalidArgument, PermissionDenied, ServiceError, database_error
from services.common.feed import WatchLimits, watch_limits
from services.common.limits import LogThrottle, StreamSlots
from services.common.observability import RPC_LATENCY, RPC_REQUESTS
from services.common.oidc import OidcVerifier, TokenRefused, looks_like_jwt
from services.common.strict import is_strict, refuse_unknown_fields

# Standard infrastructure services answer without a token (probes and tooling must reach them).
# Roles whose id is a partner's: suspending the partner refuses them.
PARTNER_ROLES = frozenset({Role.PARTNER, Role.OPERATOR})
OPEN_METHOD_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
Context: TypeAlias = "aio.ServicerContext[Any, Any]"
# grpc's stubs type behaviours for the sync server; under grpc.aio they are coroutine functions,
# and a response-streaming one returns an async generator.
Behavior = Callable[[Any, Context], Any]
Around = Callable[[Context, Callable[[], Awaitable[Any]]], Awaitable[Any]]

access_log = logging.getLogger("almere.access")


def _wrap(handler: Handler, around: Around) -> Handler:
    """Run every call of `handler` inside `around(context, call)`, whatever its streaming kind.

    A single request is parsed inside, after authentication: garbage from a stranger is refused
    unread, and from a caller it is INVALID_ARGUMENT (parsed by grpc, it is a logged traceback and
    UNKNOWN). Streamed requests are parsed as the servicer reads them, after authentication anyway.
    """
    behavior = handler.unary_unary or handler.unary_stream
    accept = _identity if handler.request_streaming else _parser(handler.request_deserializer, is_strict(behavior))
    serializers = {
        "request_deserializer": handler.request_deserializer if handler.request_streaming else None,
        "response_serializer": handler.response_serializer,
    }
    if handler.response_streaming:
        stream_behavior: Behavior = handler.stream_stream if handler.request_streaming else handler.unary_stream  # type: ignore[assignment]

        async def streaming(request: Any, context: Context) -> None:
            async def drain() -> None:
                responses = stream_behavior(accept(request), context)
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

    async def unary(request: Any, context: Context) -> Any:
        return await around(context, lambda: unary_behavior(accept(request), context))

    factory_u = (
        grpc.stream_unary_rpc_method_handler if handler.request_streaming else grpc.unary_unary_rpc_method_handler
    )
    return factory_u(unary, **serializers)


def _identity(request: Any) -> Any:
    return request


def _parser(deserialize: Callable[[bytes], Any] | None, strict: bool) -> Callable[[bytes], Any]:
    def parse(raw: bytes) -> Any:
        try:
            request = deserialize(raw) if deserialize else raw
        except DecodeError:
            raise InvalidArgument("the request is not a valid message of this method") from None
        if isinstance(request, Message):
            if strict:
                refuse_unknown_fields(request)
            request.DiscardUnknownFields()  # never store or republish fields the contract lacks
        return request

    return parse


def _metadata(context: Context) -> dict[str, str]:
    return {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}


def _bearer_token(metadata: dict[str, str]) -> str | None:
    scheme, _, token = metadata.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


class ServiceInterceptor(aio.ServerInterceptor):  # type: ignore[type-arg]
    """Authenticates the caller, then logs and measures the call and maps its errors to statuses."""

    def __init__(
        self,
        service: str,
        tokens: TokenStore,
        *,
        oidc: OidcVerifier | None = None,
        agreements: AgreementBook | None = None,
        streams: StreamSlots,
        watch: WatchLimits,
        refusal_log_seconds: float,
    ) -> None:
        self._service = service
        self._tokens = tokens
        self._oidc = oidc
        self._agreements = agreements
        self._streams = streams
        self._watch = watch
        self._refusals = LogThrottle(access_log, refusal_log_seconds)
        self._wrapped: dict[str, Handler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        method = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is not None:
            return wrapped
        handler = await continuation(handler_call_details)
        if handler is None or method.startswith(OPEN_METHOD_PREFIXES):
            return handler
        wrapped = self._wrapped[method] = _wrap(handler, self._around(method, streaming=handler.response_streaming))
        return wrapped

    async def _authenticate(self, method: str, token: str | None) -> tuple[Identity | None, str]:
        """The caller, or None and the message telling the client why not (logged, at most once per
        interval and reason: a flood of refused calls is counted, not written out)."""
        if token and self._oidc is not None and looks_like_jwt(token):
            try:
                return await self._oidc.identify(token), ""
            except TokenRefused as refused:
                what = f"a JWT refused ({refused.reason})"
                return None, self._refuse(
                    method, reason=f"jwt-{refused.reason}", what=what, message=str(refused), caller=None
                )
        entry = self._tokens.lookup(token) if token else None
        if entry is not None and not entry.expired():
            return entry.identity, ""
        if entry:
            message = "the bearer token has expired; ask for a new one"
            return None, self._refuse(
                method, reason="expired", what="an expired token", message=message, caller=entry.identity.caller
            )
        message = "missing or invalid 'authorization: Bearer <token>' metadata"
        what = "an unknown token" if token else "no token"
        return None, self._refuse(
            method, reason="unknown" if token else "missing", what=what, message=message, caller=None
        )

    def _refuse(self, method: str, *, reason: str, what: str, message: str, caller: str | None) -> str:
        self._refusals.warning(
            reason,
            "refused a call of %s with %s%s",
            method,
            what,
            f" of caller {caller}" if caller else "",
            extra={"method": method, "code": "UNAUTHENTICATED", "reason": reason, "caller": caller},
        )
        return message

    async def _until_suspended(self, call: Callable[[], Awaitable[Any]], partner: str) -> Any:
        """A partner's stream, ended (PERMISSION_DENIED) the moment the partner is suspended."""
        assert self._agreements is not None
        suspended = asyncio.ensure_future(self._agreements.suspension(partner).wait())
        task = asyncio.ensure_future(call())
        try:
            await asyncio.wait({task, suspended}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            suspended.cancel()
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if task.cancelled():
            raise PermissionDenied(f"partner {partner!r} was suspended")
        return task.result()

    def _around(self, method: str, *, streaming: bool) -> Around:
        short = method.rsplit("/", 1)[-1]
        latency = RPC_LATENCY.labels(self._service, short)
        counters: dict[grpc.StatusCode, Any] = {}  # each code's child, made when first counted

        async def around(context: Context, call: Callable[[], Awaitable[Any]]) -> Any:
            start = time.perf_counter()
            metadata = _metadata(context)
            identity, refusal = await self._authenticate(method, _bearer_token(metadata))
            request_id = metadata.get(tracing.REQUEST_ID) or tracing.new_id(8)
            trace = tracing.continue_trace(metadata.get(tracing.TRACEPARENT))
            tracing.current_request_id.set(request_id)
            tracing.current_trace.set(trace)
            context.set_trailing_metadata(((tracing.REQUEST_ID, request_id), (tracing.TRACEPARENT, trace)))

            def finish(code: grpc.StatusCode) -> None:
                # Counted before the status leaves: whoever has the answer finds the call in the metrics.
                elapsed = time.perf_counter() - start
                latency.observe(elapsed)
                counter = counters.get(code)
                if counter is None:
                    counter = counters[code] = RPC_REQUESTS.labels(self._service, short, code.name)
                counter.inc()
                if identity is not None and access_log.isEnabledFor(logging.INFO):  # refusals: _authenticate
                    access_log.info(
                        "rpc",
                        extra={
                            "method": method,
                            "code": code.name,
                            "ms": round(elapsed * 1000, 3),
                            "caller": identity.caller if identity else None,
                            "on_behalf_of": on_behalf_of(identity, metadata),
                            "request_id": request_id,
                            "trace_id": tracing.trace_id(trace),
                        },
                    )

            if identity is None:
                finish(grpc.StatusCode.UNAUTHENTICATED)
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, refusal)
            partner = identity.subject if identity.role in PARTNER_ROLES and self._agreements else None
            if partner and self._agreements and self._agreements.suspended(partner):
                finish(grpc.StatusCode.PERMISSION_DENIED)
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"partner {partner!r} is suspended")
            current_identity.set(identity)
            current_purpose.set(metadata.get(PURPOSE_METADATA, "")[:64])
            try:
                if streaming:  # a Watch: within the caller's and the server's streams, and its limits
                    watch_limits.set(self._watch)
                    with self._streams.hold(identity.caller):
                        result = await self._until_suspended(call, partner) if partner else await call()
                else:
                    result = await call()
            except ServiceError as err:
                finish(err.code)
                await context.abort(err.code, err.message)
            except aio.AbortError:
                finish(context.code() or grpc.StatusCode.UNKNOWN)
                raise
            except asyncio.CancelledError:
                finish(grpc.StatusCode.CANCELLED)
                raise
            except Exception as exc:
                if (outage := database_error(exc)) is not None:  # a read while the database is down or full
                    access_log.warning("%s: %s", method, exc)
                    finish(outage.code)
                    await context.abort(outage.code, outage.message)
                access_log.exception("unhandled error in %s", method)
                finish(grpc.StatusCode.INTERNAL)
                await context.abort(grpc.StatusCode.INTERNAL, "internal error")
            finish(grpc.StatusCode.OK)
            return result

        return around
