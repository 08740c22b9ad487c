"""Every SQL call has a deadline: a busy pool, a held lock and a racing claimer each end in the store's own answer."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from conveyor import Settings, TaskRecord
from conveyor.errors import StoreError
from conveyor.records import now
from conveyor.stores.deadlines import Deadlines
from conveyor.stores.sql import SqlStore, create_engine_for, tasks_table

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_url(clean_postgres_url: str) -> str:
    return Settings(database_url=clean_postgres_url).resolved_database_url


def open_sql(url: str, deadlines: Deadlines, **pool: int) -> SqlStore:
    store = SqlStore(url, engine=create_engine_for(url, deadlines, **pool), deadlines=deadlines)
    store.open()
    return store


@pytest.fixture
def stores() -> Iterator[list[SqlStore]]:
    opened: list[SqlStore] = []
    yield opened
    for s in opened:
        s.close()


def rec(**kw: object) -> TaskRecord:
    base: dict[str, object] = {"id": str(uuid.uuid4()), "type": "t.x", "tenant": "a", "executor": "local"}
    base.update(kw)
    return TaskRecord(**base)  # type: ignore[arg-type]


def test_a_pool_with_no_free_connection_answers_store_unavailable_not_a_pool_timeout(
    pg_url: str, stores: list[SqlStore]
) -> None:
    store = open_sql(pg_url, Deadlines(pool=0.3), pool_size=1, max_overflow=0)
    stores.append(store)
    # The pool's only connection, held; a timeline read queues for it (a status read has an engine of its own).
    with store.engine.connect(), pytest.raises(StoreError) as caught:
        store.events("nothing")
    assert caught.value.status_code == 503
    assert caught.value.details == {"dependency": "database"}
    assert "no connection free" in caught.value.message


def test_a_write_waiting_for_a_locked_row_gives_up_within_its_deadline_instead_of_waiting(
    pg_url: str, stores: list[SqlStore]
) -> None:
    store = open_sql(pg_url, Deadlines(lock=0.5, statement=2.0))
    stores.append(store)
    r = rec()
    store.insert([r])
    locked, release = threading.Event(), threading.Event()

    def hold_the_row() -> None:
        locker = create_engine_for(pg_url)
        with locker.begin() as conn:
            conn.execute(sa.select(tasks_table.c.id).where(tasks_table.c.id == r.id).with_for_update())
            locked.set()
            release.wait(10)  # then let go: a store without the timeout gets its write through, and fails the test
        locker.dispose()

    holder = threading.Thread(target=hold_the_row)
    holder.start()
    try:
        assert locked.wait(10)
        with pytest.raises(StoreError):
            store.request_cancel(r.id)
    finally:
        release.set()
        holder.join(15)


def test_two_claimers_of_the_same_lapsed_tasks_get_each_task_once(pg_url: str, stores: list[SqlStore]) -> None:
    """Two replicas recovering at once: both saw the lapsed leases, each task goes to exactly one of them."""
    first, second = open_sql(pg_url, Deadlines()), open_sql(pg_url, Deadlines())
    stores.extend([first, second])
    t = now()
    records = [rec(worker="gone", lease_expires_at=t - 1) for _ in range(20)]
    first.insert(records)
    ids = [r.id for r in records]
    # Hold the rows so that both claims are waiting on them when they are let go.
    locker = create_engine_for(pg_url)
    got: dict[str, list[str]] = {}

    def claim(store: SqlStore, name: str) -> None:
        got[name] = [r.id for r in store.claim(ids, name, now() + 30, at=t)]

    try:
        with locker.begin() as conn:
            conn.execute(sa.select(tasks_table.c.id).where(tasks_table.c.id.in_(ids)).with_for_update())
            claimers = [threading.Thread(target=claim, args=(s, n)) for s, n in ((first, "r1"), (second, "r2"))]
            for c in claimers:
                c.start()
            time.sleep(0.5)
    finally:
        locker.dispose()
    for c in claimers:
        c.join(10)
    assert sorted(got["r1"] + got["r2"]) == sorted(ids)
    assert not set(got["r1"]) & set(got["r2"])
