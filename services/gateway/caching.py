"""Conditional and cacheable answers.

A feed document is made once and kept: within `max_age` readers get the kept copy without asking
the services again (a burst of anonymous readers costs one read of the services and one render);
after it, the services are read again, and when what they answer is the same as before (compared
by digest) the kept document, its ETag and its Last-Modified stay as they were, so a poller gets
304 Not Modified although the document carries times of its own (DATEX II publicationTime).
Last-Modified is when the document last changed: an incident leaving the feed or a count turning
stale changes it too, which the newest resource time would not tell."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import format_datetime, parsedate_to_datetime

from fastapi import Request, Response
from google.protobuf.message import Message

from services.common.clock import utcnow


def etag_of(body: bytes) -> str:
    # Weak: the same document gzip-compressed or not is the same resource to a cache.
    return 'W/"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def digest_of(messages: Iterable[Message], *extra: str) -> str:
    """What a document is made of: its resources, each in its deterministic wire form."""
    h = hashlib.sha256()
    for message in messages:
        h.update(message.SerializeToString(deterministic=True))
        h.update(b"\x00")
    for text in extra:
        h.update(text.encode())
    return h.hexdigest()


@dataclass(frozen=True, kw_only=True)
class Document:
    body: bytes
    media_type: str
    etag: str
    last_modified: datetime | None


@dataclass(kw_only=True)
class _Kept:
    digest: str
    document: Document
    read_at: float


@dataclass(kw_only=True)
class FeedCache:
    """The documents of the public feeds, by route (and its parameters)."""

    max_age_s: float
    _kept: dict[str, _Kept] = field(default_factory=dict)
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    async def document(
        self,
        key: str,
        *,
        read: Callable[[], Awaitable[tuple[str, Callable[[], bytes]]]],
        media_type: str,
    ) -> Document:
        """The document of `key`: `read` asks the services and returns the digest of the answer and
        how to render it (run in a thread: a large city's feed takes a while)."""
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:  # one reader of the services per document at a time; the rest wait for it
            kept = self._kept.get(key)
            if kept and time.monotonic() - kept.read_at < self.max_age_s:
                return kept.document
            digest, render = await read()
            if kept and kept.digest == digest:
                kept.read_at = time.monotonic()
                return kept.document
            body = await asyncio.to_thread(render)
            document = Document(body=body, media_type=media_type, etag=etag_of(body), last_modified=utcnow())
            self._kept[key] = _Kept(digest=digest, document=document, read_at=time.monotonic())
            return document


def _not_modified(request: Request, etag: str, last_modified: datetime | None) -> bool:
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is not None:
        tags = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
        return etag.removeprefix("W/") in tags or "*" in tags
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
    return _answer(request, Document(body=body, media_type=media_type, etag=etag_of(body), last_modified=last_modified),
                   cache_control=cache_control)  # fmt: skip


def public(request: Request, document: Document, *, max_age_s: float) -> Response:
    return _answer(request, document, cache_control=f"public, max-age={int(max_age_s)}")


def _answer(request: Request, document: Document, *, cache_control: str) -> Response:
    headers = {"ETag": document.etag, "Cache-Control": cache_control}
    if cache_control.startswith("private"):
        headers["Vary"] = "Authorization"  # gzip adds Accept-Encoding
    if document.last_modified is not None:
        headers["Last-Modified"] = format_datetime(document.last_modified, usegmt=True)
    if _not_modified(request, document.etag, document.last_modified):
        return Response(status_code=304, headers=headers)
    return Response(document.body, media_type=document.media_type, headers=headers)
