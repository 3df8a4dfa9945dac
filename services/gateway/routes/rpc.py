"""Every RPC of the services over HTTP with the caller's own token (services/gateway/transcoding.py):

    POST /api/v1/rpc/{service}/{method}    JSON request in, JSON response out
    GET  /api/v1/watch/{service}/{method}  ?request=<JSON>: Server-Sent Events, one per message

A Watch is a snapshot, then every change committed later, each once; when the service ends it (its
lifetime, a refusal) an `error` event says why. Browsers read the stream with fetch, which can send
the Authorization header (EventSource cannot), and watch again after an error."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

import grpc
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from google.protobuf.json_format import MessageToDict, Parse, ParseError
from google.protobuf.message import Message
from sse_starlette import EventSourceResponse

from services.gateway.problems import INTERNAL
from services.gateway.routes.deps import Gateway, caller, gateway, read_body, token_of
from services.gateway.transcoding import Method, UnknownMethod, method
from services.gateway.upstream import Metadata
from services.gateway.watches import Full, WatchSlots

router = APIRouter(prefix="/api/v1", tags=["services"])
GatewayDep = Annotated[Gateway, Depends(gateway)]
CallerDep = Annotated[Metadata, Depends(caller)]
PING_SECONDS = 15  # keeps proxies from closing a quiet stream
FIRST_ANSWER_S = 0.5  # how long a Watch may take to refuse (or send its first message) before the stream starts
CALL_TIMEOUT_S = 30
MAX_REQUEST_BYTES = 1024 * 1024  # the services' own message limit


def _json(message: Message) -> str:
    return json.dumps(MessageToDict(message), ensure_ascii=False, separators=(",", ":"))


def _resolve(gw: Gateway, service: str, name: str, *, streaming: bool) -> tuple[Method, grpc.aio.Channel]:
    try:
        found = method(service, name)
    except UnknownMethod as error:
        raise HTTPException(404, str(error)) from None
    if found.streaming != streaming:
        use = "GET /api/v1/watch" if found.streaming else "POST /api/v1/rpc"
        raise HTTPException(405, f"{service}/{name} is {'a stream' if found.streaming else 'unary'}: {use}/...")
    channel = (gw.upstream.stream_channels if streaming else gw.upstream.channels).get(service)
    if channel is None:
        raise HTTPException(503, f"the gateway is not connected to the {service} service")
    return found, channel


def _request(found: Method, text: str | bytes) -> Message:
    try:
        return Parse(text or "{}", found.request())
    except (ParseError, ValueError) as error:  # ValueError: not UTF-8
        raise HTTPException(400, f"{found.request.DESCRIPTOR.full_name}: {error}") from None


@router.post("/rpc/{service}/{name}", summary="Call a unary RPC (request and response in proto3 JSON)")
async def call(service: str, name: str, request: Request, gw: GatewayDep, auth: CallerDep) -> Response:
    found, channel = _resolve(gw, service, name, streaming=False)
    body = await read_body(request, limit=MAX_REQUEST_BYTES)
    stub = channel.unary_unary(
        found.path, request_serializer=found.request.SerializeToString, response_deserializer=found.response.FromString
    )
    reply = await stub(_request(found, body), metadata=auth, timeout=CALL_TIMEOUT_S)
    return Response(_json(reply), media_type="application/json", headers={"Cache-Control": "no-store"})


async def _events(call: Any, first: asyncio.Future[Any], release: Callable[[], None]) -> AsyncIterator[dict[str, str]]:
    try:
        message = await first
        while message is not grpc.aio.EOF:  # type: ignore[attr-defined]
            yield {"event": "message", "data": _json(message)}
            message = await call.read()
    except grpc.aio.AioRpcError as error:
        detail = INTERNAL.get(error.code()) or error.details()  # no addresses or failures for the browser
        yield {"event": "error", "data": json.dumps({"status": error.code().name, "detail": detail})}
    finally:
        call.cancel()
        release()


@router.get("/watch/{service}/{name}", summary="Watch a server stream as Server-Sent Events")
async def watch(
    service: str,
    name: str,
    http: Request,
    gw: GatewayDep,
    auth: CallerDep,
    request: Annotated[str, Query(max_length=65536, description="the request in proto3 JSON")] = "{}",
) -> EventSourceResponse:
    found, channel = _resolve(gw, service, name, streaming=True)
    parsed = _request(found, request)
    slots: WatchSlots = http.app.state.watches
    try:
        slot = slots.take(token_of(auth))
    except Full as full:
        raise HTTPException(503, str(full)) from None
    stub = channel.unary_stream(
        found.path, request_serializer=found.request.SerializeToString, response_deserializer=found.response.FromString
    )
    call = stub(parsed, metadata=auth)
    try:
        # A refusal (no role for it, bad request) comes at once: answer it with its HTTP status
        # rather than a 200 stream that only says so later, which a browser would reconnect to.
        first = asyncio.ensure_future(call.read())
        await asyncio.wait({first}, timeout=FIRST_ANSWER_S)
        if first.done() and isinstance(first.exception(), grpc.aio.AioRpcError):
            raise first.exception()  # type: ignore[misc]
    except BaseException:
        call.cancel()
        slots.give_back(slot)
        raise
    return EventSourceResponse(_events(call, first, lambda: slots.give_back(slot)), ping=PING_SECONDS)
