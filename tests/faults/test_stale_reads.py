"""PostgreSQL reads go without a ping before each; a connection the server dropped costs a reader nothing.

Each test runs its own PostgreSQL server (tests/faults/services.py) and restarts it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from conveyor.errors import StoreError
from conveyor.records import TaskRecord, now
from conveyor.stores import sql
from conveyor.stores.deadlines import Deadlines
from conveyor.stores.pg_reads import AsyncReads
from conveyor.stores.sql import SqlStore
from tests.faults.services import PrivatePostgres


@pytest.fixture
def pg() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres().init()
    server.start()
    yield server
    server.remove()


@pytest.fixture
def store(pg: PrivatePostgres) -> Iterator[SqlStore]:
    """A store on the private server, holding task ``t-1``."""
    s = SqlStore(pg.url)
    s.open()
    t = now()
    s.insert([TaskRecord(id="t-1", type="system.ping", queue="default", tenant="a", created_at=t, updated_at=t)])
    yield s
    s.close()


def restart(pg: PrivatePostgres) -> None:
    pg.stop()
    pg.start()


def test_a_read_after_the_server_restarted_is_answered_on_a_fresh_connection(
    pg: PrivatePostgres, store: SqlStore
) -> None:
    """The pooled read connections all died with the server; the first read after it is back still answers."""
    for _ in range(3):
        assert store.get("t-1") is not None  # the read pool holds a live connection now
    restart(pg)
    started = time.monotonic()
    record = store.get("t-1")
    assert record is not None
    assert record.id == "t-1"
    assert time.monotonic() - started < 5


def test_without_the_second_try_that_read_would_have_failed(
    pg: PrivatePostgres, store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the retry is for: with no time allowed for it, the first read after a restart is an outage."""
    monkeypatch.setattr(sql, "STALE_CONNECTION_FAILS_WITHIN", -1.0)
    assert store.get("t-1") is not None
    restart(pg)
    with pytest.raises(StoreError, match="database unavailable"):
        store.get("t-1")
    assert store.get("t-1") is not None  # and the pool has replaced the connection


def test_a_read_from_the_event_loop_after_the_server_restarted_is_answered_too(
    pg: PrivatePostgres, store: SqlStore
) -> None:
    """The same for the reads status polls make on the event loop (their own asyncio connections),
    with several idle connections left from before the restart."""

    async def restart_between_reads() -> TaskRecord | None:
        assert all(await asyncio.gather(*(store.aget("t-1") for _ in range(4))))  # four idle now
        await asyncio.to_thread(restart, pg)
        return await store.aget("t-1")

    record = asyncio.run(restart_between_reads())
    assert record is not None
    assert record.id == "t-1"


def test_event_loop_reads_past_their_connections_answer_that_none_is_free(pg: PrivatePostgres) -> None:
    """One connection, held by a slow read: the next read gives up after the pool deadline."""
    reads = AsyncReads(pg.url, Deadlines(pool=0.3), size=1)

    async def two_reads() -> BaseException | None:
        slow = asyncio.ensure_future(reads.fetch_one("SELECT pg_sleep(1.5)", ()))
        await asyncio.sleep(0.2)
        try:
            await reads.fetch_one("SELECT 1", ())
        except StoreError as e:
            return e
        finally:
            await slow
        return None

    try:
        refused = asyncio.run(two_reads())
    finally:
        reads.close()
    assert isinstance(refused, StoreError)
    assert "no connection free" in refused.message


def test_a_query_the_server_times_out_is_an_outage_not_a_stale_connection_retried(pg: PrivatePostgres) -> None:
    """The server's statement_timeout cancels the query; the connection lives on and the read is not made twice."""
    reads = AsyncReads(pg.url, Deadlines(statement=0.4))
    seconds = 0.0

    async def read_twice() -> StoreError:
        nonlocal seconds
        await reads.fetch_one("SELECT 1", ())  # an idle connection to reuse
        started = time.monotonic()
        try:
            await reads.fetch_one("SELECT pg_sleep(3)", ())
        except StoreError as e:
            seconds = time.monotonic() - started
            assert await reads.fetch_one("SELECT 1", ()) == (1,)
            return e
        raise AssertionError("the sleep was not cut by statement_timeout")

    try:
        error = asyncio.run(read_twice())
    finally:
        reads.close()
    assert "database unavailable" in error.message
    assert seconds < 0.7  # one statement_timeout of 0.4 s, not two
