"""Errors as HTTP answers: RFC 9457 problem documents, and the gRPC status of a service mapped to the
HTTP status a web client expects, with the service's own message."""

from __future__ import annotations

import grpc
from fastapi import Request
from fastapi.responses import JSONResponse

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


def problem(status: int, title: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
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
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return problem(status, code.name, error.details() or code.name, headers)
