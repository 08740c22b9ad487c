"""PostgreSQL reads of one record made on the event loop (psycopg's asyncio connections), not in a worker thread.

A status poll on PostgreSQL used to hop to a worker thread for a blocking
read. Under many concurrent polls those threads, each releasing the GIL
for its round trip and fighting to take it back, starved the event loop:
~500 status reads a second where SQLite, read on the loop, answered
~3,000. Here the read is one prepared SELECT on an autocommit asyncio
connection, awaited on the loop that asked.

Connections are kept per event loop (an asyncio connection belongs to the
loop that opened it; a store outlives the loops of test clients) and closed
without awaiting (``close()`` runs from a plain thread at shutdown), which
is why this is a small list of idle connections and not psycopg_pool's
pool, which is bound to one loop and closed with ``await``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import sqlalchemy as sa

from conveyor.errors import StoreError, outage_reason
from conveyor.stores.deadlines import STALE_CONNECTION_FAILS_WITHIN, Deadlines, pg_connect_args

__all__ = ["AsyncReads"]

#: idle connections kept per event loop (a poll holds one for one round trip)
IDLE = 8


class _LoopConnections:
    """One event loop's connections: the idle ones, and a bound on those in use."""

    def __init__(self, size: int) -> None:
        self.idle: list[Any] = []
        self.slots = asyncio.Semaphore(size)


class AsyncReads:
    def __init__(self, url: str, deadlines: Deadlines, size: int = IDLE) -> None:
        self.conninfo = sa.engine.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        self.deadlines = deadlines
        self.size = size
        self._loops: dict[asyncio.AbstractEventLoop, _LoopConnections] = {}

    async def fetch_one(self, sql: str, params: tuple[Any, ...]) -> tuple[Any, ...] | None:
        """The first row of ``sql``; StoreError when the database is unreachable or too slow."""
        row: tuple[Any, ...] | None = await self._read(sql, params, one=True)
        return row

    async def fetch_all(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        """Every row of ``sql``, as ``fetch_one``."""
        rows: list[tuple[Any, ...]] = await self._read(sql, params, one=False)
        return rows

    async def _read(self, sql: str, params: tuple[Any, ...], *, one: bool) -> Any:
        loop = asyncio.get_running_loop()
        conns = self._loops.get(loop)
        if conns is None:
            self._forget_closed_loops()
            conns = self._loops[loop] = _LoopConnections(self.size)
        try:
            async with asyncio.timeout(self.deadlines.pool):
                await conns.slots.acquire()
        except TimeoutError:
            raise StoreError(f"database unavailable: no connection free within {self.deadlines.pool:g}s") from None
        started = time.monotonic()
        try:
            try:
                return await self._fetch(conns, sql, params, one)
            except _Stale:
                if time.monotonic() - started > STALE_CONNECTION_FAILS_WITHIN:
                    raise StoreError("database unavailable: connection lost") from None
            # The other idle connections date from before the restart too: once more, on a fresh one.
            while conns.idle:
                _discard(conns.idle.pop())
            return await self._fetch(conns, sql, params, one)
        finally:
            conns.slots.release()

    async def _fetch(self, conns: _LoopConnections, sql: str, params: tuple[Any, ...], one: bool) -> Any:
        import psycopg

        conn = conns.idle.pop() if conns.idle else None
        reused = conn is not None
        try:
            if conn is None:
                try:
                    async with asyncio.timeout(self.deadlines.round_trip):
                        conn = await psycopg.AsyncConnection.connect(
                            self.conninfo, autocommit=True, **pg_connect_args(self.deadlines)
                        )
                except TimeoutError:
                    raise StoreError("database unavailable: no answer within its deadline") from None
            # Not cancelled at its deadline: a cancelled psycopg wait asks the server to cancel the
            # query, which on a hung server blocks the loop for seconds. The connection is closed
            # first; the orphaned wait, cancelled then, has no query in flight left to cancel.
            query = asyncio.ensure_future(_query(conn, sql, params, one))
            try:
                done, _ = await asyncio.wait({query}, timeout=self.deadlines.round_trip)
            finally:
                if not query.done():  # past the deadline, or the caller was cancelled
                    _discard(conn)
                    query.cancel()
            if not done:
                raise StoreError("database unavailable: no answer within its deadline")
            row = query.result()
        except psycopg.OperationalError as e:
            if reused and conn is not None and conn.broken:
                _discard(conn)
                raise _Stale from e
            _discard(conn)
            raise StoreError(f"database unavailable: {outage_reason(e)}") from e
        except BaseException:
            _discard(conn)
            raise
        if any(c is conns for c in self._loops.values()):
            conns.idle.append(conn)
        else:
            _discard(conn)  # closed meanwhile: this read was the last on it
        return row

    def _forget_closed_loops(self) -> None:
        """A loop that has closed (a test client's) leaves its idle connections: close them."""
        for loop in [lp for lp in self._loops if lp.is_closed()]:
            for conn in self._loops.pop(loop).idle:
                _discard(conn)

    def close(self) -> None:
        """Close every idle connection, from any thread, whether or not its loop still runs.

        (A connection in use at that moment is closed by the read that holds it, once it has answered.)
        """
        loops, self._loops = self._loops, {}
        for conns in loops.values():
            for conn in conns.idle:
                _discard(conn)


async def _query(conn: Any, sql: str, params: tuple[Any, ...], one: bool) -> Any:
    cursor = await conn.execute(sql, params, prepare=True)
    return await (cursor.fetchone() if one else cursor.fetchall())


class _Stale(Exception):
    """A pooled connection failed: the server may have dropped it (restart) since its last use."""


def _discard(conn: Any) -> None:
    if conn is not None:
        with contextlib.suppress(Exception):
            conn.pgconn.finish()
