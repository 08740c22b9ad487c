"""The Redis store's filtered list reads only its page, and indexes records written before the index existed."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from conveyor import Status, TaskQuery, TaskRecord
from conveyor.records import now
from conveyor.stores.redis import RedisStore

pytestmark = pytest.mark.redis


@pytest.fixture
def store() -> Iterator[RedisStore]:
    from tests.conftest import REDIS_URL, require_redis

    require_redis()
    s = RedisStore(f"{REDIS_URL}/15", prefix=f"conveyor-test-{uuid.uuid4().hex[:8]}:")
    s.open()
    yield s
    s.flush()
    s.close()


def _records(n: int, rare_every: int) -> list[TaskRecord]:
    t0 = now()
    return [
        TaskRecord(
            id=str(uuid.uuid4()),
            type="t.rare" if i % rare_every == 0 else "t.common",
            tenant="a",
            created_at=t0 + i,
        )
        for i in range(n)
    ]


def _hgetall_calls(store: RedisStore) -> int:
    stats = store.r.info("commandstats")
    return int(stats.get("cmdstat_hgetall", {}).get("calls", 0))


def test_a_filtered_page_reads_only_the_records_of_its_page(store: RedisStore) -> None:
    records = _records(600, rare_every=50)
    store.insert(records)
    before = _hgetall_calls(store)
    page = store.query(TaskQuery(tenant="a", types=["t.rare"], states=[Status.PENDING], limit=5))
    read = _hgetall_calls(store) - before
    assert page.total == 12
    assert [r.id for r in page.items] == [r.id for r in reversed(records) if r.type == "t.rare"][:5]
    assert read <= 5  # not the 600 records of the tenant


def test_records_written_before_the_index_existed_are_indexed_when_the_store_opens(store: RedisStore) -> None:
    records = _records(20, rare_every=4)
    store.insert(records)
    index_keys = list(store.r.scan_iter(match=store.prefix + "ix*"))
    store.r.unlink(*index_keys)  # as a database written by the previous version
    again = RedisStore(store.url, prefix=store.prefix)
    again.open()
    try:
        page = again.query(TaskQuery(tenant="a", types=["t.rare"]))
        assert page.total == 5
    finally:
        again.close()
