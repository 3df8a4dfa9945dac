"""The hot path's statements run by the driver (services/common/driver_sql.py) store and read the
same values SQLAlchemy Core does, on SQLite and PostgreSQL; the SQLite text of UTC datetimes is
SQLAlchemy's own; an unsynced transaction leaves its connection durable again."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    bindparam,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.dialects import sqlite

from services.common import driver_sql
from services.common.clock import UtcDateTime
from services.common.db import begin_unsynced, make_engine, writer

metadata = MetaData()
THING = Table(
    "driver_sql_thing",
    metadata,
    Column("id", String(63), primary_key=True),
    Column("count", Integer),
    Column("sequence", BigInteger),
    Column("ratio", Float),
    Column("at", UtcDateTime),
    Column("headers", JSON),
    Column("payload", LargeBinary),
)
COLUMNS = [c.name for c in THING.c]
AT = datetime(2026, 12, 7, 5, 10, 50, 125084, tzinfo=UTC)


def _row(i: int) -> tuple[Any, ...]:
    return (f"t{i}", i, 1_796_532_007_123 + i, i / 7, AT + timedelta(seconds=i), {"traceparent": f"00-{i}"}, bytes([i]))


def test_driver_statements_write_and_read_what_core_does(database_url: str) -> None:
    engine = make_engine(database_url)
    metadata.create_all(engine)
    try:
        with writer(engine).begin() as connection:
            driver_sql.Insert(THING, COLUMNS).executemany(connection, [_row(i) for i in range(5)])
            connection.execute(insert(THING), [dict(zip(COLUMNS, _row(i), strict=True)) for i in range(5, 8)])
        with engine.connect() as connection:
            by_core = {r[0]: tuple(r) for r in connection.execute(select(THING))}
            read = driver_sql.select_for_update(THING, COLUMNS, key="id")
            by_driver = {r[0]: r for r in read.fetch(connection, [f"t{i}" for i in (0, 1, 2, 5, 6)])}
        assert by_core == {f"t{i}": _row(i) for i in range(8)}
        assert by_driver == {f"t{i}": _row(i) for i in (0, 1, 2, 5, 6)}  # 5 ids, padded to 8: each once

        save = driver_sql.Statement(
            update(THING).where(THING.c.id == bindparam("b_id")).values(at=bindparam("b_at")), params=["b_id", "b_at"]
        )
        later = AT.astimezone(timezone(timedelta(hours=2))) + timedelta(days=1)  # stored as UTC
        gone = driver_sql.KeyIn(lambda where: delete(THING).where(where), key=THING.c.id)
        with writer(engine).begin() as connection:
            save.executemany(connection, [("t0", later), ("t7", later)])
            assert gone.execute(connection, ["t1", "t2", "t3"]) == 3
        with engine.connect() as connection:
            stored = dict(connection.execute(select(THING.c.id, THING.c.at)).all())
        assert stored["t0"] == stored["t7"] == later and stored["t0"].tzinfo is UTC
        assert sorted(stored) == ["t0", "t4", "t5", "t6", "t7"]
    finally:
        metadata.drop_all(engine)
        engine.dispose()


def test_sqlite_text_of_utc_datetimes_is_sqlalchemys() -> None:
    dialect = sqlite.dialect()
    ours = UtcDateTime().dialect_impl(dialect)
    to_text, from_text = ours.bind_processor(dialect), ours.result_processor(dialect, None)
    core = DateTime().dialect_impl(dialect)  # SQLAlchemy's own SQLite DATETIME
    core_text, core_read = core.bind_processor(dialect), core.result_processor(dialect, None)
    assert to_text is not None and from_text is not None and core_text is not None and core_read is not None
    rng = random.Random(7)
    for i in range(2000):
        when = datetime(2000, 1, 1, tzinfo=UTC) + timedelta(microseconds=rng.randrange(200 * 365 * 86400 * 10**6))
        when = when.astimezone(timezone(timedelta(minutes=rng.randrange(-720, 720))))
        if i % 5 == 0:
            when = when.replace(microsecond=0)
        stored = to_text(when)
        assert stored == core_text(when.astimezone(UTC))
        read, by_core = from_text(stored), core_read(stored)
        assert read is not None and by_core is not None
        assert read == by_core.replace(tzinfo=UTC) == when and read.tzinfo is UTC


def test_an_unsynced_transaction_leaves_its_connection_durable(tmp_path: Any) -> None:
    engine = writer(make_engine(f"sqlite:///{tmp_path / 'u.db'}"))
    metadata.create_all(engine)
    with engine.connect() as connection:
        with begin_unsynced(connection):
            connection.execute(insert(THING), [dict(zip(COLUMNS, _row(1), strict=True))])
            assert connection.exec_driver_sql("PRAGMA synchronous").scalar_one() == 1  # NORMAL
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar_one() == 2  # FULL again
    with engine.connect() as connection:
        assert connection.execute(select(THING.c.id)).scalars().all() == ["t1"]
    engine.dispose()
