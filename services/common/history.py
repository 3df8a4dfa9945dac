"""An entity's audit trail a page at a time (ListIncidentHistory, ListIntersectionHistory): the rows
after a version, with page tokens bound to the entity (services/common/paging.py)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, select
from sqlmodel import Session, SQLModel, col

from services.common import paging
from services.common.errors import NotFound


@dataclass(frozen=True, kw_only=True)
class AuditTrail:
    """Where one kind of entity keeps its history: `rows` (with a `version`) name the entity in
    `entity_column`; `entities` is the entity's own table, keyed by id."""

    noun: str  # in NOT_FOUND messages
    entities: type[SQLModel]
    rows: type[SQLModel]
    entity_column: str

    async def page(self, engine: Engine, *, entity_id: str, page_size: int, page_token: str) -> tuple[list[Any], str]:
        """One page of the entity's history, oldest first, and the token of the next ("" at the end)."""
        _, rows, token = await self.page_with_entity(
            engine, entity_id=entity_id, page_size=page_size, page_token=page_token
        )
        return rows, token

    async def page_with_entity(
        self, engine: Engine, *, entity_id: str, page_size: int, page_token: str
    ) -> tuple[Any, list[Any], str]:
        """The same page with the entity's row as it is now, read together: what decides who may
        see what of each entry (an incident's visibility) is the entity's, not the entry's."""
        size = paging.page_size(page_size)
        after = paging.decode_int(page_token, entity_id)
        entity, rows = await asyncio.to_thread(
            self._after, engine, entity_id=entity_id, version=after or 0, limit=size + 1
        )
        token = paging.encode(str(rows[size - 1].version), entity_id) if len(rows) > size else ""
        return entity, rows[:size], token

    def _after(self, engine: Engine, *, entity_id: str, version: int, limit: int) -> tuple[Any, list[Any]]:
        with Session(engine) as session:
            entity = session.get(self.entities, entity_id)
            if entity is None:
                raise NotFound(f"{self.noun} {entity_id!r} not found")
            versions = col(self.rows.version)  # type: ignore[attr-defined]
            query = (
                select(self.rows)
                .where(col(getattr(self.rows, self.entity_column)) == entity_id, versions > version)
                .order_by(versions)
                .limit(limit)
            )
            return entity, list(session.execute(query).scalars())
