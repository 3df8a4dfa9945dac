"""The group committer on a database that is full for real (SQLite's SQLITE_FULL, provoked with
`PRAGMA max_page_count` on the writer's connections; needs no mount, unlike test_disk_full): a batch
that does not fit fails for every caller with RESOURCE_EXHAUSTED naming the full disk, stores none of
its rows, and the committer writes again once the database may grow."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, event, func, insert, select, text
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session

from apps.stack import free_port
from services.common.db import GroupCommitter, make_engine
from services.common.errors import ResourceExhausted, Unavailable, database_error

ROWS = Table("chaos_row", MetaData(), Column("id", Integer, primary_key=True), Column("body", String))


def _insert(session: Session, items: Sequence[str]) -> list[Any]:
    session.execute(insert(ROWS), [{"body": item} for item in items])
    return list(items)


async def test_a_batch_that_fills_the_database_fails_whole_and_writing_resumes(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'full.db'}")
    ROWS.create(engine)
    limit = {"pages": 8}  # a few pages: the table exists, a batch of large rows does not fit

    @event.listens_for(engine, "connect")
    def _cap(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute(f"PRAGMA max_page_count = {limit['pages']}")

    engine.dispose()  # connections from now on carry the cap
    committer = GroupCommitter(engine=engine, service="test")
    committer.start()
    try:
        big = [f"{n}:" + "x" * 4000 for n in range(20)]
        refused = await asyncio.gather(*(committer.submit(_insert, item) for item in big), return_exceptions=True)
        limit["pages"] = 1_000_000  # space returns: new connections may grow the file again
        engine.dispose()
        stored = await asyncio.gather(*(committer.submit(_insert, item) for item in big))
    finally:
        await committer.stop()
    assert all(isinstance(r, ResourceExhausted) and "disk is full" in r.message for r in refused), refused
    assert stored == big
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(ROWS)).scalar_one() == len(big)
    engine.dispose()


def test_only_the_databases_own_failures_get_a_status_of_their_own(tmp_path: Path) -> None:
    """A bad statement (SQLite reports it as OperationalError too) stays a bug, INTERNAL; a server
    nobody answers for is UNAVAILABLE."""
    engine = make_engine(f"sqlite:///{tmp_path / 'bad.db'}")
    with pytest.raises(DBAPIError) as bad, engine.connect() as conn:
        conn.execute(text("SELECT * FROM no_such_table"))
    assert database_error(bad.value) is None
    engine.dispose()
    nobody = make_engine(f"postgresql://postgres@127.0.0.1:{free_port('127.0.0.1')}/none")
    with pytest.raises(DBAPIError) as down:
        nobody.connect()
    assert isinstance(database_error(down.value), Unavailable)
    nobody.dispose()
