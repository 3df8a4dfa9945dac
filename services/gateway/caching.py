"""Conditional and cacheable answers: an ETag from the document's bytes, Last-Modified from its newest
resource, and 304 Not Modified when the reader already holds it (If-None-Match, else
If-Modified-Since, as RFC 9110 orders them)."""

from __future__ import annotations

import hashlib
from datetime import datetime
from email.utils import format_datetime, parsedate_to_datetime

from fastapi import Request, Response


def etag_of(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def _not_modified(request: Request, etag: str, last_modified: datetime | None) -> bool:
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is not None:
        tags = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
        return etag in tags or "*" in tags
    since = request.headers.get("if-modified-since")
    if since and last_modified is not None:
        try:
            return last_modified.replace(microsecond=0) <= parsedate_to_datetime(since)
        except (TypeError, ValueError):
            return False  # an unreadable date is ignored, as RFC 9110 says
    return False


def conditional(
    request: Request, body: bytes, *, media_type: str, last_modified: datetime | None, cache_control: str
) -> Response:
    """The document, or 304 when the reader's copy is current. `cache_control`: public feeds may be
    cached by anyone for a while; a caller's own view only by that caller (private, Vary)."""
    etag = etag_of(body)
    headers = {"ETag": etag, "Cache-Control": cache_control, "Vary": "Authorization, Accept-Encoding"}
    if last_modified is not None:
        headers["Last-Modified"] = format_datetime(last_modified, usegmt=True)
    if _not_modified(request, etag, last_modified):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=media_type, headers=headers)
