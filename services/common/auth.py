"""Per-caller bearer tokens and the roles they carry.

A tokens file (JSON) lists callers with the SHA-256 of their token and their role, so the file holds
no usable secret. `almere token issue` creates an entry and prints the token once.

    {"tokens": [{"caller": "garage-centrum-counter", "role": "operator:garage-centrum",
                 "sha256": "9f86d0..."}]}
"""

from __future__ import annotations

import contextvars
import functools
import hashlib
import json
import os
import secrets
import tempfile
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path


class Role(StrEnum):
    ENGINEER = "engineer"
    OPERATOR = "operator"
    POLICE = "police"
    FIRE = "fire"
    EMS = "ems"
    OPTIMIZER = "optimizer"
    SIM = "sim"


PUBLIC_SAFETY = frozenset({Role.POLICE, Role.FIRE, Role.EMS})


@dataclass(frozen=True)
class Identity:
    caller: str
    role: Role
    # Set for Role.OPERATOR: the operator whose facilities this caller may write.
    operator_id: str | None = None

    @property
    def role_name(self) -> str:
        return f"{self.role}:{self.operator_id}" if self.operator_id else str(self.role)


def parse_role(text: str) -> tuple[Role, str | None]:
    """`engineer` -> (ENGINEER, None); `operator:garage-a` -> (OPERATOR, "garage-a")."""
    name, colon, operator_id = text.partition(":")
    try:
        role = Role(name)
    except ValueError:
        raise ValueError(f"unknown role {name!r}; expected one of {', '.join(r.value for r in Role)}") from None
    if role is Role.OPERATOR and not operator_id:
        raise ValueError("role operator needs an operator id: operator:<id>")
    if role is not Role.OPERATOR and colon:
        raise ValueError(f"role {name} takes no id")
    return role, operator_id or None


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenStore:
    """Looks identities up by the SHA-256 of the presented token."""

    def __init__(self, entries: dict[str, Identity]) -> None:
        self._by_digest = entries

    @classmethod
    def from_json(cls, text: str) -> TokenStore:
        data = json.loads(text)
        entries: dict[str, Identity] = {}
        for item in data.get("tokens", []):
            role, operator_id = parse_role(item["role"])
            entries[item["sha256"]] = Identity(item["caller"], role, operator_id)
        return cls(entries)

    @classmethod
    def load(cls, path: Path | None, inline: str | None) -> TokenStore:
        entries: dict[str, Identity] = {}
        for text in (path.read_text() if path else None, inline):
            if text:
                entries.update(cls.from_json(text)._by_digest)
        return cls(entries)

    def identify(self, token: str) -> Identity | None:
        return self._identify_cached(token)

    @functools.lru_cache(maxsize=4096)  # noqa: B019 - one store per process; saves a SHA-256 per call
    def _identify_cached(self, token: str) -> Identity | None:
        return self._by_digest.get(token_digest(token))

    def __len__(self) -> int:
        return len(self._by_digest)


def issue_token(path: Path, caller: str, role: str) -> str:
    """Append a new caller to the tokens file (created 0600 if missing) and return its token."""
    parse_role(role)
    token = secrets.token_urlsafe(32)
    data = json.loads(path.read_text()) if path.exists() else {"tokens": []}
    data["tokens"] = [t for t in data["tokens"] if t["caller"] != caller]
    data["tokens"].append({"caller": caller, "role": role, "sha256": token_digest(token)})
    write_private(path, data)
    return token


def write_private(path: Path, data: object) -> None:
    """Write JSON readable by the owner only, atomically (a crash leaves the old file intact)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)


# The identity of the caller of the RPC being served; set by the auth interceptor.
current_identity: contextvars.ContextVar[Identity] = contextvars.ContextVar("current_identity")
