"""How many live streams (Server-Sent Events, each holding a Watch at a service) the gateway keeps
open: at most `total`, and at most `per_caller` for one caller (by token digest), so one dashboard
left open in many tabs cannot take every stream. A slot is taken before the Watch starts and given
back when it ends, however it ends."""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field


class Full(Exception):
    """No slot: the message says whose limit was reached."""


@dataclass(kw_only=True)
class WatchSlots:
    total: int
    per_caller: int
    _held: Counter[str] = field(default_factory=Counter)

    def take(self, token: str) -> str:
        """A slot for the caller of `token`; returns the key to give it back with."""
        key = hashlib.sha256(token.encode()).hexdigest()
        if sum(self._held.values()) >= self.total:
            raise Full(f"{self.total} live streams are open, the most this gateway holds; try again")
        if self._held[key] >= self.per_caller:
            raise Full(f"you have {self.per_caller} live streams open, the most one caller may; close one")
        self._held[key] += 1
        return key

    def give_back(self, key: str) -> None:
        self._held[key] -= 1
        if self._held[key] <= 0:
            del self._held[key]

    def __len__(self) -> int:
        return sum(self._held.values())
