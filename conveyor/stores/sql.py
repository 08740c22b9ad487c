"""The SQL store: SQLAlchemy 2 Core over SQLite (the default) or PostgreSQL.

The schema, engines and migrations are in ``sql_schema.py``; ``open()``
brings the database to the newest revision. The store's parts live beside
it: the writer's batch of changes (``sql_changes.py``), claims and leases
(``sql_leases.py``), counts and reports (``sql_reports.py``), and the group
commit of concurrent submits (``sql_commit.py``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import anyio.to_thread
import sqlalchemy as sa
from sqlalchemy import exc
from sqlalchemy.engine import Engine

from conveyor.errors import InvalidParams, StoreError, outage_reason
from conveyor.records import FINAL_STATES, Status, TaskEvent, TaskRecord
from conveyor.stores.base import DuplicateTask
from conveyor.stores.deadlines import STALE_CONNECTION_FAILS_WITHIN, Deadlines
from conveyor.stores.fork_guard import IN_USE, Guard, SQLiteConnection
from conveyor.stores.pg_reads import AsyncReads
from conveyor.stores.sql_changes import JSON_COLUMNS, SqlChanges, raw_value
from conveyor.stores.sql_commit import GroupCommit, Unnest, unnest_insert, unnest_params
from conveyor.stores.sql_leases import SqlLeases
from conveyor.stores.sql_reports import SqlReports
from conveyor.stores.sql_schema import (
    COLUMNS,
    EVENT_COLUMNS,
    VERSION_TABLE,
    create_engine_for,
    event_from_row,
    events_table,
    metadata,
    tasks_table,
    upgrade,
)
from conveyor.stores.sql_schema import record_from_row as _record
from conveyor.stores.sql_schema import row_from_record as _row

_GET_SQL = f"SELECT {', '.join(COLUMNS)} FROM conveyor_tasks WHERE id = ?"
_GET_SQL_PG = _GET_SQL.replace("?", "%s")
_EVENTS_SQL = f"SELECT {', '.join(EVENT_COLUMNS)} FROM {events_table.name} WHERE task_id = ? AND seq > ? ORDER BY seq"
_EVENTS_SQL_PG = _EVENTS_SQL.replace("?", "%s")

__all__ = ["VERSION_TABLE", "SqlStore", "create_engine_for", "metadata", "tasks_table", "upgrade"]

log = logging.getLogger("conveyor.stores.sql")
_T = TypeVar("_T")


_FINAL = [s.value for s in FINAL_STATES]
_COLUMNS = COLUMNS
_INSERT_UNNEST = unnest_insert(tasks_table)


class SqlStore(SqlChanges, SqlLeases, SqlReports):
    def __init__(
        self,
        url: str,
        *,
        engine: Engine | None = None,
        migrate: bool = True,
        migrations: Mapping[str, Path] | None = None,
        deadlines: Deadlines | None = None,
    ) -> None:
        self.url = url
        self._migrations = dict(migrations or {})
        self.deadlines = deadlines or Deadlines()
        self.engine = engine or create_engine_for(url, self.deadlines)
        self.kind = self.engine.dialect.name
        self._migrate = migrate
        # SQLite has one writer at a time and its busy handler sleeps in
        # growing steps; queueing our own writers on a lock is much faster.
        # Both are fork guards: a fork waits for a write or a checkpoint in flight (fork_guard.py).
        self._write_lock: contextlib.AbstractContextManager[Any] = (
            Guard(rank=1) if self.kind == "sqlite" else contextlib.nullcontext()
        )
        self._checkpoint_lock = Guard(rank=0)
        self._update_cache: dict[tuple[str, ...], sa.Update] = {}
        self._unnest_cache: dict[tuple[str, ...], Unnest] = {}
        # SQLite writes go through one DBAPI connection with pre-rendered SQL:
        # SQLAlchemy's per-statement work costs five times SQLite's own commit,
        # and every submit and every flush is a write.
        self._raw: Any = None
        self._raw_sql: dict[tuple[str, ...], str] = {}
        self._checkpointer: threading.Thread | None = None
        self._checkpoint_stop = threading.Event()
        #: autocommit connections for start_run on PostgreSQL, made on first use
        self._claims: Engine | None = None
        #: the writer's and the lease keeper's own connections on PostgreSQL, made
        #: on first use: requests that hold every pooled connection cannot starve them
        self._upkeep: Engine | None = None
        #: autocommit connections for submits on PostgreSQL, made on first use
        self._submits: Engine | None = None
        self._reads: Engine | None = None
        self._async_reads: AsyncReads | None = None
        #: concurrent submits share one commit (see sql_commit.py)
        self.inserts: GroupCommit[TaskRecord] = GroupCommit(self._insert_now)
        # A SQLite file's one-record reads: a connection per calling thread (an event loop's, mostly).
        database = self.engine.url.database if self.kind == "sqlite" else None
        self._read_path = database if database and database != ":memory:" and "mode=memory" not in url else None
        self._readers = threading.local()

    # -- connection -------------------------------------------------------

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except exc.IntegrityError:
            raise
        except exc.TimeoutError as e:
            # Every pooled connection is busy (often: all waiting on a hung server).
            raise StoreError(f"database unavailable: no connection free within {self.deadlines.pool:g}s") from e
        except exc.DataError as e:
            # A value the column cannot hold (too long, out of range): the caller's input, not an outage.
            raise InvalidParams.for_field(
                "params", "holds a value the database cannot store", type="data", summary="Invalid request: a value"
            ) from e
        except (exc.OperationalError, exc.InterfaceError, exc.DisconnectionError) as e:
            raise StoreError(f"database unavailable: {outage_reason(e)}") from e
        except exc.DBAPIError as e:
            if e.connection_invalidated:
                raise StoreError("database unavailable: connection lost") from e
            raise

    @contextlib.contextmanager
    def _write(self) -> Iterator[sa.Connection]:
        with self._errors(), self._write_lock, self.engine.begin() as conn:
            yield conn

    @contextlib.contextmanager
    def _upkeep_write(self) -> Iterator[sa.Connection]:
        """A transaction on the upkeep engine (PostgreSQL) or the main one (SQLite)."""
        if self.kind == "sqlite":
            with self._write() as conn:
                yield conn
            return
        with self._errors():
            if self._upkeep is None:
                # No ping before each batch (a round trip per flush): a connection the server
                # dropped fails the batch, the pool replaces it, and the writer writes it again.
                self._upkeep = create_engine_for(
                    self.url, self.deadlines, pool_size=2, max_overflow=2, pool_pre_ping=False
                )
            with self._upkeep.begin() as conn:
                yield conn

    @contextlib.contextmanager
    def _read(self) -> Iterator[sa.Connection]:
        with self._errors(), self.engine.connect() as conn:
            yield conn

    def open(self) -> None:
        if self._migrate:
            with self._errors():
                upgrade(self.engine, migrations=self._migrations)
        if self.kind == "sqlite" and self._checkpointer is None and ":memory:" not in self.url:
            self._checkpoint_stop.clear()
            self._checkpointer = threading.Thread(target=self._checkpoints, name="conveyor-checkpoint", daemon=True)
            self._checkpointer.start()

    def _checkpoints(self, interval: float = 0.5) -> None:
        """Copy the SQLite WAL back into the database file, off the write path."""
        conn: Any = None
        while not self._checkpoint_stop.wait(interval):
            try:
                with self._checkpoint_lock:
                    if conn is None:
                        conn = self.engine.raw_connection()
                        conn.detach()  # kept for good, under the checkpoint guard
                    cur = conn.cursor()
                    cur.execute("PRAGMA wal_checkpoint(PASSIVE)")
                    _busy, wal_pages, _done = cur.fetchone()
                    cur.close()
                    # A WAL that PASSIVE could never finish keeps growing; reset it
                    # once it is large, while holding off our own writers briefly.
                    if wal_pages > 50_000:
                        with self._write_lock:
                            cur = conn.cursor()
                            cur.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                            cur.close()
            except Exception as e:  # the next round tries again
                log.debug("checkpoint failed: %s", e)
                conn = None
        if conn is not None:
            conn.close()

    def close(self) -> None:
        self._checkpoint_stop.set()
        if self._checkpointer is not None:
            self._checkpointer.join(5)
            self._checkpointer = None
        with self._write_lock:
            if self._raw is not None:
                self._raw.close()
                self._raw = None
        self.engine.dispose()
        for extra in (self._claims, self._upkeep, self._submits, self._reads):
            if extra is not None:
                extra.dispose()
        self._claims = self._upkeep = self._submits = self._reads = None
        if self._async_reads is not None:
            self._async_reads.close()
            self._async_reads = None

    @contextlib.contextmanager
    def _raw_write(self) -> Iterator[Any]:
        """A cursor on the dedicated SQLite write connection, committed on exit."""
        with self._write_lock:
            try:
                if self._raw is None:
                    self._raw = self.engine.raw_connection()
                    self._raw.detach()  # kept for good, under the write guard
                cur = self._raw.cursor()
                try:
                    yield cur
                    self._raw.commit()
                except BaseException:
                    self._raw.rollback()
                    raise
                finally:
                    cur.close()
            except sqlite3.IntegrityError:
                raise
            except sqlite3.Error as e:
                raise StoreError(f"database unavailable: {outage_reason(e)}") from e

    def ping(self) -> None:
        with self._read() as conn:
            conn.execute(sa.text("SELECT 1"))

    # -- records ----------------------------------------------------------

    def insert(self, records: Sequence[TaskRecord]) -> None:
        if records:
            self.inserts.write(records)

    def _insert_now(self, records: Sequence[TaskRecord]) -> None:
        if self.kind == "sqlite":
            sql = self._raw_sql.get(("insert",))
            if sql is None:
                sql = f"INSERT INTO conveyor_tasks ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"
                self._raw_sql[("insert",)] = sql
            rows = [tuple(raw_value(name, getattr(r, name)) for name in _COLUMNS) for r in records]
            try:
                with self._raw_write() as cur:
                    cur.executemany(sql, rows)
            except sqlite3.IntegrityError as e:
                raise DuplicateTask(str(e)) from e
            return
        values = unnest_params([_row(r) for r in records], _COLUMNS, JSON_COLUMNS)
        try:
            # One statement on an autocommit connection is its own transaction:
            # one round trip and one WAL flush, no BEGIN, no ping, any batch size.
            self._autocommit(lambda conn: _INSERT_UNNEST.execute(conn, values))
        except exc.IntegrityError as e:
            raise DuplicateTask(str(e.orig)) from e

    def get(self, task_id: str) -> TaskRecord | None:
        if self.reads_inline:
            return self._get_raw(task_id)
        row = self._read_one(tasks_table.select().where(tasks_table.c.id == task_id))
        return _record(row) if row is not None else None

    def _read_one(self, statement: sa.Select[Any]) -> sa.Row[Any] | None:
        """The first row of one statement on the read engine; once more on a connection found dead at once.

        PostgreSQL's reads (the status polls) run on an autocommit engine with
        no ping: one round trip where the main engine's transaction made four
        (ping, BEGIN, SELECT, ROLLBACK; a single SELECT under READ COMMITTED
        sees the same). A pooled connection the server dropped (a restart)
        then fails its first use; that read is made again on a fresh one,
        unless it failed only after a while (a hung server: no second wait).
        """
        if self._reads is None:
            self._reads = create_engine_for(
                self.url, self.deadlines, isolation_level="AUTOCOMMIT", pool_pre_ping=False, pool_recycle=1800
            )
        started = time.monotonic()
        try:
            with self._errors(), self._reads.connect() as conn:
                return conn.execute(statement).first()
        except StoreError as e:
            stale = isinstance(e.__cause__, exc.DBAPIError) and e.__cause__.connection_invalidated
            if not stale or time.monotonic() - started > STALE_CONNECTION_FAILS_WITHIN:
                raise
        with self._errors(), self._reads.connect() as conn:
            return conn.execute(statement).first()

    async def aget(self, task_id: str) -> TaskRecord | None:
        """SQLite: read on the loop (a WAL reader never waits); PostgreSQL: an asyncio connection's read."""
        if self.reads_inline:
            return self._get_raw(task_id)
        if self.kind != "postgresql":
            return await anyio.to_thread.run_sync(self.get, task_id)
        if self._async_reads is None:
            self._async_reads = AsyncReads(self.url, self.deadlines)
        row = await self._async_reads.fetch_one(_GET_SQL_PG, (task_id,))
        # psycopg decodes jsonb itself: the values are the record's as they are.
        return TaskRecord.from_dict(dict(zip(COLUMNS, row, strict=True))) if row is not None else None

    async def aevents(self, task_id: str, after_seq: int = 0) -> list[TaskEvent]:
        """``events`` for an event loop, read as ``aget`` reads."""
        if self.reads_inline:
            try:
                with IN_USE:
                    rows = self._raw_reader().execute(_EVENTS_SQL, (task_id, after_seq)).fetchall()
            except sqlite3.Error as e:
                raise StoreError(f"database unavailable: {outage_reason(e)}") from e
        elif self.kind == "postgresql":
            if self._async_reads is None:
                self._async_reads = AsyncReads(self.url, self.deadlines)
            rows = await self._async_reads.fetch_all(_EVENTS_SQL_PG, (task_id, after_seq))
        else:
            return await anyio.to_thread.run_sync(self.events, task_id, after_seq)
        return [event_from_row(row) for row in rows]

    @property
    def reads_inline(self) -> bool:
        """A read of one record is cheaper than a hop to a worker thread, so ``aget`` makes it on the
        event loop: true of a SQLite file (a WAL reader never waits for the writer)."""
        return self._read_path is not None

    def _get_raw(self, task_id: str) -> TaskRecord | None:
        """One record through this thread's own read connection and pre-rendered SQL: SQLAlchemy's
        compile, pool checkout and row processing cost several times SQLite's own read."""
        try:
            with IN_USE:
                row = self._raw_reader().execute(_GET_SQL, (task_id,)).fetchone()
        except sqlite3.Error as e:
            raise StoreError(f"database unavailable: {outage_reason(e)}") from e
        if row is None:
            return None
        values = dict(zip(COLUMNS, row, strict=True))
        for name in JSON_COLUMNS:
            # A JSON column has NUMERIC affinity in SQLite: a number's text comes back as the number.
            if isinstance(values[name], str | bytes):
                values[name] = json.loads(values[name])
        return TaskRecord.from_dict(values)

    def _raw_reader(self) -> sqlite3.Connection:
        """This thread's own read connection to the SQLite file (opened on first use)."""
        conn: sqlite3.Connection | None = getattr(self._readers, "conn", None)
        if conn is None:
            wait = self.deadlines.statement
            conn = sqlite3.connect(
                self._read_path or "", timeout=wait, check_same_thread=False, factory=SQLiteConnection
            )
            conn.execute(f"PRAGMA busy_timeout={int(wait * 1000)}")
            self._readers.conn = conn
        return conn

    def cancel_waiting(self, task_id: str, at: float) -> TaskRecord | None:
        t = tasks_table.c
        with self._write() as conn:
            result = conn.execute(
                tasks_table.update()
                .where(t.id == task_id, t.state.in_([Status.PENDING.value, Status.RETRY.value]))
                .values(state=Status.CANCELLED.value, finished_at=at, updated_at=at, message="Cancelled")
            )
            if result.rowcount != 1:
                return None
            row = conn.execute(tasks_table.select().where(t.id == task_id)).first()
            assert row is not None
            conn.execute(
                events_table.insert(),
                [
                    {
                        "task_id": task_id,
                        "at": at,
                        "kind": "state",
                        "state": Status.CANCELLED.value,
                        "progress": row.progress,
                        "message": "Cancelled",
                    }
                ],
            )
        return _record(row)

    def request_cancel(self, task_id: str) -> bool:
        t = tasks_table.c
        with self._write() as conn:
            result = conn.execute(
                tasks_table.update().where(t.id == task_id, t.state.notin_(_FINAL)).values(cancel_requested=True)
            )
        return bool(result.rowcount == 1)

    def reset(
        self,
        task_id: str,
        fields: dict[str, Any],
        from_states: Sequence[Status],
        event: TaskEvent | None = None,
    ) -> TaskRecord | None:
        t = tasks_table.c
        values = {k: (v.value if isinstance(v, Status) else v) for k, v in fields.items()}
        with self._write() as conn:
            result = conn.execute(
                tasks_table.update()
                .where(t.id == task_id, t.state.in_([Status(s).value for s in from_states]))
                .values(**values)
            )
            if result.rowcount != 1:
                return None
            if event is not None:
                conn.execute(
                    events_table.insert(),
                    [
                        {
                            "task_id": task_id,
                            "at": event.at,
                            "kind": event.kind,
                            "state": event.state.value,
                            "progress": event.progress,
                            "message": event.message,
                        }
                    ],
                )
            row = conn.execute(tasks_table.select().where(t.id == task_id)).first()
        return _record(row) if row is not None else None

    def _autocommit(self, run: Callable[[sa.Connection], _T], engine: Engine | None = None) -> _T:
        """``run`` on an autocommit connection that is not pinged first (PostgreSQL).

        A connection the server dropped fails the statement; it is replaced and
        the statement tried once more (an autocommit statement that failed did
        not commit, so running it again is safe).
        """
        for attempt in (1, 2):
            try:
                with self._errors(), (engine or self._submit_engine()).connect() as conn:
                    return run(conn)
            except StoreError as e:
                cause = e.__cause__
                if attempt == 2 or not (isinstance(cause, exc.DBAPIError) and cause.connection_invalidated):
                    raise
        raise AssertionError("unreachable")

    def _submit_engine(self) -> Engine:
        if self._submits is None:
            # Durable commits (synchronous_commit stays on): a submit's id is
            # returned only once its row is on disk. Only the group commit's
            # leader uses it, so two connections are plenty.
            self._submits = create_engine_for(
                self.url,
                self.deadlines,
                isolation_level="AUTOCOMMIT",
                pool_pre_ping=False,
                pool_size=2,
                max_overflow=4,
                pool_recycle=1800,
            )
        return self._submits

    def after_fork(self) -> None:
        """In a forked child: leave the parent's pooled connections to the parent."""
        self.engine.dispose(close=False)
        for extra in (self._claims, self._upkeep, self._submits, self._reads):
            if extra is not None:
                extra.dispose(close=False)
        self._async_reads = None  # the parent's connections stay the parent's
        self._readers = threading.local()  # the forking thread's read connection stays the parent's

    def purge_expired(self, at: float, limit: int = 10_000) -> int:
        t = tasks_table.c
        with self._write() as conn:
            ids = [
                r[0]
                for r in conn.execute(sa.select(t.id).where(t.state.in_(_FINAL), t.expires_at <= at).limit(limit)).all()
            ]
            if ids:
                conn.execute(events_table.delete().where(events_table.c.task_id.in_(ids)))
                conn.execute(tasks_table.delete().where(t.id.in_(ids)))
        return len(ids)
