"""Hot-path statements run by the DB-API driver itself, on a SQLAlchemy connection and in its
transaction, still parameterised.

At thousands of writes a second SQLAlchemy Core's execution costs more than the SQL: a cache key per
execution, a parameter dict per row built through its type layers, result rows wrapped. Here a
statement is compiled once per dialect (table and column names from our own table definitions, every
value bound) and the driver gets plain tuples or dicts. Values go through the very bind and result
processors SQLAlchemy would apply, so what is stored and read back is the same either way.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any, cast

from sqlalchemy import Column, Connection, Table, bindparam, insert, select
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import ClauseElement, ColumnElement
from sqlalchemy.sql.compiler import SQLCompiler

Processor = Callable[[Any], Any] | None


class _Compiled:
    """A statement compiled for one dialect: its SQL, how a row of values (in the order of the
    statement's `params`) becomes the driver's parameters, and how the driver's result rows become
    what SQLAlchemy would return (`columns`: what a SELECT returns)."""

    def __init__(
        self, statement: ClauseElement, *, params: Sequence[str], columns: Sequence[Column[Any]], dialect: Dialect
    ) -> None:
        compiled = cast(SQLCompiler, statement.compile(dialect=dialect))
        self.sql = compiled.string
        self._positional = bool(compiled.positional)
        names = (
            list(compiled.positiontup or ()) if self._positional else list(dict.fromkeys(compiled.bind_names.values()))
        )
        index = {name: i for i, name in enumerate(params)}
        # Per driver parameter, in the driver's order: which of the row's values it takes and its bind
        # processor, or (not one of `params`: a value written into the statement, e.g. its LIMIT) the
        # value itself, processed already.
        self._take: list[tuple[int | None, Processor, Any]] = []
        for name in names:
            bind = compiled.binds[name]
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if name in index:
                self._take.append((index[name], processor, None))
            else:
                value = bind.effective_value
                self._take.append((None, None, value if processor is None else processor(value)))
        self._names = names
        self._columns = columns
        self._dialect = dialect
        self._results: list[Processor] | None = None

    def parameters(self, row: Sequence[Any]) -> Any:
        values = [fixed if i is None else row[i] if p is None else p(row[i]) for i, p, fixed in self._take]
        return tuple(values) if self._positional else dict(zip(self._names, values, strict=True))

    def read(self, cursor: Any) -> list[tuple[Any, ...]]:
        if self._results is None:  # the driver's column types (PostgreSQL's) are known once it has run
            self._results = [
                column.type.dialect_impl(self._dialect).result_processor(self._dialect, description[1])
                for column, description in zip(self._columns, cursor.description, strict=True)
            ]
        processors = self._results
        return [tuple(v if p is None else p(v) for p, v in zip(processors, r, strict=True)) for r in cursor.fetchall()]


class Statement:
    """`statement`, whose values are the bind parameters `params`, compiled per dialect on first use."""

    def __init__(self, statement: ClauseElement, *, params: Sequence[str], columns: Sequence[Column[Any]] = ()) -> None:
        self._statement = statement
        self._params = list(params)
        self._columns = list(columns)
        self._compiled: weakref.WeakKeyDictionary[Dialect, _Compiled] = weakref.WeakKeyDictionary()

    def _for(self, dialect: Dialect) -> _Compiled:
        compiled = self._compiled.get(dialect)
        if compiled is None:
            compiled = self._compiled[dialect] = _Compiled(
                self._statement, params=self._params, columns=self._columns, dialect=dialect
            )
        return compiled

    def executemany(self, connection: Connection, rows: Iterable[Sequence[Any]]) -> None:
        """Run the statement once per row of values (in `params` order)."""
        compiled = self._for(connection.dialect)
        cursor = connection.connection.cursor()
        try:
            cursor.executemany(compiled.sql, [compiled.parameters(r) for r in rows])
        finally:
            cursor.close()

    def fetch(self, connection: Connection, values: Sequence[Any]) -> list[tuple[Any, ...]]:
        """Run the statement with these values; its rows, as tuples of `columns`."""
        compiled = self._for(connection.dialect)
        cursor = connection.connection.cursor()
        try:
            cursor.execute(compiled.sql, compiled.parameters(values))
            return compiled.read(cursor)
        finally:
            cursor.close()

    def execute(self, connection: Connection, values: Sequence[Any]) -> int:
        """Run the statement with these values; how many rows it changed."""
        compiled = self._for(connection.dialect)
        cursor = connection.connection.cursor()
        try:
            cursor.execute(compiled.sql, compiled.parameters(values))
            return int(cursor.rowcount)
        finally:
            cursor.close()


class Insert:
    """INSERT of `columns` into `table`, many rows at once (each a sequence in `columns` order)."""

    def __init__(self, table: Table, columns: Sequence[str]) -> None:
        # inline: no RETURNING of the generated keys (PostgreSQL), nobody reads them
        self._statement = Statement(insert(table).inline().values({c: bindparam(c) for c in columns}), params=columns)

    def executemany(self, connection: Connection, rows: Iterable[Sequence[Any]]) -> None:
        self._statement.executemany(connection, rows)


class KeyIn:
    """A statement over the rows whose `key` is one of the given values: `make(condition)` builds it
    (a SELECT of `columns`, a DELETE). The values are padded to the next power of two with copies of
    one of them, so a few compiled statements serve every number of values."""

    def __init__(
        self,
        make: Callable[[ColumnElement[bool]], ClauseElement],
        *,
        key: Column[Any],
        columns: Sequence[Column[Any]] = (),
    ) -> None:
        self._make = make
        self._key = key
        self._columns = list(columns)
        self._by_count: dict[int, Statement] = {}

    def _statement(self, count: int) -> Statement:
        statement = self._by_count.get(count)
        if statement is None:
            params = [f"k{i}" for i in range(count)]
            condition = self._key.in_([bindparam(p) for p in params])
            statement = self._by_count[count] = Statement(self._make(condition), params=params, columns=self._columns)
        return statement

    def _padded(self, values: Iterable[Any]) -> list[Any]:
        wanted = list(set(values))
        size = 1 << (len(wanted) - 1).bit_length() if wanted else 0
        return wanted + wanted[-1:] * (size - len(wanted))

    def fetch(self, connection: Connection, values: Iterable[Any]) -> list[tuple[Any, ...]]:
        """The rows (tuples of `columns`) whose key is one of `values`."""
        wanted = self._padded(values)
        return self._statement(len(wanted)).fetch(connection, wanted) if wanted else []

    def execute(self, connection: Connection, values: Iterable[Any]) -> int:
        """Run the statement for `values`; how many rows it changed."""
        wanted = self._padded(values)
        return self._statement(len(wanted)).execute(connection, wanted) if wanted else 0


def select_for_update(table: Table, columns: Sequence[str], *, key: str) -> KeyIn:
    """SELECT `columns` of `table`'s rows whose `key` is one of the values, FOR UPDATE (replicas
    sharing PostgreSQL serialise their writes per row; SQLite has one writer anyway)."""
    selected = [table.c[c] for c in columns]
    return KeyIn(lambda where: select(*selected).where(where).with_for_update(), key=table.c[key], columns=selected)
