"""A fork waits for a SQLite write or checkpoint in flight, so no child inherits SQLite's mutexes locked."""

from __future__ import annotations

import os
import select
import signal
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from conveyor import Settings
from conveyor.stores import fork_guard, open_store
from conveyor.stores.fork_guard import Guard, SQLiteConnection


def _fork_and_time() -> float:
    """Fork a child that leaves at once; seconds until the fork returned in the parent."""
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    took = time.monotonic() - started
    os.waitpid(pid, 0)
    return took


@pytest.mark.parametrize("lock", ["_write_lock", "_checkpoint_lock"])
def test_a_fork_waits_until_the_stores_write_or_checkpoint_is_done(tmp_path: Path, lock: str) -> None:
    store = open_store(Settings(database_url=f"sqlite:///{tmp_path / 'c.db'}").resolved_database_url)
    store.open()
    try:
        guard: Guard = getattr(store, lock)
        held = threading.Event()

        def in_flight() -> None:
            with guard:
                held.set()
                time.sleep(0.3)

        holder = threading.Thread(target=in_flight)
        holder.start()
        held.wait(5)
        took = _fork_and_time()
        holder.join()
        assert took >= 0.2, f"the fork went ahead after {took:.3f}s while the {lock} was held"
        assert not guard.locked()  # given back in the parent after the fork
        assert _fork_and_time() < 0.2  # and nothing is held once the write is done
    finally:
        store.close()


def test_a_fork_made_while_its_own_thread_holds_a_guard_goes_on_after_the_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(fork_guard, "FORK_WAIT", 0.1)
    guard = Guard(rank=0)
    with guard:
        assert _fork_and_time() < 2.0
    assert not guard.locked()


def _wal_survives_the_parents_last_close(tmp_path: Path, factory: type[sqlite3.Connection]) -> bool:
    """A parent thread reads at the fork; the child then opens its own connection and reads.

    While the child's read is open, the parent closes every connection it has. A last close that
    can take the file's exclusive lock checkpoints and deletes the WAL, so the WAL survives only
    if the child's read really holds its lock.
    """
    path = str(tmp_path / "f.db")
    main = sqlite3.connect(path, isolation_level=None, check_same_thread=False, factory=factory)
    main.execute("PRAGMA journal_mode=WAL")
    main.execute("CREATE TABLE t (x)")
    main.execute("INSERT INTO t VALUES (1)")
    reading, release = threading.Event(), threading.Event()

    def reader() -> None:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, factory=factory)
        conn.execute("BEGIN")
        conn.execute("SELECT * FROM t").fetchall()
        reading.set()
        release.wait(10)
        conn.execute("COMMIT")
        conn.close()

    thread = threading.Thread(target=reader)
    thread.start()
    reading.wait(10)
    child_reads_r, child_reads_w = os.pipe()
    parent_done_r, parent_done_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            conn = sqlite3.connect(path, isolation_level=None, factory=factory)
            conn.execute("BEGIN")
            conn.execute("SELECT * FROM t").fetchall()
            os.write(child_reads_w, b"r")
            os.read(parent_done_r, 1)
            code = 0
        finally:
            os._exit(code)
    os.read(child_reads_r, 1)
    release.set()
    thread.join()
    main.execute("INSERT INTO t VALUES (2)")
    main.close()
    survived = os.path.exists(path + "-wal")
    os.write(parent_done_w, b"d")
    os.waitpid(pid, 0)
    for fd in (child_reads_r, child_reads_w, parent_done_r, parent_done_w):
        os.close(fd)
    return survived


def test_a_forked_childs_sqlite_connection_holds_real_locks(tmp_path: Path) -> None:
    assert _wal_survives_the_parents_last_close(tmp_path, SQLiteConnection)


def test_without_forgetting_the_inherited_connections_the_childs_read_holds_no_lock(tmp_path: Path) -> None:
    """The hazard itself, so that the test above keeps meaning something if SQLite changes."""
    assert not _wal_survives_the_parents_last_close(tmp_path, sqlite3.Connection)


def test_the_stores_connections_are_forgotten_in_a_child_and_stay_open_in_the_parent(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 's.db'}")
    store.open()
    try:
        assert store.get("none") is None  # a pooled connection of the store now exists
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.write(w, bytes([min(fork_guard.forget_inherited(), 255), fork_guard.forget_inherited()]))
            os._exit(0)
        closed, again = os.read(r, 2)
        os.waitpid(pid, 0)
        os.close(r)
        os.close(w)
        assert closed >= 1
        assert again == 0  # once per process
        assert store.get("none") is None  # the parent's connections are untouched
    finally:
        store.close()


def test_a_fork_waits_for_a_read_in_another_thread_and_readers_wait_for_the_fork(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'r.db'}")
    store.open()
    engine = store.engine
    assert engine is not None
    try:
        reading, took = threading.Event(), []

        def slow_read() -> None:
            with engine.connect() as conn:
                reading.set()
                time.sleep(0.3)
                conn.exec_driver_sql("SELECT 1").fetchall()

        reader = threading.Thread(target=slow_read)
        reader.start()
        reading.wait(5)
        took.append(_fork_and_time())
        reader.join()
        assert took[0] >= 0.2, f"the fork went ahead after {took[0]:.3f}s during a read"
        assert fork_guard.IN_USE.holders == 0
    finally:
        store.close()


def test_no_use_of_a_sqlite_store_leaves_the_in_use_guard_held(tmp_path: Path) -> None:
    """A count that drifted up would make every later fork wait ``FORK_WAIT``."""
    import sqlalchemy as sa

    from conveyor.records import TaskRecord
    from conveyor.stores.base import DuplicateTask, TaskQuery

    before = fork_guard.IN_USE.holders
    store = open_store(f"sqlite:///{tmp_path / 'd.db'}")
    store.open()
    engine = store.engine
    assert engine is not None
    store.insert([TaskRecord(id="t1", type="t.x", tenant="a")])  # the writer's own connection, detached
    assert store.get("t1") is not None
    assert store.get_many(["t1"])
    assert store.events("t1") == []
    store.query(TaskQuery(tenant="a"))
    with pytest.raises(sa.exc.OperationalError), engine.connect() as conn:
        conn.exec_driver_sql("SELECT * FROM no_such_table")
    with pytest.raises(DuplicateTask):
        store.insert([TaskRecord(id="t1", type="t.x", tenant="a")])
    with engine.connect() as conn:
        conn.invalidate()
    store.close()
    assert fork_guard.IN_USE.holders == before
    assert _fork_and_time() < 0.2


def test_an_inline_sqlite_read_that_fails_is_a_store_error_and_gives_the_guard_back(tmp_path: Path) -> None:
    """The reads made on the event loop (``aget``, ``aevents``) answer a SQLite failure as the store's 503
    error, and a failed statement leaves no holder behind (every later fork would wait for it)."""
    import asyncio

    from conveyor.errors import StoreError
    from conveyor.records import TaskRecord
    from conveyor.stores.sql import SqlStore

    before = fork_guard.IN_USE.holders
    path = tmp_path / "e.db"
    store = open_store(f"sqlite:///{path}")
    store.open()
    try:
        store.insert([TaskRecord(id="t1", type="t.x", tenant="a")])
        assert isinstance(store, SqlStore)
        assert store.reads_inline
        assert asyncio.run(store.aevents("t1")) == []
        assert asyncio.run(store.aget("t1")) is not None
        with sqlite3.connect(path) as other:
            other.execute("DROP TABLE conveyor_task_events")
            other.execute("DROP TABLE conveyor_tasks")
        with pytest.raises(StoreError, match="database unavailable"):
            asyncio.run(store.aevents("t1"))
        with pytest.raises(StoreError, match="database unavailable"):
            asyncio.run(store.aget("t1"))
        assert fork_guard.IN_USE.holders == before
    finally:
        store.close()


def test_a_connection_being_made_in_another_thread_at_the_fork_does_not_block_the_childs_first() -> None:
    """The registry's lock, copied held by the fork, is made anew in the child."""
    fork_guard._connections_lock.acquire()  # as a thread inside SQLiteConnection() at the fork would hold it
    try:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                sqlite3.connect(":memory:", factory=SQLiteConnection).close()
                os.write(w, b"k")
                code = 0
            finally:
                os._exit(code)
    finally:
        fork_guard._connections_lock.release()
    ready, _, _ = select.select([r], [], [], 10)
    if not ready:
        os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    os.close(r)
    os.close(w)
    assert ready, "the child hung making its first SQLite connection"
