"""Domain errors that carry their gRPC status code; the server turns them into statuses."""

from __future__ import annotations

import sqlite3

import grpc
from sqlalchemy.exc import DBAPIError, OperationalError


class ServiceError(Exception):
    code = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(ServiceError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(ServiceError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(ServiceError):
    code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDenied(ServiceError):
    code = grpc.StatusCode.PERMISSION_DENIED


class FailedPrecondition(ServiceError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(ServiceError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(ServiceError):
    code = grpc.StatusCode.UNAVAILABLE


class Internal(ServiceError):
    code = grpc.StatusCode.INTERNAL


class Aborted(ServiceError):
    code = grpc.StatusCode.ABORTED


# The database's own failures, which waiting may mend: SQLite's result codes (an I/O error's extended
# codes, SQLITE_IOERR_WRITE etc., start like their primary one), PostgreSQL's SQLSTATE for a full disk.
_SQLITE_UNAVAILABLE = ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_IOERR", "SQLITE_CANTOPEN", "SQLITE_PROTOCOL")
_POSTGRES_DISK_FULL = "53100"
DISK_FULL = "the database's disk is full: the write was not stored; retry once space is freed"
DATABASE_UNAVAILABLE = "the database is unavailable; retry shortly (writes carrying a request id are idempotent)"


def database_error(exc: BaseException) -> ServiceError | None:
    """The status for a failure of the database itself, not of the request (a full disk, a server
    that went away): one the caller can act on by waiting and retrying; None for anything else (a
    bug stays INTERNAL)."""
    if not isinstance(exc, DBAPIError):
        return None
    cause = exc.orig
    if isinstance(cause, sqlite3.Error):  # SQLite raises OperationalError for bad SQL too: by code only
        name = getattr(cause, "sqlite_errorname", None) or ""  # absent on errors the module raises itself
        if name == "SQLITE_FULL":
            return ResourceExhausted(DISK_FULL)
        return Unavailable(DATABASE_UNAVAILABLE) if name.startswith(_SQLITE_UNAVAILABLE) else None
    if getattr(cause, "sqlstate", None) == _POSTGRES_DISK_FULL:
        return ResourceExhausted(DISK_FULL)
    # psycopg's OperationalError: connection refused or lost, server shutting down or starting up.
    if isinstance(exc, OperationalError) or exc.connection_invalidated:
        return Unavailable(DATABASE_UNAVAILABLE)
    return None
