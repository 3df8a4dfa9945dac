"""AIP-158 page tokens: opaque, and bound to the filters of the request that produced them."""

from __future__ import annotations

import base64
import hashlib
import json

from services.common.errors import InvalidArgument

MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 50


def page_size(requested: int) -> int:
    if requested < 0:
        raise InvalidArgument("page_size must not be negative")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def fingerprint(query: object) -> str:
    return hashlib.sha256(repr(query).encode()).hexdigest()[:16]


def encode(after: str, query: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": after, "query": query}).encode()).decode()


def decode_int(token: str, query: str) -> int | None:
    """Like decode, for positions that are numbers (versions)."""
    after = decode(token, query)
    if not after:
        return None
    if not after.isdigit():
        raise InvalidArgument("page_token is malformed")
    return int(after)


def decode(token: str, query: str) -> str:
    """The position after which the next page starts ("" for the first page)."""
    if not token:
        return ""
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        after, token_query = str(data["after"]), str(data["query"])
    except (ValueError, KeyError, TypeError):
        raise InvalidArgument("page_token is malformed") from None
    if token_query != query:
        raise InvalidArgument("page_token belongs to a request with other filters")
    return after
