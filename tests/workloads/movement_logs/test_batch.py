"""The batch writer on both queues and both databases: exactly once, whatever dies in between."""

from __future__ import annotations

import json
import time

import pytest
import sqlalchemy as sa

from conveyor.workloads.movement_logs import db
from conveyor.workloads.movement_logs.batch import run_batch, run_batches
from conveyor.workloads.movement_logs.queue import RedisLogQueue, SqlLogQueue
from conveyor.workloads.movement_logs.tables import batches_table, logs_table
from tests.workloads.movement_logs.conftest import SEED_BODY, item, redis_url


@pytest.fixture(params=["sql-queue", pytest.param("redis-queue", marks=pytest.mark.redis)])
def queue(request: pytest.FixtureRequest, engine: sa.Engine) -> RedisLogQueue | SqlLogQueue:
    if request.param == "sql-queue":
        return SqlLogQueue(engine)
    return RedisLogQueue(redis_url(), lease_seconds=30)


def stored_ids(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(logs_table.c.event_id)).scalars())


def test_every_queued_log_is_stored_once_and_a_rerun_adds_nothing(
    engine: sa.Engine, queue: RedisLogQueue | SqlLogQueue
) -> None:
    """2,500 logs in batches of 1,000: three batches, the table holds each id once, the queue is empty."""
    items = [item(i) for i in range(2500)]
    assert queue.push(items, time.time()) == 2500
    result = run_batches(engine, queue, max_items=1000, max_batches=10)
    assert (result.batches, result.moved, result.duplicates, result.invalid) == (3, 2500, 0, 0)
    ids = stored_ids(engine)
    assert sorted(ids) == sorted(json.loads(i)["event_id"] for i in items)
    assert queue.length() == 0
    assert queue.processing() == 0
    again = run_batches(engine, queue, max_items=1000, max_batches=10)
    assert again.batches == 0
    assert db.count_logs(engine) == 2500
    history = db.batch_history(engine)
    assert [h["moved"] for h in history]
    assert sum(h["moved"] for h in history) == 2500


def test_a_stored_log_keeps_every_field_of_the_seed_body(engine: sa.Engine, queue: RedisLogQueue | SqlLogQueue) -> None:
    """user_id, track_id, bbox (as integers), state and store come back as they were sent."""
    queue.push([item(0, **SEED_BODY)], time.time())
    run_batch(engine, queue, max_items=10)
    total, rows = db.list_logs(engine, db.LogFilter(tenant="local"), limit=10, offset=0)
    assert total == 1
    row = rows[0]
    assert (row.user_id, row.track_id, row.bbox, row.state, row.store) == (
        "USER123",
        1,
        [100, 100, 200, 200],
        "walking",
        "Store A",
    )


def test_a_log_sent_twice_with_its_own_event_id_is_stored_once(
    engine: sa.Engine, queue: RedisLogQueue | SqlLogQueue
) -> None:
    """A client retrying with the same event_id: the second copy counts as a duplicate."""
    queue.push([item(1, event_id="cam-7:42"), item(1, event_id="cam-7:42")], time.time())
    result = run_batch(engine, queue, max_items=10)
    assert (result.moved, result.duplicates) == (1, 1)
    assert stored_ids(engine) == ["cam-7:42"]


def test_a_retry_arriving_after_its_first_copy_was_stored_counts_as_a_duplicate(
    engine: sa.Engine, queue: RedisLogQueue | SqlLogQueue
) -> None:
    """A fresh batch holding an id stored by an earlier batch: the plain COPY is refused, the careful write skips it."""
    queue.push([item(1, event_id="cam-7:42")], time.time())
    assert run_batch(engine, queue, max_items=10).moved == 1
    queue.push([item(2), item(1, event_id="cam-7:42"), item(3)], time.time())
    result = run_batch(engine, queue, max_items=10)
    assert (result.moved, result.duplicates, result.invalid) == (2, 1, 0)
    assert sorted(stored_ids(engine)).count("cam-7:42") == 1
    assert len(stored_ids(engine)) == 3
    assert queue.length() == 0


@pytest.mark.redis
def test_a_batch_mixing_hand_pushed_items_and_text_to_escape_stores_every_field_intact(
    engine: sa.Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL's COPY path: tabs, backslashes, non-ASCII text survive; a hand-pushed body is checked, stored."""
    queue = RedisLogQueue(redis_url())
    odd = "Tab\there \\N back\\slash, newline\n and é ✓"
    queue.push([item(1, store=odd, user_id="ü"), item(2)], time.time())
    queue.client.lpush("movement_logs", json.dumps({**SEED_BODY, "track_id": 3}))
    result = run_batch(engine, queue, max_items=10)
    assert (result.moved, result.duplicates, result.invalid) == (3, 0, 0)
    _total, rows = db.list_logs(engine, db.LogFilter(tenant="local"), limit=10, offset=0)
    assert sorted((r.track_id, r.user_id, r.store, r.bbox) for r in rows) == [
        (1, "ü", odd, [100, 100, 200, 200]),
        (2, "USER2", "Store A", [100, 100, 200, 200]),
        (3, "USER123", "Store A", [100, 100, 200, 200]),
    ]
    assert not [r for r in caplog.records if "refused the plain COPY" in r.getMessage()], "not the COPY path"


def test_the_same_event_id_of_two_tenants_is_two_logs(engine: sa.Engine, queue: RedisLogQueue | SqlLogQueue) -> None:
    """Ids are unique per tenant: one tenant cannot shadow another's log by guessing its id."""
    queue.push([item(1, "alpha", event_id="e1"), item(1, "beta", event_id="e1")], time.time())
    assert run_batch(engine, queue, max_items=10).moved == 2


@pytest.mark.redis
def test_a_batch_whose_worker_died_before_its_commit_is_taken_over_after_its_lease(engine: sa.Engine) -> None:
    """Claimed, never written (the worker was killed): after the lease the next batch writes them, once."""
    queue = RedisLogQueue(redis_url(), lease_seconds=0.3)
    queue.push([item(i) for i in range(50)], time.time())
    dead = queue.claim("dead-batch", 30)
    assert len(dead.items) == 30
    assert queue.processing() == 30
    assert queue.length() == 20
    first = run_batch(engine, queue, max_items=100)
    assert (first.moved, first.recovered) == (20, 0), "a live lease is left alone"
    deadline = time.monotonic() + 5
    while True:
        result = run_batch(engine, queue, max_items=100)
        if result.batches or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert (result.moved, result.recovered) == (30, 1)
    assert db.count_logs(engine) == 50
    assert queue.processing() == 0
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.sum(batches_table.c.recovered))).scalar_one() == 1


@pytest.mark.redis
def test_a_batch_that_committed_but_never_let_go_is_written_again_without_doubles(engine: sa.Engine) -> None:
    """Killed between the commit and the ack: its items are re-run, every row already exists, none doubles."""
    queue = RedisLogQueue(redis_url(), lease_seconds=0.2)
    queue.push([item(i) for i in range(40)], time.time())
    original_ack = queue.ack
    queue.ack = lambda batch_id: None  # type: ignore[method-assign]  # the worker dies right after commit
    assert run_batch(engine, queue, max_items=100).moved == 40
    queue.ack = original_ack  # type: ignore[method-assign]
    assert queue.processing() == 40
    deadline = time.monotonic() + 5
    while (result := run_batch(engine, queue, max_items=100)).batches == 0:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert (result.moved, result.duplicates, result.recovered) == (0, 40, 1)
    assert db.count_logs(engine) == 40
    assert queue.processing() == 0


def test_a_failed_write_leaves_the_sql_queue_as_it_was(engine: sa.Engine) -> None:
    """The SQL queue's take and the insert are one transaction: an error puts every item back."""
    queue = SqlLogQueue(engine)
    queue.push([item(i) for i in range(10)], time.time())

    def explode(done: int, of: int) -> None:
        raise RuntimeError("worker died mid-batch")

    with pytest.raises(RuntimeError):
        run_batch(engine, queue, max_items=100, chunk_size=5, progress=explode)
    assert queue.length() == 10
    assert db.count_logs(engine) == 0
    assert run_batch(engine, queue, max_items=100).moved == 10


@pytest.mark.redis
def test_hand_pushed_items_are_stored_or_set_aside_never_lost(engine: sa.Engine) -> None:
    """``redis-cli LPUSH movement_logs`` of the seed's body is stored; text that is no log goes to the dead list."""
    queue = RedisLogQueue(redis_url())
    seed = json.dumps({**SEED_BODY, "timestamp": "2026-12-01T10:00:00Z"})
    queue.client.lpush("movement_logs", seed, "not json", json.dumps({**SEED_BODY, "bbox": [5, 5, 1, 1]}))
    result = run_batch(engine, queue, max_items=10)
    assert (result.moved, result.invalid) == (1, 2)
    assert queue.dead_letters() == 2
    assert queue.length() == 0
    assert queue.processing() == 0
    total, rows = db.list_logs(engine, db.LogFilter(tenant="local"), limit=5, offset=0)
    assert total == 1
    assert rows[0].event_id.startswith("raw-")
    assert rows[0].timestamp == 1796119200.0
    # Pushed again by hand (the same text): its id is derived from the text, so it is stored once.
    queue.client.lpush("movement_logs", seed)
    assert run_batch(engine, queue, max_items=10).duplicates == 1


@pytest.mark.redis
def test_a_canonical_looking_item_with_a_wrong_field_is_set_aside(engine: sa.Engine) -> None:
    """Items shaped like the API's own but with a bad field are caught by the database's check too."""
    queue = RedisLogQueue(redis_url())
    good = json.loads(item(1))
    bad_box = json.dumps({**good, "event_id": "b1", "bbox": [3, 3, 1, 1]}, separators=(",", ":"))
    bad_track = json.dumps({**good, "event_id": "b2", "track_id": "x"}, separators=(",", ":"))
    queue.client.lpush("movement_logs", json.dumps(good, separators=(",", ":")), bad_box, bad_track)
    result = run_batch(engine, queue, max_items=10)
    assert (result.moved, result.invalid) == (1, 2)
    assert queue.dead_letters() == 2


def test_clear_drops_what_waits_and_says_how_many(queue: RedisLogQueue | SqlLogQueue) -> None:
    """The clear-queue action: the count dropped, then an empty queue."""
    queue.push([item(i) for i in range(7)], time.time())
    assert queue.clear() == 7
    assert queue.length() == 0
    assert queue.clear() == 0


def test_the_oldest_item_age_is_read_from_the_queue(queue: RedisLogQueue | SqlLogQueue) -> None:
    """queue-status's oldest age: the first item pushed, not the last."""
    assert queue.oldest_enqueued_at() is None
    queue.push([item(1)], time.time())
    first = queue.oldest_enqueued_at()
    queue.push([item(2)], time.time() + 5)
    assert first is not None
    assert queue.oldest_enqueued_at() == pytest.approx(first, abs=0.01)


@pytest.mark.redis
def test_text_postgresql_cannot_store_is_set_aside_not_retried_forever(engine: sa.Engine) -> None:
    """A NUL in a hand-pushed item (plain, or shaped like the API's own) goes to the dead list; the batch goes on."""
    queue = RedisLogQueue(redis_url())
    good = json.loads(item(1))
    shaped = json.dumps({**good, "event_id": "n1", "store": "A\u0000B"}, separators=(",", ":"))
    plain = json.dumps({**SEED_BODY, "store": "A\u0000B"})
    queue.client.lpush("movement_logs", json.dumps(good, separators=(",", ":")), shaped, plain)
    result = run_batch(engine, queue, max_items=10)
    assert (result.moved, result.invalid) == (1, 2)
    assert queue.processing() == 0
