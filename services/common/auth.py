"""Per-caller bearer tokens and the roles they carry.

A tokens file (JSON) lists callers with the SHA-256 of their token and their role, so the file holds
no usable secret. `almere token issue` creates an entry and prints the token once.

    {"tokens": [{"caller": "garage-centrum-counter", "role": "operator:garage-centrum",
                 "sha256": "9f86d0..."}]}
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import logging
import os
import secrets
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path

log = logging.getLogger(__name__)


class Role(StrEnum):
    ENGINEER = "engineer"
    OPERATOR = "operator"
    POLICE = "police"
    FIRE = "fire"
    EMS = "ems"
    OPTIMIZER = "optimizer"
    SIM = "sim"
    # Another service calling with its own token (`service:<name>`, e.g. `service:parking`).
    SERVICE = "service"
    # The open-data feeds' reader (the HTTP gateway's public feeds): what anybody may see, nothing more.
    PUBLIC = "public"
    # A private partner of the city (`partner:<id>`): a security firm, a business, a community group,
    # a sensor owner. A garage operator partner's callers hold `operator:<id>` instead.
    PARTNER = "partner"


PUBLIC_SAFETY = frozenset({Role.POLICE, Role.FIRE, Role.EMS})


@dataclass(frozen=True)
class Identity:
    caller: str
    role: Role
    # The role's id, for the roles that take one (SUBJECT_ROLES): the operator whose facilities
    # this caller may write, the service that calls.
    subject: str | None = None

    @property
    def role_name(self) -> str:
        return f"{self.role}:{self.subject}" if self.subject else str(self.role)


# Roles that name who holds them: `operator:<operator id>`, `service:<service name>`,
# `partner:<partner id>`.
SUBJECT_ROLES = {Role.OPERATOR: "an operator id", Role.SERVICE: "a service name", Role.PARTNER: "a partner id"}


def parse_role(text: str) -> tuple[Role, str | None]:
    """`engineer` -> (ENGINEER, None); `operator:garage-a` -> (OPERATOR, "garage-a");
    `service:parking` -> (SERVICE, "parking")."""
    name, colon, subject = text.partition(":")
    try:
        role = Role(name)
    except ValueError:
        raise ValueError(f"unknown role {name!r}; expected one of {', '.join(r.value for r in Role)}") from None
    if role in SUBJECT_ROLES and not subject:
        raise ValueError(f"role {name} needs {SUBJECT_ROLES[role]}: {name}:<id>")
    if role not in SUBJECT_ROLES and colon:
        raise ValueError(f"role {name} takes no id")
    return role, subject or None


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, kw_only=True)
class TokenEntry:
    """A caller, and when its token stops being accepted (seconds since the epoch; None: never)."""

    identity: Identity
    expires_at: float | None = None

    def expired(self) -> bool:
        return self.expires_at is not None and time.time() >= self.expires_at


def parse_entries(text: str) -> dict[str, TokenEntry]:
    """A tokens file's entries by token digest; ValueError (or KeyError) when one is malformed."""
    entries: dict[str, TokenEntry] = {}
    for item in json.loads(text).get("tokens", []):
        role, subject = parse_role(item["role"])
        entries[item["sha256"]] = TokenEntry(
            identity=Identity(item["caller"], role, subject), expires_at=_expiry(item["caller"], item.get("expires"))
        )
    return entries


def _expiry(caller: str, text: str | None) -> float | None:
    if text is None:
        return None
    when = datetime.fromisoformat(text)
    if when.tzinfo is None:
        raise ValueError(f"the expiry of caller {caller} needs a time zone, e.g. 2027-01-01T00:00:00Z")
    return when.timestamp()


class TokenStore:
    """Looks callers up by the SHA-256 of the presented token. No plaintext token is kept, so none
    is cached either: the SHA-256 of each call costs about 1 us (a cache hit was 0.1 us), against
    some 100 us of gRPC per call.

    The tokens file is re-read when it changes (checked at most every RECHECK_SECONDS, on the call
    path), so a revoked or expired caller is refused and a new one accepted without a restart. A
    file that becomes unreadable or malformed keeps the tokens read before (logged); a file removed
    revokes all of its tokens. Inline tokens (ALMERE_TOKENS, e.g. a Kubernetes Secret exposed as an
    environment variable) cannot change in a running process: revoking one takes a restart. Mount
    the Secret as the tokens file instead; Kubernetes updates a mounted Secret in place.
    """

    RECHECK_SECONDS = 1.0

    def __init__(
        self, path: Path | None = None, inline: str | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._path = path
        self._clock = clock
        self._inline = parse_entries(inline) if inline else {}
        self._file: dict[str, TokenEntry] = {}
        self._signature: tuple[int, int, int] | None = None
        self._next_check = clock() + self.RECHECK_SECONDS
        if path is not None:  # at start a missing or malformed file is an error: the service does not start
            self._signature = _signature(path)
            self._file = parse_entries(path.read_text())
        self._by_digest = {**self._file, **self._inline}  # the same token in both: the inline entry wins

    def lookup(self, token: str) -> TokenEntry | None:
        """The entry of `token`, expired or not (the caller says which); None when unknown."""
        self._recheck()
        return self._by_digest.get(token_digest(token))

    def _recheck(self) -> None:
        if self._path is None or self._clock() < self._next_check:
            return
        self._next_check = self._clock() + self.RECHECK_SECONDS
        signature = _signature(self._path)
        if signature == self._signature:
            return
        self._signature = signature  # a broken version is reported once, not every second
        try:
            self._file = parse_entries(self._path.read_text()) if signature else {}
        except (OSError, ValueError, KeyError, TypeError) as err:
            log.error("tokens file %s unreadable (%s); keeping the %d callers read before", self._path, err, len(self))
            return
        self._by_digest = {**self._file, **self._inline}
        level = logging.INFO if signature else logging.WARNING
        log.log(level, "tokens file %s %s: %d callers", self._path, "read" if signature else "is gone", len(self))

    def __len__(self) -> int:
        return len(self._by_digest)


def _signature(path: Path) -> tuple[int, int, int] | None:
    """What changes when the file does: a rename onto it (write_private, a Secret update) changes
    the inode, an edit in place the modification time or size."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """`30d`, `12h`, `15m`, `90s` -> a timedelta."""
    number, unit = text[:-1], text[-1:]
    if unit not in _UNITS or not number.isdigit() or int(number) == 0:
        raise ValueError(f"expected a duration like 30d, 12h, 15m or 90s, not {text!r}")
    return timedelta(seconds=int(number) * _UNITS[unit])


def issue_token(path: Path, caller: str, role: str, *, expires_in: timedelta | None = None) -> str:
    """Add a caller to the tokens file (created 0600 if missing), replacing its entry, and return its
    new token; with `expires_in` the token is refused after that long."""
    parse_role(role)
    token = secrets.token_urlsafe(32)
    data = json.loads(path.read_text()) if path.exists() else {"tokens": []}
    data["tokens"] = [t for t in data["tokens"] if t["caller"] != caller]
    entry = {"caller": caller, "role": role, "sha256": token_digest(token)}
    if expires_in is not None:
        entry["expires"] = (datetime.now(UTC) + expires_in).strftime("%Y-%m-%dT%H:%M:%SZ")
    data["tokens"].append(entry)
    write_private(path, data)
    return token


def revoke_token(path: Path, caller: str) -> bool:
    """Remove a caller from the tokens file; False when it has no entry (nothing is written)."""
    data = json.loads(path.read_text()) if path.exists() else {"tokens": []}
    kept = [t for t in data["tokens"] if t["caller"] != caller]
    if len(kept) == len(data["tokens"]):
        return False
    write_private(path, {**data, "tokens": kept})
    return True


def write_private(path: Path, data: object) -> None:
    """Write JSON readable by the owner only, atomically (a crash leaves the old file intact)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)


# The identity of the caller of the RPC being served; set by the auth interceptor.
current_identity: contextvars.ContextVar[Identity] = contextvars.ContextVar("current_identity")
# What the caller declares it reads for (partners' agreements name the purposes they allow).
PURPOSE_METADATA = "x-almere-purpose"
# The purpose the city's own services (the what-if service's live picture) read partners' data for.
TRAFFIC_MANAGEMENT = "traffic-management"
current_purpose: contextvars.ContextVar[str] = contextvars.ContextVar("current_purpose", default="")
