"""PostgreSQL reads go without a ping before each; a connection the server dropped costs a reader nothing."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from conveyor.errors import StoreError
from conveyor.records import TaskRecord, now
from conveyor.stores import sql
from conveyor.stores.sql import SqlStore
from tests.faults.services import PrivatePostgres


def _record(task_id: str) -> TaskRecord:
    t = now()
    return TaskRecord(
        id=task_id, type="system.ping", queue="default", tenant="a", params={}, created_at=t, updated_at=t
    )


@pytest.fixture
def pg() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres().init()
    server.start()
    yield server
    server.remove()


def test_a_read_after_the_server_restarted_is_answered_on_a_fresh_connection(pg: PrivatePostgres) -> None:
    """The pooled read connections all died with the server; the first read after it is back still answers."""
    store = SqlStore(pg.url)
    store.open()
    try:
        store.insert([_record("t-1")])
        for _ in range(3):
            assert store.get("t-1") is not None  # the read pool holds a live connection now
        pg.stop()
        pg.start()
        started = time.monotonic()
        record = store.get("t-1")
        assert record is not None
        assert record.id == "t-1"
        assert time.monotonic() - started < 5
    finally:
        store.close()


def test_without_the_second_try_that_read_would_have_failed(
    pg: PrivatePostgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the retry is for: with no time allowed for it, the first read after a restart is an outage."""
    monkeypatch.setattr(sql, "STALE_CONNECTION_FAILS_WITHIN", -1.0)
    store = SqlStore(pg.url)
    store.open()
    try:
        store.insert([_record("t-1")])
        assert store.get("t-1") is not None
        pg.stop()
        pg.start()
        with pytest.raises(StoreError, match="database unavailable"):
            store.get("t-1")
        assert store.get("t-1") is not None  # and the pool has replaced the connection
    finally:
        store.close()


def test_a_read_from_the_event_loop_after_the_server_restarted_is_answered_too(pg: PrivatePostgres) -> None:
    """The same for the reads status polls make on the event loop (their own asyncio connections)."""
    import asyncio

    store = SqlStore(pg.url)
    store.open()
    try:
        store.insert([_record("t-1")])

        async def restart_between_reads() -> TaskRecord | None:
            assert await store.aget("t-1") is not None  # an idle asyncio connection is kept now
            await asyncio.to_thread(pg.stop)
            await asyncio.to_thread(pg.start)
            return await store.aget("t-1")

        record = asyncio.run(restart_between_reads())
        assert record is not None
        assert record.id == "t-1"
    finally:
        store.close()
