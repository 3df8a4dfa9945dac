"""What every batch handler (services/common/db.py) does the same way: lock the rows its items
change with one query, and run each item in its own SAVEPOINT so one rejected item writes nothing
while the others commit."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from sqlalchemy import Select
from sqlmodel import Session

from services.common import tracing
from services.common.changes import Changes
from services.common.errors import NotFound, ServiceError


class _Keyed(Protocol):
    @property
    def id(self) -> str: ...


Row = TypeVar("Row", bound=_Keyed)
Checked = TypeVar("Checked")
Item = TypeVar("Item")


@dataclass(frozen=True)
class Locked(Generic[Row]):
    """A batch's rows by id. `noun` names them in NOT_FOUND messages ("facility 'x' not found")."""

    noun: str
    rows: dict[str, Row]

    def get(self, entity_id: str) -> Row:
        row = self.rows.get(entity_id)
        if row is None:
            raise NotFound(f"{self.noun} {entity_id!r} not found")
        return row

    def writable(self, entity_id: str, authorize: Callable[[Row], Checked]) -> Checked:
        """The row a caller is about to change, as `authorize` returns it after letting the caller
        (it raises PERMISSION_DENIED otherwise); NOT_FOUND first when there is no such row."""
        return authorize(self.get(entity_id))


def lock(
    session: Session,
    *,
    noun: str,
    query: Select[Any],
    id_column: Any,
    ids: Iterable[str],
) -> Locked[Row]:
    """`query`'s rows (its first entity) with these ids. FOR UPDATE: replicas sharing PostgreSQL
    serialise their writes per row (SQLite has one writer anyway)."""
    found = (r[0] for r in session.execute(query.where(id_column.in_(set(ids))).with_for_update()))
    return Locked(noun, {row.id: row for row in found})


def each(
    session: Session, items: Sequence[Item], apply: Callable[[Item], Any], changes: Changes, *, savepoints: bool = True
) -> list[Any]:
    """`apply(item)` per item in a SAVEPOINT, then one flush of `changes`. A ServiceError becomes that
    item's result: its SAVEPOINT rolls back and its history rows and events are dropped.

    `savepoints=False` is for hot paths whose `apply` raises only before it changes anything: a
    SAVEPOINT flushes the session per item, which costs the ingest path a statement per report."""
    results: list[Any] = []
    for item in items:
        tracing.bind(item)
        recorded = changes.mark()
        try:
            if savepoints:
                with session.begin_nested():
                    results.append(apply(item))
            else:
                results.append(apply(item))
        except ServiceError as err:
            changes.undo(recorded)
            results.append(err)
    changes.flush(session)
    return results
