"""Errors as HTTP answers: RFC 9457 problem documents, and the gRPC status of a service mapped to the
HTTP status a web client expects, with the service's own message where it speaks to the caller
(a refusal, bad input) and a generic one where it would tell internals (addresses, failures)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import grpc
from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)
PROBLEM = "application/problem+json"

HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 412,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
# Their details come from gRPC itself or a failure, not from a rule the caller broke.
INTERNAL = {
    grpc.StatusCode.UNAVAILABLE: "a service behind the gateway is not available; try again",
    grpc.StatusCode.DEADLINE_EXCEEDED: "a service behind the gateway did not answer in time; try again",
    grpc.StatusCode.UNKNOWN: "a service behind the gateway failed",
    grpc.StatusCode.INTERNAL: "a service behind the gateway failed",
    grpc.StatusCode.DATA_LOSS: "a service behind the gateway failed",
}


def problem(status: int, title: str, detail: str, *, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        {"type": "about:blank", "title": title, "status": status, "detail": detail},
        status_code=status,
        media_type=PROBLEM,
        headers=headers,
    )


async def from_rpc_error(request: Request, error: Exception) -> JSONResponse:
    """A service's refusal, passed on with its status and message (never a stack trace)."""
    assert isinstance(error, grpc.aio.AioRpcError)
    code = error.code()
    status = HTTP_STATUS.get(code, 502)
    if code in INTERNAL:
        log.warning("%s %s: %s: %s", request.method, request.url.path, code.name, error.details())
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return problem(status, code.name, INTERNAL.get(code) or error.details() or code.name, headers=headers)


async def from_http_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, StarletteHTTPException)
    return problem(error.status_code, "error", str(error.detail), headers=dict(error.headers or {}))


async def from_bug(request: Request, error: Exception) -> JSONResponse:
    log.exception("%s %s failed", request.method, request.url.path)
    return problem(500, "INTERNAL", "the gateway failed; the error is in its log")


@contextlib.contextmanager
def own_credentials() -> Iterator[None]:
    """Around calls with the gateway's own token: a refusal of it is the gateway's fault (a revoked
    or missing token), not the reader's, so the reader gets 502, not 401/403."""
    try:
        yield
    except grpc.aio.AioRpcError as error:
        if error.code() not in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
            raise
        log.error("the service refused the gateway's own token: %s: %s", error.code().name, error.details())
        raise HTTPException(502, "the gateway's own credentials were refused by a service") from None
