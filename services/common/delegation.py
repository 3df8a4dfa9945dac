"""Calls one service makes for another's caller: the calling service authenticates as itself
(`service:<name>`) and names the original caller in `x-almere-on-behalf-of`. Only a service's word
is taken for it; from anyone else the header is ignored, so no caller can pass for another."""

from __future__ import annotations

from collections.abc import Mapping

from services.common.auth import Identity, Role

ON_BEHALF_OF = "x-almere-on-behalf-of"
MAX_CALLER = 128  # as a tokens file's caller names


def on_behalf_of(identity: Identity | None, metadata: Mapping[str, str]) -> str | None:
    """The original caller named by a calling service, or None (no service, or no header)."""
    if identity is None or identity.role is not Role.SERVICE:
        return None
    return metadata.get(ON_BEHALF_OF, "")[:MAX_CALLER] or None


def for_caller(caller: str) -> tuple[str, str]:
    """The metadata a service adds to a call it makes for `caller`."""
    return (ON_BEHALF_OF, caller)
