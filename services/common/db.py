"""Database engines (SQLite in WAL mode or PostgreSQL) and group commit of concurrent writes.

SQLite commits cost an fsync each (~400/s here), so writes are queued and a single writer thread
commits everything waiting in one transaction. A caller's future resolves only after that commit:
nothing is acknowledged that is not durable.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from sqlalchemy import BigInteger, Column, Connection, Engine, Integer, Table, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.types import TypeEngine
from sqlmodel import Session, SQLModel, create_engine

from services.common.errors import Internal, ResourceExhausted, ServiceError, Unavailable, database_error
from services.common.observability import COMMIT_BATCH
from services.common.worker import Worker

log = logging.getLogger(__name__)

T = TypeVar("T")
Item = TypeVar("Item")

# A batch handler gets every queued item of its kind, in arrival order, and returns one result per
# item: a value, or the exception to raise to that item's caller. It must write nothing for an item
# it rejects, so one bad request never spoils the others in the same transaction.
WRITER_OPTION = "almere_writer"

BatchHandler = Callable[[Session, Sequence[Any]], Sequence[Any]]


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() != "sqlite":
        return create_engine(parsed, pool_pre_ping=True, pool_size=10)
    if parsed.database and parsed.database != ":memory:":
        _create_private(Path(parsed.database))
    engine = create_engine(parsed, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, issue BEGIN, so SAVEPOINTs work (SQLAlchemy's recipe).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")  # durable on power loss, not just on process crash
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Writers take the write lock up front: a deferred transaction that reads first and then
        # writes fails at once (SQLITE_BUSY) if another connection wrote in between.
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(WRITER_OPTION) else "BEGIN")

    return engine


def _create_private(database: Path) -> None:
    """The SQLite file, readable by its owner only (SQLite gives its -wal and -shm files the mode of
    the database file); a folder created for it is the owner's only too."""
    database.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.close(os.open(database, os.O_WRONLY | os.O_CREAT, 0o600))
    database.chmod(0o600)


def writer(engine: Engine) -> Engine:
    """The engine to use for transactions that write."""
    return engine.execution_options(**{WRITER_OPTION: True})


@contextlib.contextmanager
def begin_unsynced(connection: Connection) -> Iterator[Connection]:
    """A transaction on `connection` whose commit does not wait for the disk: for writes whose loss
    in a power cut (not in a crash of the process) is harmless, such as deleting outbox rows already
    on JetStream (published again, the stream drops the copies by their ids). The next durable
    commit of any writer syncs it along. Saves the commit's fsync: ~150 us of CPU, and the disk's
    milliseconds during which the SQLite writer lock, which every report commit waits for, is held."""
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:  # SQLite takes the setting per connection, outside a transaction
        connection.connection.dbapi_connection.execute("PRAGMA synchronous=NORMAL")  # type: ignore[union-attr]
    try:
        with connection.begin():
            if connection.dialect.name == "postgresql":
                connection.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
            yield connection
    finally:
        if sqlite:
            connection.connection.dbapi_connection.execute("PRAGMA synchronous=FULL")  # type: ignore[union-attr]


class _WriterLock:
    """One writer at a time on a SQLite file, across threads and processes, handed over at once.
    SQLite's own busy handler retries a locked BEGIN IMMEDIATE after sleeping 1, 2, 5, 10 ... ms,
    which with several writers (serving processes, the outbox relay) costs more than the commits."""

    def __init__(self, path: Path) -> None:
        self._fd = os.open(f"{path}-writer.lock", os.O_RDWR | os.O_CREAT, 0o600)
        self._threads = threading.Lock()  # flock is per open file: threads of one process need this too

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        with self._threads:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)


_writer_locks: dict[str, _WriterLock] = {}
_writer_locks_guard = threading.Lock()
# Each engine's lock (None: it needs none), found once: resolving the file's path is a system call
# per component, on every commit.
_engine_locks: weakref.WeakKeyDictionary[Engine, _WriterLock | None] = weakref.WeakKeyDictionary()


def writer_lock(engine: Engine) -> contextlib.AbstractContextManager[None]:
    """Hold around every writing transaction: on a SQLite file the lock above, else nothing
    (PostgreSQL's writers serialise per row, SELECT ... FOR UPDATE)."""
    try:
        lock = _engine_locks[engine]
    except KeyError:
        lock = _engine_locks[engine] = _lock_of(engine)
    return contextlib.nullcontext() if lock is None else lock.held()


def _lock_of(engine: Engine) -> _WriterLock | None:
    database = engine.url.database
    if engine.url.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    key = str(Path(database).resolve())
    with _writer_locks_guard:
        lock = _writer_locks.get(key)
        if lock is None:
            lock = _writer_locks[key] = _WriterLock(Path(key))
    return lock


def create_tables(engine: Engine, tables: Iterable[type[SQLModel]]) -> None:
    """Create a service's tables if missing, and add the nullable columns a newer release added to
    tables an older one created, and widen integers it made 64-bit (idempotent). Anything more needs a
    migration."""
    schema: list[Table] = [t.__table__ for t in tables]  # type: ignore[attr-defined]
    # As a writer: on a SQLite file other services (or replicas) may be writing meanwhile, and a
    # deferred transaction that reads the schema first could not then write (SQLITE_BUSY at once).
    with writer_lock(engine):
        SQLModel.metadata.create_all(writer(engine), tables=schema)
        _add_columns(engine, schema)


def _add_columns(engine: Engine, schema: list[Table]) -> None:
    existing = inspect(engine)
    with writer(engine).begin() as connection:
        for table in schema:
            have = {c["name"]: c["type"] for c in existing.get_columns(table.name)}
            for column in table.columns:
                if column.name in have:
                    _widen(connection, table.name, column, have[column.name])
                elif column.nullable:
                    kind = column.type.compile(dialect=engine.dialect)
                    # Names come from our own table definitions, never from input.
                    # Replicas starting together on PostgreSQL may race: it skips a column already
                    # added. A SQLite file has one service process migrating it (runtime.serve).
                    guard = "IF NOT EXISTS " if connection.dialect.name == "postgresql" else ""
                    connection.execute(text(f'ALTER TABLE {table.name} ADD COLUMN {guard}"{column.name}" {kind}'))


def _widen(connection: Connection, table: str, column: Column[Any], existing: TypeEngine[Any]) -> None:
    """INTEGER -> BIGINT where the model now says BigInteger (SQLite's INTEGER is 64-bit already)."""
    if connection.dialect.name != "postgresql" or not isinstance(column.type, BigInteger):
        return
    if isinstance(existing, Integer) and not isinstance(existing, BigInteger):
        connection.execute(text(f'ALTER TABLE {table} ALTER COLUMN "{column.name}" TYPE BIGINT'))


@dataclass
class _Pending(Generic[T]):
    handler: BatchHandler
    item: Any
    future: asyncio.Future[T]


@dataclass(kw_only=True)
class GroupCommitter:
    """Queues write operations and commits whatever is waiting in one transaction. At most
    `max_queue` wait: beyond, a write is refused at once (before anything of it is queued) rather
    than queued behind a backlog that grows memory and every caller's latency."""

    engine: Engine
    service: str
    max_batch: int = 512
    max_queue: int = 10_000
    after_commit: Callable[[], None] | None = None
    _queue: list[_Pending[Any]] = field(default_factory=list)
    _worker: Worker | None = None
    _writer: Engine | None = None

    def start(self) -> None:
        self._worker = Worker(f"{self.service}-group-commit", self._commit_queued)
        self._worker.start()

    async def stop(self) -> None:
        """Commit what is queued, then stop."""
        if self._worker is not None:
            await self._worker.stop()
            self._worker = None

    async def submit(self, handler: BatchHandler, item: Any) -> Any:
        if self._worker is None or not self._worker.running:
            raise Unavailable(f"{self.service} is shutting down")
        if len(self._queue) >= self.max_queue:
            raise ResourceExhausted(f"write queue full ({len(self._queue)} waiting); retry with backoff")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(handler, item, future))
        self._worker.wake()
        return await future

    async def _commit_queued(self) -> None:
        while self._queue:
            await self._commit_some()

    async def _commit_some(self) -> None:
        batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
        try:
            results = await asyncio.to_thread(self._commit, batch)
        except Exception as exc:
            if database_error(exc) is not None:
                # The database itself failed (disk full, server gone): the transaction rolled back as a
                # whole, and item by item would fail alike. Every caller in the batch is told.
                log.warning("group commit of %d operations failed: %s", len(batch), exc)
                _deliver(batch, [exc] * len(batch))
                return
            if len(batch) == 1:
                log.exception("write failed")
                _deliver(batch, [exc])
                return
            # One item broke the shared transaction (a bug, a constraint, a database error): commit the
            # items one by one so only its caller fails.
            log.warning("group commit of %d operations failed (%s); committing them one by one", len(batch), exc)
            for pending in batch:
                await self._commit_isolated(pending)
            return
        COMMIT_BATCH.labels(self.service).observe(len(batch))
        if self.after_commit:
            self.after_commit()
        _deliver(batch, results)

    async def _commit_isolated(self, pending: _Pending[Any]) -> None:
        try:
            results = await asyncio.to_thread(self._commit, [pending])
        except Exception as exc:
            log.exception("write failed")
            results = [exc]
        else:
            if self.after_commit:
                self.after_commit()
        _deliver([pending], results)

    def _commit(self, batch: list[_Pending[Any]]) -> list[Any]:
        results: list[Any] = []
        if self._writer is None:  # made once: each is a new engine object, with its options copied
            self._writer = writer(self.engine)
        with writer_lock(self.engine), Session(self._writer, expire_on_commit=False) as session, session.begin():
            start = 0
            # Consecutive items of the same handler run as one call: they can share reads and writes.
            while start < len(batch):
                end = start
                while end < len(batch) and batch[end].handler is batch[start].handler:
                    end += 1
                results.extend(batch[start].handler(session, [p.item for p in batch[start:end]]))
                start = end
        return results


def _deliver(batch: list[_Pending[Any]], results: list[Any]) -> None:
    """Hand each caller its result; the database's own failures become their statuses, other
    unexpected errors INTERNAL without leaking details."""
    for pending, result in zip(batch, results, strict=True):
        if pending.future.done():  # caller went away (cancelled); its write is committed anyway
            continue
        if isinstance(result, ServiceError):
            pending.future.set_exception(result)
        elif isinstance(result, BaseException):
            pending.future.set_exception(database_error(result) or Internal("the write failed; nothing was stored"))
        else:
            pending.future.set_result(result)
