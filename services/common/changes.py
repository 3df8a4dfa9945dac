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

    def mark(self) -> tuple[int, int]:
        """Where the rows recorded so far end, for `undo`."""
        return len(self.history), len(self.outbox)

    def undo(self, mark: tuple[int, int]) -> None:
        """Drop what was recorded after `mark`: the item that recorded it failed and its SAVEPOINT
        rolled back. Batches that keep rows read inside it in memory forget them too (override)."""
        del self.history[mark[0] :]
        del self.outbox[mark[1] :]

    def flush(self, session: Session) -> None:
        # Core executemany on the session's connection: the ORM's bulk insert walks every row again
        # in Python before handing the same rows to the driver.
        connection = session.connection()
        if self.history:
            connection.execute(insert(self.history_table.__table__), self.history)
        if self.outbox:
            connection.execute(insert(self.outbox_table.__table__), self.outbox)
