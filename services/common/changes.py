"""What a batch handler writes besides its entity rows: audit-history rows and outbox events, each
flushed with one multi-row INSERT in the batch's transaction."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import insert
from sqlmodel import Session


@dataclass
class Changes:
    history_table: Any
    outbox_table: Any
    history: list[dict[str, Any]] = field(default_factory=list)
    outbox: list[dict[str, Any]] = field(default_factory=list)

    def flush(self, session: Session) -> None:
        if self.history:
            session.execute(insert(self.history_table), self.history)
        if self.outbox:
            session.execute(insert(self.outbox_table), self.outbox)
