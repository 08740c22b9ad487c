"""Group commit: concurrent writers share one transaction and one WAL flush.

A submit is durable only once its commit has reached the disk, and on
PostgreSQL that flush, not the insert, is most of a submit's time. Writers
that arrive while a commit is in flight queue here; when it ends, the first of
them becomes the leader and commits every queued write in one transaction,
then wakes the others. A lone writer commits at once, as before: nobody waits
for a batch to fill.

A write that fails on its own data (a duplicate idempotency key, a value the
column cannot hold) must not fail its neighbours: a group whose commit fails
for any reason but an unreachable store is written again one write per
transaction, so each writer gets its own answer.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import re
import threading
from collections.abc import Callable, Collection, Sequence
from typing import Any, Generic, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql.base import PGDialect

from conveyor.errors import StoreError

__all__ = ["GroupCommit", "Unnest", "unnest_insert", "unnest_params", "unnest_update"]

T = TypeVar("T")


class _Slot(Generic[T]):
    __slots__ = ("done", "error", "items", "lead", "woken")

    def __init__(self, items: Sequence[T]) -> None:
        self.items = items
        self.woken = threading.Event()
        #: set when this writer is to commit the queue rather than wait for its answer
        self.lead = False
        self.done = False
        self.error: BaseException | None = None


class GroupCommit(Generic[T]):
    """Runs ``commit(items)`` for every queued write at once, in the caller's thread."""

    def __init__(self, commit: Callable[[Sequence[T]], None]) -> None:
        self._commit = commit
        self._lock = threading.Lock()
        self._queue: list[_Slot[T]] = []
        self._leading = False
        #: how many commits ran and how many writes they held (read by tests and benches)
        self.commits = 0
        self.writes = 0

    def write(self, items: Sequence[T]) -> None:
        """Return once ``items`` are committed; raise what their commit raised."""
        slot = _Slot(items)
        with self._lock:
            self._queue.append(slot)
            lead = not self._leading
            self._leading = True
        if not lead:
            slot.woken.wait()
        if not slot.done:
            self._lead()
        if slot.error is not None:
            raise slot.error

    def _lead(self) -> None:
        with self._lock:
            group, self._queue = self._queue, []
        try:
            self._run(group)
        finally:
            with self._lock:
                if self._queue:
                    # Hand over to the first writer that queued meanwhile; it commits the rest.
                    nxt = self._queue[0]
                    nxt.lead = True
                    nxt.woken.set()
                else:
                    self._leading = False

    def _run(self, group: list[_Slot[T]]) -> None:
        try:
            self._commit([item for s in group for item in s.items])
            errors: list[BaseException | None] = [None] * len(group)
            self.commits += 1
        except StoreError as e:
            errors = [e] * len(group)
        except BaseException as e:
            # One write failed on its own data, or several did: each is written alone for its own answer.
            errors = [e] if len(group) == 1 else [self._alone(s) for s in group]
        self.writes += len(group)
        for s, error in zip(group, errors, strict=True):
            s.error = error
            s.done = True
            s.woken.set()

    def _alone(self, slot: _Slot[T]) -> BaseException | None:
        try:
            self._commit(slot.items)
        except BaseException as e:
            return e
        self.commits += 1
        return None


@dataclasses.dataclass(frozen=True)
class Unnest:
    """A statement over ``unnest`` of one array per column, its arrays sent in binary.

    In text format psycopg quotes every array element in Python (a regular
    expression per value): 0.6 s of a 10,000-task bulk submit's 1.9 s. In
    binary there is nothing to quote, but every element of an array must be
    of one Python type, so each column's values are first made its type's
    (an ``int`` in a float column, a ``Status`` in a text one).
    """

    sql: str
    #: array parameter → what makes one of its values the column's Python type
    coerce: dict[str, Callable[[Any], Any]]

    def execute(self, conn: sa.Connection, arrays: dict[str, list[Any]]) -> Any:
        params = {}
        for name, values in arrays.items():
            to = self.coerce[name]
            params[name] = [None if v is None else to(v) for v in values]
        return conn.exec_driver_sql(self.sql, params)


def _text(v: Any) -> str:
    return v if type(v) is str else v.value if isinstance(v, enum.Enum) else str(v)


def _coercer(column: sa.Column[Any]) -> Callable[[Any], Any]:
    t = column.type
    if isinstance(t, (sa.Float, sa.Numeric)):
        return float
    if isinstance(t, sa.Integer):
        return int
    if isinstance(t, sa.Boolean):
        return bool
    return _text  # strings, and JSON sent as its text


def unnest_insert(table: sa.Table, without: Collection[str] = ()) -> Unnest:
    """``INSERT ... SELECT * FROM unnest(:col1, :col2, ...)``: any number of rows as one short statement.

    PostgreSQL only. One array per column keeps the statement text the same
    for every batch size, so the driver parses it once; a multi-row VALUES
    statement is new text for each size and psycopg spends longer splitting
    its placeholders than the server spends inserting. The arrays are cast to
    unbounded element types: an explicit cast to ``varchar(36)`` would
    truncate silently, while the INSERT's own assignment raises on a value too
    long, as any insert does. Columns in ``without`` take their defaults.
    """
    dialect = PGDialect()  # type: ignore[no-untyped-call]
    columns = [c for c in table.columns if c.name not in without]
    casts = ", ".join(f"CAST(%({c.name})b AS {_array_type(c, dialect)})" for c in columns)
    names = ", ".join(c.name for c in columns)
    # In the arrays' order: a column left out (a serial key) is numbered as the rows come.
    return Unnest(
        f"INSERT INTO {table.name} ({names}) SELECT {names} FROM unnest({casts}) WITH ORDINALITY"
        f" AS u({names}, _n) ORDER BY _n",
        {c.name: _coercer(c) for c in columns},
    )


def _array_type(column: sa.Column[Any], dialect: PGDialect) -> str:
    return re.sub(r"[(][0-9]+[)]", "", column.type.compile(dialect=dialect)) + "[]"


def unnest_update(table: sa.Table, keys: Sequence[str], unless_state_in: str) -> Unnest:
    """``UPDATE ... FROM unnest(:id, :col1, ...)``: one statement sets ``keys`` on any number of rows.

    PostgreSQL only, for the same reason as ``unnest_insert``: an executemany
    is one statement (parse, plan, execute) a row on the server, which is most
    of a busy writer's batch. Rows whose ``state`` is in ``unless_state_in``
    (an SQL list of literals) are left alone. Ids must be distinct in a batch:
    an UPDATE ... FROM changes each row once, with one of its candidate rows.
    """
    dialect = PGDialect()  # type: ignore[no-untyped-call]
    sets = ", ".join(f"{k} = v.{k}" for k in keys)
    arrays = ", ".join(f"CAST(%({k})b AS {_array_type(table.c[k], dialect)})" for k in keys)
    names = ", ".join(keys)
    ids = f"CAST(%(_id)b AS {_array_type(table.c.id, dialect)})"
    return Unnest(
        f"UPDATE {table.name} AS t SET {sets} FROM unnest({ids}, {arrays})"
        f" AS v(_id, {names}) WHERE t.id = v._id AND t.state NOT IN ({unless_state_in})",
        {"_id": _text, **{k: _coercer(table.c[k]) for k in keys}},
    )


def unnest_params(
    rows: Sequence[dict[str, Any]], columns: Sequence[str], json_columns: Collection[str]
) -> dict[str, Any]:
    """The column arrays of ``unnest_insert``; JSON as text (``null`` for None, as SQLAlchemy's JSON type writes it)."""
    params: dict[str, Any] = {}
    for name in columns:
        values = [row[name] for row in rows]
        params[name] = [json.dumps(v) for v in values] if name in json_columns else values
    return params
